// A session: one sequence of one model, with every buffer it will ever use allocated at start
// (KV pages, recurrent state, chunk scratch, logits). Prefill runs in chunks; decode one token.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/cpu/thread_pool.h"
#include "model/family.h"
#include "model/model.h"
#include "runtime/buffer_set.h"
#include "runtime/kv_cache.h"

namespace keel::runtime {

struct SessionOptions {
  int64_t n_ctx = 2048;          // tokens the session can hold
  int64_t chunk = 512;           // prefill chunk (tokens per forward call)
  int64_t max_logit_rows = 1;    // rows of logits one forward call may return (perplexity: chunk)
  KvType kv_type = KvType::f16;
  uint32_t page_tokens = 256;    // KV page size
  int n_threads = 0;             // 0: all cores
  bool exact = false;            // f32 activations in every matmul; else 8-bit ones for quantized
                                 // weights in prefill (cpu::MatmulMode::fast)
};

// A 2-D weight as the planner sees it: its type and input width decide the matmul scratch.
struct MatrixInfo {
  quant::Type type;
  int64_t n_in;
};

// Every buffer a session allocates, derived from hparams and options alone (no tensor data), so
// the planner can print it before loading and the session allocates exactly it.
struct SessionLayout {
  model::SessionShape shape;
  std::vector<model::BufferSpec> scratch;  // activations + matmul scratch + logits
  std::vector<model::BufferSpec> state;    // recurrent state (hybrid models)
  uint64_t kv_bytes() const { return shape.kv.total_bytes(); }
  uint64_t scratch_bytes() const;
  uint64_t state_bytes() const;
};

int resolve_threads(int n_threads);
SessionLayout layout_session(const model::Hparams& hp, const model::Family& family,
                             const std::vector<MatrixInfo>& matrices, const SessionOptions& options);
std::vector<MatrixInfo> matrices_of(const model::Model& model);

struct ChunkProgress {
  int64_t done;     // prompt tokens processed so far
  int64_t total;    // prompt tokens in this prefill
  double seconds;   // since the prefill started
};
// Called after each chunk; return false to stop at this chunk boundary (cancel).
using ProgressFn = std::function<bool(const ChunkProgress&)>;

class Session {
 public:
  Session(std::shared_ptr<const model::Model> model, const SessionOptions& options);
  ~Session();

  const model::Model& model() const { return *model_; }
  const SessionLayout& layout() const { return layout_; }
  int64_t n_past() const { return n_past_; }
  int64_t n_ctx() const { return options_.n_ctx; }
  uint64_t allocated_bytes() const;

  // Appends `tokens` in chunks; returns the logits [n_vocab] of the last token (owned by the
  // session, valid until the next call). Throws keel::Error(cancelled) if progress returns false.
  const float* prefill(std::span<const int32_t> tokens, const ProgressFn& progress = {});
  // Appends one token; returns its logits.
  const float* decode(int32_t token);
  // Appends `tokens` and calls on_logits(i, logits of tokens[i]) for every i (perplexity).
  void evaluate(std::span<const int32_t> tokens, const std::function<void(int64_t, const float*)>& on_logits,
                const ProgressFn& progress = {});
  void reset();  // forget the sequence

 private:
  void check_room(int64_t n) const;
  std::shared_ptr<const model::Model> model_;
  SessionOptions options_;
  SessionLayout layout_;
  cpu::ThreadPool pool_;
  BufferSet scratch_;
  BufferSet state_;
  KvCache kv_;
  std::unique_ptr<model::Forward> forward_;
  float* logits_ = nullptr;            // [max_logit_rows, n_vocab]
  int64_t* logit_rows_ = nullptr;      // [max_logit_rows]
  int64_t n_past_ = 0;
};

}  // namespace keel::runtime
