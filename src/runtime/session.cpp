#include "runtime/session.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "backend/cpu/matmul.h"
#include "keel/error.h"

namespace keel::runtime {

uint64_t SessionLayout::scratch_bytes() const {
  uint64_t total = 0;
  for (const auto& b : scratch) total += b.bytes;
  return total;
}

uint64_t SessionLayout::state_bytes() const {
  uint64_t total = 0;
  for (const auto& b : state) total += b.bytes;
  return total;
}

int resolve_threads(int n_threads) {
  if (n_threads > 0) return n_threads;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

SessionLayout layout_session(const model::Hparams& hp, const model::Family& family,
                             const std::vector<MatrixInfo>& matrices, const SessionOptions& o) {
  if (o.n_ctx <= 0) throw Error("context size must be positive, got " + std::to_string(o.n_ctx), ErrorKind::usage);
  if (o.chunk <= 0) throw Error("chunk size must be positive, got " + std::to_string(o.chunk), ErrorKind::usage);
  if (o.page_tokens == 0) throw Error("KV page size must be positive", ErrorKind::usage);
  SessionLayout layout;
  model::SessionShape& s = layout.shape;
  s.chunk = std::min(o.chunk, o.n_ctx);
  s.max_logit_rows = std::clamp<int64_t>(o.max_logit_rows, 1, s.chunk);
  s.n_threads = resolve_threads(o.n_threads);
  s.matmul_mode = o.exact ? cpu::MatmulMode::exact : cpu::MatmulMode::fast;
  s.kv.type = o.kv_type;
  s.kv.n_layers = hp.n_attention_layers();
  s.kv.n_kv_heads = hp.n_head_kv;
  s.kv.head_dim = hp.head_dim;
  s.kv.page_tokens = o.page_tokens;
  s.kv.n_pages = static_cast<uint32_t>((o.n_ctx + o.page_tokens - 1) / o.page_tokens);

  layout.scratch = family.scratch_buffers(hp, s);
  uint64_t matmul_bytes = 0;
  for (const MatrixInfo& m : matrices)
    matmul_bytes = std::max<uint64_t>(matmul_bytes, cpu::matmul_scratch_bytes(m.type, m.n_in, s.chunk, s.n_threads, s.matmul_mode));
  layout.scratch.push_back({"matmul", matmul_bytes});
  layout.scratch.push_back({"logits", static_cast<uint64_t>(s.max_logit_rows) * hp.n_vocab * sizeof(float)});
  layout.scratch.push_back({"logit_index", static_cast<uint64_t>(s.max_logit_rows) * sizeof(int64_t)});
  layout.state = family.state_buffers(hp);
  return layout;
}

std::vector<MatrixInfo> matrices_of(const model::Model& model) {
  std::vector<MatrixInfo> out;
  for (const auto& t : model.file().tensors())
    if (t.n_dims >= 2) out.push_back({t.type, static_cast<int64_t>(t.ne[0])});
  return out;
}

Session::Session(std::shared_ptr<const model::Model> model, const SessionOptions& options)
    : model_(std::move(model)),
      options_(options),
      layout_(layout_session(model_->hparams(), model_->family(), matrices_of(*model_), options)),
      pool_(layout_.shape.n_threads),
      kv_(layout_.shape.kv) {
  if (options_.n_ctx > static_cast<int64_t>(model_->hparams().n_ctx_train) && model_->hparams().n_ctx_train > 0)
    throw Error("context " + std::to_string(options_.n_ctx) + " exceeds the model's training context of " +
                std::to_string(model_->hparams().n_ctx_train) + " tokens; use -c " +
                std::to_string(model_->hparams().n_ctx_train) + " or less");
  for (const auto& b : layout_.scratch) scratch_.add(b.name, b.bytes);
  for (const auto& b : layout_.state) state_.add(b.name, b.bytes);
  logits_ = scratch_.get_as<float>("logits");
  logit_rows_ = scratch_.get_as<int64_t>("logit_index");
  model::ForwardResources res;
  res.scratch = &scratch_;
  res.state = &state_;
  res.kv = &kv_;
  res.pool = &pool_;
  res.shape = layout_.shape;
  forward_ = model_->family().make_forward(*model_, res);
}

Session::~Session() = default;

uint64_t Session::allocated_bytes() const {
  return scratch_.total_bytes() + state_.total_bytes() + kv_.geometry().total_bytes();
}

void Session::check_room(int64_t n) const {
  if (n_past_ + n > options_.n_ctx)
    throw Error("the prompt needs " + std::to_string(n_past_ + n) + " tokens of context but the session holds " +
                std::to_string(options_.n_ctx) + "; raise -c/--ctx-size (the model supports " +
                std::to_string(model_->hparams().n_ctx_train) + ")");
}

const float* Session::prefill(std::span<const int32_t> tokens, const ProgressFn& progress) {
  if (tokens.empty()) throw Error("cannot prefill an empty prompt");
  check_room(static_cast<int64_t>(tokens.size()));
  const auto start = std::chrono::steady_clock::now();
  const int64_t total = static_cast<int64_t>(tokens.size());
  for (int64_t done = 0; done < total;) {
    const int64_t n = std::min(layout_.shape.chunk, total - done);
    const bool last = done + n == total;
    model::ForwardBatch batch;
    batch.tokens = tokens.data() + done;
    batch.n_tokens = n;
    batch.pos0 = n_past_;
    logit_rows_[0] = n - 1;
    batch.logit_rows = logit_rows_;
    batch.n_logit_rows = last ? 1 : 0;
    batch.logits = logits_;
    forward_->run(batch);
    n_past_ += n;
    done += n;
    if (progress) {
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (!progress({done, total, secs}) && !last)
        throw Error("prefill cancelled after " + std::to_string(done) + " of " + std::to_string(total) + " tokens",
                    ErrorKind::cancelled);
    }
  }
  return logits_;
}

const float* Session::decode(int32_t token) { return prefill(std::span<const int32_t>(&token, 1)); }

void Session::evaluate(std::span<const int32_t> tokens, const std::function<void(int64_t, const float*)>& on_logits,
                       const ProgressFn& progress) {
  check_room(static_cast<int64_t>(tokens.size()));
  const auto start = std::chrono::steady_clock::now();
  const int64_t total = static_cast<int64_t>(tokens.size());
  const int64_t step = std::min(layout_.shape.chunk, layout_.shape.max_logit_rows);
  const uint32_t n_vocab = model_->hparams().n_vocab;
  for (int64_t done = 0; done < total;) {
    const int64_t n = std::min(step, total - done);
    for (int64_t r = 0; r < n; ++r) logit_rows_[r] = r;
    model::ForwardBatch batch{tokens.data() + done, n, n_past_, logit_rows_, n, logits_};
    forward_->run(batch);
    for (int64_t r = 0; r < n; ++r) on_logits(done + r, logits_ + r * n_vocab);
    n_past_ += n;
    done += n;
    if (progress) {
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (!progress({done, total, secs}) && done < total)
        throw Error("evaluation cancelled after " + std::to_string(done) + " tokens", ErrorKind::cancelled);
    }
  }
}

void Session::reset() {
  n_past_ = 0;
  forward_->reset_state();
}

}  // namespace keel::runtime
