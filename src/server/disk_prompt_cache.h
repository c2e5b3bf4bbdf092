// `keel serve --prompt-cache-dir DIR`: whole prefixes spilled to disk as prompt-cache state files
// (runtime/state_file.cpp, the format `keel run --prompt-cache` uses), reloaded when a request
// starts with more of one than the in-memory prefix cache holds. It outlives the process and, for
// hybrid models, is the only reuse there is (their recurrent state is in the file, not in pages).
//
// The index (each file's tokens) lives in memory, read from the files' headers at start. Files
// are written atomically (temp + fsync + rename), named by a hash of their tokens; a file that
// fails to read or load is logged, deleted and never used. The total size stays under max_bytes:
// the least recently used files go first; a file whose tokens another one begins with is
// superseded and removed (attention-only models, where a longer file restores any shorter prefix).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "runtime/session.h"

namespace keel::server {

class DiskPromptCache {
 public:
  DiskPromptCache(std::string dir, uint64_t max_bytes);  // creates dir when missing

  struct Match {
    std::string path;
    int64_t tokens = 0;  // prompt tokens the file restores (0: no match)
  };
  // The file that restores the longest prefix of `tokens`, at most max_tokens of them.
  Match best(std::span<const int32_t> tokens, int64_t max_tokens);
  // Whether a file restores all of `tokens` (saving them would add nothing).
  bool covers(std::span<const int32_t> tokens) const;
  // Saves sequence `seq` (holding `tokens`, the last one's logits `last_logits`) as a file, then
  // keeps the total under max_bytes. Throws keel::Error (nothing left behind) when writing fails.
  void save(runtime::Session& session, int32_t seq, std::span<const int32_t> tokens, const float* last_logits);
  // A file that would not load: dropped from the index, and deleted when corrupt (one made for
  // another model or page size stays on disk, unused).
  void forget(const std::string& path, bool delete_file);

  size_t files() const { return entries_.size(); }
  uint64_t bytes() const;

 private:
  struct Entry {
    std::string path;
    runtime::StateFileInfo info;
    uint64_t last_used = 0;
  };
  void shrink_to(uint64_t max_bytes, const std::string& keep);

  std::string dir_;
  uint64_t max_bytes_;
  uint64_t clock_ = 0;
  std::vector<Entry> entries_;
};

}  // namespace keel::server
