#include "tokenizer/piece_index.h"

#include <cstring>

namespace keel::tokenizer {

uint64_t hash_bytes(std::string_view s) {
  // 8 bytes at a time, multiply-xorshift mixing; the tail is folded in with its length.
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ULL;
  uint64_t h = 0x243F6A8885A308D3ULL ^ (s.size() * kMul);
  const char* p = s.data();
  size_t n = s.size();
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * kMul;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, p, n);
  h = (h ^ tail) * kMul;
  h ^= h >> 32;
  h *= 0xD6E8FEB86659FD93ULL;
  h ^= h >> 32;
  return h;
}

size_t PieceIndex::probe(std::string_view key, uint64_t hash) const {
  const size_t mask = slots_.size() - 1;
  const auto tag = static_cast<uint32_t>(hash);
  for (size_t i = (hash >> 32) & mask;; i = (i + 1) & mask) {
    const int32_t e = slots_[i];
    if (e < 0) return i;
    if (slot_tag_[i] == tag && key_at(e) == key) return i;
  }
}

void PieceIndex::grow() {
  const size_t new_size = slots_.empty() ? 64 : slots_.size() * 2;
  slots_.assign(new_size, -1);
  slot_tag_.assign(new_size, 0);
  for (int32_t e = 0; e < static_cast<int32_t>(values_.size()); ++e) {
    const uint64_t h = hash_bytes(key_at(e));
    const size_t i = probe(key_at(e), h);
    slots_[i] = e;
    slot_tag_[i] = static_cast<uint32_t>(h);
  }
}

void PieceIndex::insert_or_assign(std::string_view key, int32_t value) {
  if ((values_.size() + 1) * 2 > slots_.size()) grow();
  const uint64_t h = hash_bytes(key);
  const size_t i = probe(key, h);
  if (slots_[i] >= 0) {
    values_[slots_[i]] = value;
    return;
  }
  const auto e = static_cast<int32_t>(values_.size());
  key_offset_.push_back(static_cast<uint32_t>(arena_.size()));
  key_length_.push_back(static_cast<uint32_t>(key.size()));
  arena_.append(key);
  values_.push_back(value);
  slots_[i] = e;
  slot_tag_[i] = static_cast<uint32_t>(h);
}

int32_t PieceIndex::find(std::string_view key) const {
  if (slots_.empty()) return -1;
  const size_t i = probe(key, hash_bytes(key));
  return slots_[i] < 0 ? -1 : values_[slots_[i]];
}

void MergeTable::grow() {
  std::vector<Slot> old = std::move(slots_);
  const size_t new_size = old.empty() ? 64 : old.size() * 2;
  slots_.assign(new_size, Slot{});
  mask_ = new_size - 1;
  for (const Slot& s : old) {
    if (s.key == kEmpty) continue;
    size_t i = mix(s.key) & mask_;
    while (slots_[i].key != kEmpty) i = (i + 1) & mask_;
    slots_[i] = s;
  }
}

void MergeTable::insert_if_absent(int32_t left, int32_t right, Merge merge) {
  if ((count_ + 1) * 2 > slots_.size()) grow();
  const uint64_t key = pack(left, right);
  size_t i = mix(key) & mask_;
  while (slots_[i].key != kEmpty) {
    if (slots_[i].key == key) return;
    i = (i + 1) & mask_;
  }
  slots_[i] = Slot{key, merge};
  ++count_;
}

}  // namespace keel::tokenizer
