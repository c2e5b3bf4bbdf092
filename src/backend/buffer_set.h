// Named buffers of one session, allocated once by a backend from the plan (activations, state).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "backend/backend.h"

namespace keel::backend {

class BufferSet {
 public:
  // Allocates one buffer per (name, bytes) on `backend`; names must be unique.
  void add(Backend& backend, std::string name, size_t bytes);
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
    Memory data;
  };
  std::vector<Entry> entries_;
  size_t total_ = 0;
};

}  // namespace keel::backend
