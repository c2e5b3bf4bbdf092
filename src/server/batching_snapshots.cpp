// BatchingEngine's part for hybrid models: recurrent-state snapshots tied to cached pages
// (state_snapshots.h). Pure-attention models have no snapshots_ and pass through unchanged.
#include "server/batching_engine.h"

namespace keel::server {
namespace {

// A request that asks another question about the same context shares all of the previous prompt
// but its last question (and the template's turn markers): a snapshot this far before the end of
// each prompt lets it resume within a page or so of where it diverges, rather than at the last
// chunk boundary (a whole chunk, up to thousands of tokens, to recompute).
constexpr int64_t kFollowUpTokens = 256;

}  // namespace

int64_t BatchingEngine::snapshot_cut(int64_t n_prompt, int64_t fed) const {
  if (!snapshots_) return 0;
  const int64_t last_page = n_prompt / page_tokens_ * page_tokens_;
  const int64_t follow_up = (n_prompt - kFollowUpTokens) / page_tokens_ * page_tokens_;
  return fed < follow_up ? follow_up : last_page;
}

bool BatchingEngine::snapshot_prefix(int32_t seq, std::span<const int32_t> tokens) {
  const auto n_pages = static_cast<int64_t>(tokens.size()) / page_tokens_;
  prefix_cache_->insert(tokens, session_.pages_of(seq), [this](int32_t page) { session_.retain_page(page); });
  // The page that ends the prefix in the cache: this sequence's own, or the same prefix's page
  // cached before by another request (whose state there equals this one's).
  chain_.clear();
  prefix_cache_->lookup(tokens, n_pages, chain_);
  if (static_cast<int64_t>(chain_.size()) != n_pages) return false;  // a key collision: not cacheable
  const int32_t page = chain_.back();
  if (snapshots_->slot_of(page) >= 0) {  // the same prefix was snapshotted before
    snapshots_->touch(page);
    return true;
  }
  int32_t evicted = -1;
  const int32_t slot = snapshots_->take(page, evicted);
  if (slot < 0) return false;
  session_.save_snapshot(seq, slot);
  ++stats_.state_snapshots_taken;
  if (evicted >= 0) {
    ++stats_.state_snapshots_evicted;
    prune_unsnapshotted();  // the evicted snapshot's pages may resume nothing now
  }
  return true;
}

void BatchingEngine::trim_to_snapshot(std::vector<int32_t>& chain) {
  while (!chain.empty() && snapshots_->slot_of(chain.back()) < 0) chain.pop_back();
}

int32_t BatchingEngine::snapshot_of(int32_t page) {
  snapshots_->touch(page);
  return snapshots_->slot_of(page);
}

void BatchingEngine::forget_page(int32_t page) {
  if (snapshots_) snapshots_->drop(page);
  session_.release_page(page);
  ++stats_.prefix_cache_evicted_pages;
}

void BatchingEngine::prune_unsnapshotted() {
  // Leaves only: a page on the way to a longer snapshotted prefix is still needed. Each eviction
  // may make its parent such a leaf, so this runs until none is left.
  if (!snapshots_) return;
  for (;;) {
    const int32_t page =
        prefix_cache_->evict([this](int32_t p) { return page_in_use(p) || snapshots_->slot_of(p) >= 0; });
    if (page < 0) return;
    forget_page(page);
  }
}

}  // namespace keel::server
