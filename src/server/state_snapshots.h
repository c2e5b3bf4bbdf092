// Which cached KV pages carry a recurrent-state snapshot, for the prefix cache of a hybrid model
// (Gated DeltaNet layers beside attention layers). Its KV pages alone cannot resume a sequence:
// the recurrent state after a prefix is not in any page, and it cannot be cut back from a longer
// one. So while prompts are prefilled the server copies a sequence's state into one of the
// session's planned snapshot slots (runtime::Session::save_snapshot) when it stands at a page
// boundary, and ties the slot to the cached page that ends that prefix: the page's chained key
// (prefix_cache.h) names the whole prefix, so a page with a snapshot is a point a later request
// can resume from (share the chain, restore the snapshot, prefill the rest).
//
// This is the bookkeeping alone (no copies): page <-> slot, and least-recently-used order for
// when every slot is taken. A snapshot goes with its page when the cache evicts the page; a page
// whose snapshot went is worth nothing to a hybrid unless a longer cached prefix passes through
// it, and the engine evicts it once it is such a leaf.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace keel::server {

class StateSnapshots {
 public:
  StateSnapshots(int32_t n_slots, int32_t n_pages);

  int32_t capacity() const { return static_cast<int32_t>(page_of_slot_.size()); }
  int32_t size() const { return size_; }  // slots holding a snapshot
  // The slot of the snapshot ending at `page`, or -1.
  int32_t slot_of(int32_t page) const { return slot_of_page_[static_cast<size_t>(page)]; }
  void touch(int32_t page);  // used now (a restore, or the same prefix snapshotted again)

  // A slot for a new snapshot ending at `page` (which has none), tied to it and used now: a free
  // slot, else the least recently used one, whose page is returned in `evicted` (-1: none was).
  // -1 when there are no slots at all.
  int32_t take(int32_t page, int32_t& evicted);
  // `page` left the prefix cache: its snapshot, if any, goes.
  void drop(int32_t page);

 private:
  int32_t size_ = 0;
  uint64_t clock_ = 0;
  std::vector<int32_t> slot_of_page_;  // [n_pages] -1: none
  std::vector<int32_t> page_of_slot_;  // [n_slots] -1: free
  std::vector<uint64_t> last_used_;    // [n_slots]
};

}  // namespace keel::server
