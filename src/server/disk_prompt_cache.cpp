#include "server/disk_prompt_cache.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "keel/error.h"

namespace keel::server {
namespace {

constexpr const char* kExtension = ".kcache";

int64_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b) {
  const size_t n = std::min(a.size(), b.size());
  return static_cast<int64_t>(std::mismatch(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(n), b.begin()).first -
                              a.begin());
}

void log_line(const std::string& text) { std::fprintf(stderr, "keel serve: prompt cache: %s\n", text.c_str()); }

}  // namespace

DiskPromptCache::DiskPromptCache(std::string dir, uint64_t max_bytes) : dir_(std::move(dir)), max_bytes_(max_bytes) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (!fs::is_directory(dir_)) throw Error("--prompt-cache-dir " + dir_ + " is not a directory" +
                                           (ec ? " (" + ec.message() + ")" : std::string()));
  for (const auto& item : fs::directory_iterator(dir_)) {
    if (!item.is_regular_file() || item.path().extension() != kExtension) continue;
    try {
      entries_.push_back(Entry{item.path().string(), runtime::read_state_file_info(item.path().string()), 0});
    } catch (const Error& e) {
      log_line(std::string("skipped: ") + e.what());
    }
  }
  shrink_to(max_bytes_, "");
}

uint64_t DiskPromptCache::bytes() const {
  uint64_t total = 0;
  for (const Entry& e : entries_) total += e.info.bytes;
  return total;
}

DiskPromptCache::Match DiskPromptCache::best(std::span<const int32_t> tokens, int64_t max_tokens) {
  const auto prompt = tokens.first(static_cast<size_t>(std::clamp<int64_t>(max_tokens, 0, static_cast<int64_t>(tokens.size()))));
  Entry* found = nullptr;
  int64_t best = 0;
  for (Entry& e : entries_) {
    const int64_t common = common_prefix(e.info.tokens, prompt);
    int64_t usable = common;
    if (e.info.recurrent) {  // as Session::load_state: at the saved length or a checkpoint
      const auto saved = static_cast<int64_t>(e.info.tokens.size());
      usable = 0;
      if (common == saved) usable = saved;
      else
        for (int64_t at : e.info.checkpoints)
          if (at <= common && at < static_cast<int64_t>(prompt.size())) usable = at;
    }
    if (usable > best) best = usable, found = &e;
  }
  if (!found) return {};
  found->last_used = ++clock_;
  return Match{found->path, best};
}

bool DiskPromptCache::covers(std::span<const int32_t> tokens) const {
  return std::any_of(entries_.begin(), entries_.end(), [&](const Entry& e) {
    // A recurrent state restores only at its own length: a longer file does not cover these.
    const bool fits = e.info.recurrent ? e.info.tokens.size() == tokens.size() : e.info.tokens.size() >= tokens.size();
    return fits && common_prefix(e.info.tokens, tokens) == static_cast<int64_t>(tokens.size());
  });
}

void DiskPromptCache::save(runtime::Session& session, int32_t seq, std::span<const int32_t> tokens,
                           const float* last_logits) {
  char name[32];
  std::snprintf(name, sizeof name, "%016llx",
                static_cast<unsigned long long>(XXH3_64bits(tokens.data(), tokens.size_bytes())));
  const std::string path = dir_ + "/" + name + kExtension;
  session.save_state(seq, tokens, last_logits, path);
  std::erase_if(entries_, [&](const Entry& e) { return e.path == path; });  // a file of the same name is replaced
  entries_.push_back(Entry{path, runtime::read_state_file_info(path), ++clock_});
  // Superseded: a shorter file of the same tokens (only where any prefix restores from the longer).
  const runtime::StateFileInfo& added = entries_.back().info;
  if (!added.recurrent)
    for (size_t i = 0; i + 1 < entries_.size();) {
      const auto& old = entries_[i].info.tokens;
      if (old.size() < added.tokens.size() && common_prefix(old, added.tokens) == static_cast<int64_t>(old.size())) {
        std::filesystem::remove(entries_[i].path);
        entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        ++i;
      }
    }
  shrink_to(max_bytes_, path);
}

void DiskPromptCache::forget(const std::string& path, bool delete_file) {
  std::error_code ec;
  if (delete_file) std::filesystem::remove(path, ec);
  std::erase_if(entries_, [&](const Entry& e) { return e.path == path; });
}

void DiskPromptCache::shrink_to(uint64_t max_bytes, const std::string& keep) {
  for (uint64_t total = bytes(); total > max_bytes && !entries_.empty();) {
    // The least recently used file, the one just written last (it alone may be over the cap).
    auto victim = std::min_element(entries_.begin(), entries_.end(), [&](const Entry& a, const Entry& b) {
      return std::pair(a.path == keep, a.last_used) < std::pair(b.path == keep, b.last_used);
    });
    total -= victim->info.bytes;
    std::error_code ec;
    std::filesystem::remove(victim->path, ec);
    entries_.erase(victim);
  }
}

}  // namespace keel::server
