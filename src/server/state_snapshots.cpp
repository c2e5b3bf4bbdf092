#include "server/state_snapshots.h"

namespace keel::server {

StateSnapshots::StateSnapshots(int32_t n_slots, int32_t n_pages)
    : slot_of_page_(static_cast<size_t>(n_pages), -1),
      page_of_slot_(static_cast<size_t>(n_slots), -1),
      last_used_(static_cast<size_t>(n_slots), 0) {}

void StateSnapshots::touch(int32_t page) {
  if (const int32_t slot = slot_of(page); slot >= 0) last_used_[static_cast<size_t>(slot)] = ++clock_;
}

int32_t StateSnapshots::take(int32_t page, int32_t& evicted) {
  evicted = -1;
  int32_t slot = -1;
  for (int32_t s = 0; s < capacity(); ++s) {
    const auto at = static_cast<size_t>(s);
    if (page_of_slot_[at] < 0) {
      slot = s;
      break;
    }
    if (slot < 0 || last_used_[at] < last_used_[static_cast<size_t>(slot)]) slot = s;
  }
  if (slot < 0) return -1;
  const auto at = static_cast<size_t>(slot);
  if (page_of_slot_[at] >= 0) {
    evicted = page_of_slot_[at];
    slot_of_page_[static_cast<size_t>(evicted)] = -1;
  } else {
    ++size_;
  }
  page_of_slot_[at] = page;
  slot_of_page_[static_cast<size_t>(page)] = slot;
  last_used_[at] = ++clock_;
  return slot;
}

void StateSnapshots::drop(int32_t page) {
  const int32_t slot = slot_of(page);
  if (slot < 0) return;
  page_of_slot_[static_cast<size_t>(slot)] = -1;
  slot_of_page_[static_cast<size_t>(page)] = -1;
  --size_;
}

}  // namespace keel::server
