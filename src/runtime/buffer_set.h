// The session's owned memory: named, 64-byte aligned buffers allocated once, from the plan.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace keel::runtime {

struct AlignedFree {
  void operator()(void* p) const;
};
using AlignedBytes = std::unique_ptr<uint8_t, AlignedFree>;
// Zeroed memory for the planned buffer `name`; when the system cannot provide it, throws
// keel::Error(refused) naming the buffer. Fault injection for tests: with the environment
// variable KEEL_FAIL_ALLOC set to a buffer's name (or to "*": every buffer), that allocation
// fails as if memory were exhausted.
AlignedBytes allocate_aligned(size_t bytes, std::string_view name = "");

class BufferSet {
 public:
  // Allocates one buffer per (name, bytes); names must be unique.
  void add(std::string name, size_t bytes);
  bool contains(std::string_view name) const;
  // The buffer `name`, which must hold at least `min_bytes`; an error names the shortfall
  // (it means the plan and the forward pass disagree: a bug, caught at session start).
  uint8_t* get(std::string_view name, size_t min_bytes = 0) const;
  template <typename T>
  T* get_as(std::string_view name, size_t min_elems = 0) const {
    return reinterpret_cast<T*>(get(name, min_elems * sizeof(T)));
  }
  size_t total_bytes() const { return total_; }

 private:
  struct Entry {
    std::string name;
    size_t bytes;
    AlignedBytes data;
  };
  std::vector<Entry> entries_;
  size_t total_ = 0;
};

}  // namespace keel::runtime
