#include "server/prefix_cache.h"

#include <xxhash.h>

#include <algorithm>

namespace keel::server {

PrefixCache::PrefixCache(int32_t n_pages, int32_t page_tokens)
    : page_tokens_(page_tokens),
      cached_(static_cast<size_t>(n_pages), 0),
      key_(static_cast<size_t>(n_pages), 0),
      parent_(static_cast<size_t>(n_pages), -1),
      children_(static_cast<size_t>(n_pages), 0),
      last_used_(static_cast<size_t>(n_pages), 0),
      tokens_(static_cast<size_t>(n_pages) * static_cast<size_t>(page_tokens), 0) {
  by_key_.reserve(static_cast<size_t>(n_pages));
}

uint64_t PrefixCache::key_of(uint64_t parent_key, std::span<const int32_t> page) const {
  return XXH3_64bits_withSeed(page.data(), page.size_bytes(), parent_key);
}

bool PrefixCache::same_tokens(int32_t page, std::span<const int32_t> tokens) const {
  return std::equal(tokens.begin(), tokens.end(), tokens_.begin() + int64_t{page} * page_tokens_);
}

void PrefixCache::lookup(std::span<const int32_t> tokens, int64_t max_pages, std::vector<int32_t>& out) {
  const int64_t n = std::min<int64_t>(max_pages, static_cast<int64_t>(tokens.size()) / page_tokens_);
  const uint64_t now = ++clock_;
  uint64_t key = kRootKey;
  int32_t parent = -1;
  for (int64_t i = 0; i < n; ++i) {
    const auto page_tokens = tokens.subspan(static_cast<size_t>(i * page_tokens_), static_cast<size_t>(page_tokens_));
    key = key_of(key, page_tokens);
    const auto it = by_key_.find(key);
    if (it == by_key_.end() || parent_[static_cast<size_t>(it->second)] != parent || !same_tokens(it->second, page_tokens))
      return;
    parent = it->second;
    last_used_[static_cast<size_t>(parent)] = now;
    out.push_back(parent);
  }
}

int64_t PrefixCache::insert(std::span<const int32_t> tokens, std::span<const int32_t> pages,
                            const std::function<void(int32_t)>& keep) {
  const int64_t n = std::min<int64_t>(static_cast<int64_t>(pages.size()),
                                      static_cast<int64_t>(tokens.size()) / page_tokens_);
  const uint64_t now = ++clock_;
  uint64_t key = kRootKey;
  int32_t parent = -1;
  int64_t taken = 0;
  for (int64_t i = 0; i < n; ++i) {
    const auto page_tokens = tokens.subspan(static_cast<size_t>(i * page_tokens_), static_cast<size_t>(page_tokens_));
    key = key_of(key, page_tokens);
    int32_t node = -1;
    if (const auto it = by_key_.find(key); it != by_key_.end()) {
      if (parent_[static_cast<size_t>(it->second)] != parent || !same_tokens(it->second, page_tokens))
        return taken;  // a collision: this prefix cannot be keyed, nor anything after it
      node = it->second;  // the prefix is cached (maybe by this very page, shared earlier)
    } else {
      node = pages[static_cast<size_t>(i)];
      if (cached_[static_cast<size_t>(node)]) return taken;  // cached under another prefix: cannot be
      const auto at = static_cast<size_t>(node);
      cached_[at] = 1;
      key_[at] = key;
      parent_[at] = parent;
      children_[at] = 0;
      std::copy(page_tokens.begin(), page_tokens.end(), tokens_.begin() + int64_t{node} * page_tokens_);
      if (parent >= 0) ++children_[static_cast<size_t>(parent)];
      by_key_.emplace(key, node);
      ++n_cached_;
      ++taken;
      keep(node);
    }
    last_used_[static_cast<size_t>(node)] = now;
    parent = node;
  }
  return taken;
}

int32_t PrefixCache::evict(const std::function<bool(int32_t)>& in_use) {
  int32_t victim = -1;
  for (size_t p = 0; p < cached_.size(); ++p) {
    if (!cached_[p] || children_[p] != 0 || in_use(static_cast<int32_t>(p))) continue;
    if (victim < 0 || last_used_[p] < last_used_[static_cast<size_t>(victim)]) victim = static_cast<int32_t>(p);
  }
  if (victim < 0) return -1;
  const auto at = static_cast<size_t>(victim);
  by_key_.erase(key_[at]);
  if (parent_[at] >= 0) --children_[static_cast<size_t>(parent_[at])];
  cached_[at] = 0;
  parent_[at] = -1;
  --n_cached_;
  return victim;
}

}  // namespace keel::server
