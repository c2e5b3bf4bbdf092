// Hash tables built once at load and only read afterwards: text -> id (vocabulary pieces,
// added to by nothing after construction) and (left id, right id) -> merge (BPE ranks).
// Open addressing with linear probing; both own their storage, so they move cheaply.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace keel::tokenizer {

uint64_t hash_bytes(std::string_view bytes);

class PieceIndex {
 public:
  // Maps key to value; a key inserted twice keeps the later value (as llama.cpp's map does).
  void insert_or_assign(std::string_view key, int32_t value);
  int32_t find(std::string_view key) const;  // -1 when absent
  size_t size() const { return values_.size(); }

 private:
  void grow();
  size_t probe(std::string_view key, uint64_t hash) const;  // slot holding key, or the empty slot
  std::string_view key_at(int32_t entry) const {
    return std::string_view(arena_).substr(key_offset_[entry], key_length_[entry]);
  }
  std::string arena_;              // all keys, back to back
  std::vector<uint32_t> key_offset_, key_length_;
  std::vector<int32_t> values_;    // per entry
  std::vector<int32_t> slots_;     // entry index per slot, -1 when empty
  std::vector<uint32_t> slot_tag_; // low 32 bits of the key hash, to skip most compares
};

struct Merge {
  int32_t rank = -1;    // lower merges first
  int32_t result = -1;  // symbol id of the merged text
};

class MergeTable {
 public:
  void insert_if_absent(int32_t left, int32_t right, Merge merge);  // the first (lowest) rank wins
  Merge find(int32_t left, int32_t right) const {
    if (slots_.empty()) return {};
    const uint64_t key = pack(left, right);
    for (size_t i = mix(key) & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == key) return s.merge;
      if (s.key == kEmpty) return {};
    }
  }
  size_t size() const { return count_; }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  struct Slot {
    uint64_t key = kEmpty;
    Merge merge;
  };
  static uint64_t pack(int32_t l, int32_t r) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
  }
  static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
  }
  void grow();
  std::vector<Slot> slots_;
  uint64_t mask_ = 0;
  size_t count_ = 0;
};

}  // namespace keel::tokenizer
