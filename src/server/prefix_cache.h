// The server's in-memory prefix cache: full KV pages of finished (or preempted, or cancelled)
// requests, kept by the token prefix they hold, so a later request that starts with the same
// tokens attaches them to its sequence copy-free and prefills only the rest (vLLM's automatic
// prefix caching).
//
// A cached page is keyed by a chained hash of the whole prefix up to and including it:
// key(page i) = XXH3-64(tokens of page i, seed = key(page i-1)). The key only finds a candidate;
// a match also requires the candidate's own tokens and its parent to be the ones already matched,
// so a hash collision is a miss, never a wrong page (by induction, a matched chain holds exactly
// the prompt's tokens).
//
// The cache is a forest: a node per cached page, its parent the page before it. Nodes live in
// arrays indexed by page id (a page is cached at most once), sized when the server starts.
// Eviction takes the least recently used leaf that no sequence holds; a sequence that holds a
// page holds all its ancestors, so every evictable node's descendants are evictable too.
//
// The cache does not own pages: the caller keeps a reference in the session for every page the
// cache takes (insert's `keep`) and drops it for every page evicted.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <unordered_map>
#include <vector>

namespace keel::server {

class PrefixCache {
 public:
  PrefixCache(int32_t n_pages, int32_t page_tokens);

  int32_t page_tokens() const { return page_tokens_; }
  int32_t size() const { return n_cached_; }  // pages cached
  bool holds(int32_t page) const { return cached_[static_cast<size_t>(page)] != 0; }

  // Appends to `out` the longest chain of cached pages that `tokens` begins with, at most
  // max_pages of them, and marks them used now.
  void lookup(std::span<const int32_t> tokens, int64_t max_pages, std::vector<int32_t>& out);

  // Offers the full pages of a sequence that holds `tokens` in `pages` (its page-table row).
  // Pages whose prefix is cached already (maybe as another page) are skipped; keep(page) is
  // called for each page the cache takes, whose reference the caller then keeps. Returns the
  // number taken.
  int64_t insert(std::span<const int32_t> tokens, std::span<const int32_t> pages,
                 const std::function<void(int32_t)>& keep);

  // Removes the least recently used leaf for which in_use is false and returns its page (whose
  // reference the caller drops), or -1 when there is none.
  int32_t evict(const std::function<bool(int32_t)>& in_use);

 private:
  static constexpr uint64_t kRootKey = 0x6b65656c70726566ull;  // the seed of the first page's key
  uint64_t key_of(uint64_t parent_key, std::span<const int32_t> page) const;
  bool same_tokens(int32_t page, std::span<const int32_t> tokens) const;

  int32_t page_tokens_;
  int32_t n_cached_ = 0;
  uint64_t clock_ = 0;                     // ticks at each lookup/insert: the LRU order
  std::vector<uint8_t> cached_;            // [n_pages] 1: the page is a node
  std::vector<uint64_t> key_;              // [n_pages]
  std::vector<int32_t> parent_;            // [n_pages] -1: the first page of a prefix
  std::vector<int32_t> children_;          // [n_pages] cached pages that follow this one
  std::vector<uint64_t> last_used_;        // [n_pages]
  std::vector<int32_t> tokens_;            // [n_pages, page_tokens] the page's own tokens
  std::unordered_map<uint64_t, int32_t> by_key_;  // key -> page
};

}  // namespace keel::server
