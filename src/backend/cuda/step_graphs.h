// CUDA graphs for decode steps. A decode step launches hundreds of small kernels (about 600 for
// a 36-layer model); launched one by one, the GPU idles between them. StepGraphs captures a
// step's launches once into a graph and replays that graph for later steps of the same shape.
//
// A step is graphable when every sequence of its call decodes one token. Its key hashes the
// call's shape (sequences, logit rows, page-table width): everything else that changes between
// steps (tokens, positions, page ids) lives in device metadata that the step's first copy
// updates outside the graph. The first step of a key runs eagerly, the second is captured (and
// run), later ones replay. While replaying, the operations launch nothing; their arguments are
// hashed and must equal the captured step's at the end (a difference is an internal error,
// never a silent wrong result). The graph covers the step's launches up to end_batch (or an
// earlier host synchronisation: download, upload); what follows runs eagerly. Launching a replay
// at the step's first operation instead, so the host's walk through the rest overlaps the GPU,
// measured no faster: that walk takes 8.6 us for Qwen3-8B (H100, Q8_0 decode 293.2 / 261.9 /
// 188.8 tok/s at depth 0 / 4096 / 32768 either way).
//
// KEEL_CUDA_GRAPHS=0 turns graphs off; so does KEEL_PROFILE (it times each op with events).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace keel::cuda {

class StepGraphs {
 public:
  explicit StepGraphs(bool enabled);
  ~StepGraphs();
  StepGraphs(const StepGraphs&) = delete;
  StepGraphs& operator=(const StepGraphs&) = delete;

  // At the start of a step, after its metadata copy was queued. key 0: not graphable.
  void begin_step(uint64_t key, cudaStream_t stream);
  // Called by every operation with a hash of its name and arguments: true when the operation
  // must not launch (the step replays a graph).
  bool skip(uint64_t op_hash);
  // Before any host synchronisation: ends a capture (and runs it) or launches the replayed graph.
  void finish(cudaStream_t stream);
  // The step fails before its first operation (a bad token id): nothing of it runs, nothing is kept.
  void abandon(cudaStream_t stream);

  bool enabled() const { return enabled_; }
  uint64_t replays() const { return replays_; }
  uint64_t captures() const { return captures_; }

 private:
  struct Entry {
    uint64_t key = 0;
    uint64_t ops_hash = 0;
    cudaGraphExec_t exec = nullptr;
    uint64_t last_used = 0;
  };
  enum class Mode { eager, capture, replay };
  Entry* find(uint64_t key);
  Entry& slot_for(uint64_t key);  // a free or the least recently used entry

  static constexpr size_t kMaxGraphs = 8;
  bool enabled_;
  Mode mode_ = Mode::eager;
  std::vector<Entry> entries_;
  Entry* current_ = nullptr;
  uint64_t step_key_ = 0;
  uint64_t seen_key_ = 0;  // the previous step's key: a key is captured the second time in a row
  uint64_t ops_hash_ = 0;
  uint64_t clock_ = 0;
  uint64_t replays_ = 0, captures_ = 0;
};

// ---- hashing operation arguments --------------------------------------------------------------

inline uint64_t hash_mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdull;
}

template <class T>
uint64_t hash_bits(const T& v) {
  static_assert(std::is_arithmetic_v<T> || std::is_pointer_v<T> || std::is_enum_v<T>, "hash fields one by one");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T) < 8 ? sizeof(T) : 8);
  return bits;
}

template <class... A>
uint64_t hash_args(const char* name, const A&... args) {
  uint64_t h = hash_bits(name);
  ((h = hash_mix(h, hash_bits(args))), ...);
  return h;
}

}  // namespace keel::cuda
