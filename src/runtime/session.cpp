#include "runtime/session.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "plan/layout.h"
#include "keel/error.h"

namespace keel::runtime {
namespace {

// Token ids must index the embedding: checked before a call changes anything (pages, positions,
// a GPU step's graph), rather than by the backend's embed once the call has begun.
void check_tokens(const model::Hparams& hp, std::span<const int32_t> tokens) {
  for (const int32_t id : tokens)
    if (id < 0 || static_cast<uint32_t>(id) >= hp.n_vocab)
      throw Error("token id " + std::to_string(id) + " is outside the vocabulary (" + std::to_string(hp.n_vocab) +
                  " tokens)");
}

void check_room(const model::Hparams& hp, int64_t n_ctx, int64_t needed) {
  if (needed > n_ctx)
    throw Error("the prompt needs " + std::to_string(needed) + " tokens of context but the session holds " +
                std::to_string(n_ctx) + "; raise -c/--ctx-size (the model supports " + std::to_string(hp.n_ctx_train) +
                ")");
}

}  // namespace

Session::Session(std::shared_ptr<const model::Model> model, const SessionOptions& options)
    : model_(std::move(model)),
      options_(options),
      layout_(layout_session(model_->hparams(), model_->family(), matrices_of(*model_), options)) {
  const model::Hparams& hp = model_->hparams();
  if (options_.n_ctx > static_cast<int64_t>(hp.n_ctx_train) && hp.n_ctx_train > 0)
    throw Error("context " + std::to_string(options_.n_ctx) + " exceeds the model's training context of " +
                std::to_string(hp.n_ctx_train) + " tokens; use -c " + std::to_string(hp.n_ctx_train) + " or less");
  const model::SessionShape& s = layout_.shape;
  backend_ = backend::make_backend(options_.device, s.n_threads, options_.device_ordinal);
  for (const auto& b : layout_.scratch) scratch_.add(*backend_, b.name, b.bytes);
  backend_->reserve(layout_.workload);
  backend_->create_kv(s.kv);
  for (const auto& b : layout_.state) state_.add(*backend_, b.name, b.bytes);
  for (const auto& b : layout_.snapshots) snapshots_.add(*backend_, b.name, b.bytes);

  const bool device_logits = options_.device != backend::Device::host;
  const plan::HostArrays h =
      plan::host_arrays(s, layout_.max_pages_per_seq, hp.n_vocab, device_logits, layout_.staging_bytes);
  host_ = backend_->allocate_host_block(layout_.host.name, h.total);
  uint8_t* base = host_.get();
  tokens_ = reinterpret_cast<int32_t*>(base + h.tokens);
  pos_ = reinterpret_cast<int32_t*>(base + h.pos);
  slices_ = reinterpret_cast<backend::SeqSlice*>(base + h.slices);
  page_table_ = reinterpret_cast<int32_t*>(base + h.page_table);
  logit_rows_ = reinterpret_cast<int32_t*>(base + h.logit_rows);
  free_pages_ = reinterpret_cast<int32_t*>(base + h.free_pages);
  page_refs_ = reinterpret_cast<int32_t*>(base + h.page_refs);
  logit_ptrs_ = reinterpret_cast<const float**>(base + h.logit_ptrs);
  logits_ = scratch_.get_as<float>("logits");
  host_logits_ = device_logits ? reinterpret_cast<float*>(base + h.host_logits) : logits_;
  staging_ = base + h.staging;
  n_free_pages_ = static_cast<int32_t>(s.kv.n_pages);
  for (int32_t i = 0; i < n_free_pages_; ++i) free_pages_[i] = n_free_pages_ - 1 - i;  // page 0 on top
  std::fill_n(page_refs_, n_free_pages_, 0);
  seqs_.resize(static_cast<size_t>(s.n_seqs));

  model::ForwardResources res;
  res.backend = backend_.get();
  res.scratch = &scratch_;
  res.state = &state_;
  res.shape = s;
  forward_ = model_->family().make_forward(*model_, res);
  backend_->freeze();
  add_sequence();  // sequence 0: what the single-sequence calls use
}

Session::~Session() = default;

uint64_t Session::allocated_bytes() const {
  uint64_t workspaces = 0;  // allocated by the backend in reserve(), exactly as listed
  for (const auto& b : layout_.workspaces) workspaces += b.bytes;
  return scratch_.total_bytes() + workspaces + layout_.host.bytes + state_.total_bytes() + snapshots_.total_bytes() +
         layout_.shape.kv.total_bytes();
}

void Session::check_seq(int32_t seq) const {
  if (seq < 0 || seq >= layout_.shape.n_seqs || !seqs_[static_cast<size_t>(seq)].active)
    throw Error("internal: no sequence " + std::to_string(seq) + " in this session");
}

bool Session::has_sequence(int32_t seq) const {
  return seq >= 0 && seq < layout_.shape.n_seqs && seqs_[static_cast<size_t>(seq)].active;
}

int64_t Session::n_past(int32_t seq) const {
  check_seq(seq);
  return seqs_[static_cast<size_t>(seq)].n_past;
}

int32_t Session::add_sequence() {
  for (int32_t i = 0; i < layout_.shape.n_seqs; ++i) {
    Sequence& s = seqs_[static_cast<size_t>(i)];
    if (s.active) continue;
    s = Sequence{true, 0, 0};
    forward_->reset_state(i);
    return i;
  }
  throw Error("all " + std::to_string(layout_.shape.n_seqs) + " sequences of the session are in use (--parallel)");
}

int64_t Session::pages_missing(int32_t seq, int64_t end) const {
  const int64_t page = layout_.shape.kv.page_tokens;
  return (end + page - 1) / page - seqs_[static_cast<size_t>(seq)].n_pages;
}

void Session::grow_pages(int32_t seq, int64_t end) {
  const int64_t missing = pages_missing(seq, end);
  if (missing > n_free_pages_)
    throw Error("the KV page pool is exhausted: " + std::to_string(missing) + " more pages needed, " +
                std::to_string(n_free_pages_) + " of " + std::to_string(pages_total()) + " are free");
  Sequence& s = seqs_[static_cast<size_t>(seq)];
  int32_t* row = page_table_ + int64_t{seq} * layout_.max_pages_per_seq;
  for (int64_t i = 0; i < missing; ++i) {
    const int32_t page = free_pages_[--n_free_pages_];
    page_refs_[page] = 1;
    row[s.n_pages++] = page;
  }
}

void Session::release_pages(int32_t seq) {
  Sequence& s = seqs_[static_cast<size_t>(seq)];
  const int32_t* row = page_table_ + int64_t{seq} * layout_.max_pages_per_seq;
  for (int32_t i = s.n_pages - 1; i >= 0; --i) release_page(row[i]);  // last page first, as before sharing
  s.n_pages = 0;
  s.n_past = 0;
}

std::span<const int32_t> Session::pages_of(int32_t seq) const {
  check_seq(seq);
  return {page_table_ + int64_t{seq} * layout_.max_pages_per_seq,
          static_cast<size_t>(seqs_[static_cast<size_t>(seq)].n_pages)};
}

int32_t Session::page_refs(int32_t page) const {
  if (page < 0 || page >= pages_total()) throw Error("internal: no KV page " + std::to_string(page));
  return page_refs_[page];
}

int32_t Session::pages_shared() const {
  return static_cast<int32_t>(std::count_if(page_refs_, page_refs_ + pages_total(), [](int32_t r) { return r > 1; }));
}

void Session::retain_page(int32_t page) {
  if (page_refs(page) < 1) throw Error("internal: retaining free KV page " + std::to_string(page));
  ++page_refs_[page];
}

void Session::release_page(int32_t page) {
  if (page_refs(page) < 1) throw Error("internal: releasing free KV page " + std::to_string(page));
  if (--page_refs_[page] == 0) free_pages_[n_free_pages_++] = page;
}

void Session::share_pages(int32_t seq, std::span<const int32_t> pages, int32_t snapshot) {
  check_seq(seq);
  Sequence& s = seqs_[static_cast<size_t>(seq)];
  if (has_recurrent_state() && snapshot < 0)
    throw Error("internal: shared KV pages cannot restore a recurrent state without a snapshot");
  if (snapshot >= 0) check_snapshot(snapshot);
  if (s.n_pages != 0 || s.n_past != 0) throw Error("internal: sharing pages into a sequence that is not empty");
  const int64_t end = static_cast<int64_t>(pages.size()) * layout_.shape.kv.page_tokens;
  check_room(model_->hparams(), options_.n_ctx, end);
  for (int32_t page : pages)
    if (page_refs(page) < 1) throw Error("internal: sharing free KV page " + std::to_string(page));
  int32_t* row = page_table_ + int64_t{seq} * layout_.max_pages_per_seq;
  for (int32_t page : pages) {
    ++page_refs_[page];
    row[s.n_pages++] = page;
  }
  s.n_past = end;
  if (has_recurrent_state()) copy_state(seq, snapshot, /*to_snapshot=*/false);
}

void Session::check_snapshot(int32_t slot) const {
  if (slot < 0 || slot >= snapshot_slots())
    throw Error("internal: no state snapshot slot " + std::to_string(slot) + " (" + std::to_string(snapshot_slots()) +
                " planned)");
}

void Session::save_snapshot(int32_t seq, int32_t slot) {
  check_seq(seq);
  check_snapshot(slot);
  copy_state(seq, slot, /*to_snapshot=*/true);
}

void Session::copy_state(int32_t seq, int32_t slot, bool to_snapshot) {
  const auto n_seqs = static_cast<uint64_t>(layout_.shape.n_seqs);
  for (size_t i = 0; i < layout_.state.size(); ++i) {
    const auto floats = static_cast<int64_t>(layout_.state[i].bytes / n_seqs / sizeof(float));
    float* live = state_.get_as<float>(layout_.state[i].name) + floats * seq;
    float* kept = snapshots_.get_as<float>(layout_.snapshots[i].name) + floats * slot;
    // Rows of 1024 floats when they divide the slot: the CPU backend copies rows in parallel.
    const int64_t width = floats % 1024 == 0 ? 1024 : floats;
    backend_->copy_rows(to_snapshot ? live : kept, width, to_snapshot ? kept : live, width, floats / width, width);
  }
}

void Session::remove_sequence(int32_t seq) {
  check_seq(seq);
  release_pages(seq);
  seqs_[static_cast<size_t>(seq)].active = false;
}

void Session::reset_sequence(int32_t seq) {
  check_seq(seq);
  release_pages(seq);
  forward_->reset_state(seq);
}

void Session::run_batch(int64_t n_tokens, int32_t n_seqs, int64_t n_logit_rows) {
  backend::Batch batch;
  batch.n_tokens = n_tokens;
  batch.tokens = tokens_;
  batch.pos = pos_;
  batch.n_seqs = n_seqs;
  batch.seqs = slices_;
  batch.page_table = page_table_;
  batch.max_pages_per_seq = layout_.max_pages_per_seq;
  batch.n_logit_rows = n_logit_rows;
  batch.logit_rows = logit_rows_;
  forward_->run(batch, logits_);
  if (host_logits_ != logits_ && n_logit_rows > 0)
    backend_->download(logits_, host_logits_,
                       static_cast<size_t>(n_logit_rows) * model_->hparams().n_vocab * sizeof(float));
}

std::span<const float* const> Session::step(std::span<const SeqInput> inputs) {
  const model::SessionShape& shape = layout_.shape;
  if (inputs.empty()) throw Error("internal: a forward call without tokens");
  if (static_cast<int64_t>(inputs.size()) > shape.n_seqs)
    throw Error("internal: " + std::to_string(inputs.size()) + " sequences in one call, the session holds " +
                std::to_string(shape.n_seqs));
  // Check everything first: a refused call changes nothing.
  int64_t n_tokens = 0, n_rows = 0, pages_needed = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const SeqInput& in = inputs[i];
    check_seq(in.seq);
    for (size_t j = 0; j < i; ++j)
      if (inputs[j].seq == in.seq) throw Error("internal: sequence " + std::to_string(in.seq) + " twice in one call");
    if (in.tokens.empty()) throw Error("internal: sequence " + std::to_string(in.seq) + " brings no tokens");
    check_tokens(model_->hparams(), in.tokens);
    const Sequence& s = seqs_[static_cast<size_t>(in.seq)];
    const int64_t end = s.n_past + static_cast<int64_t>(in.tokens.size());
    check_room(model_->hparams(), options_.n_ctx, end);
    pages_needed += pages_missing(in.seq, end);
    n_tokens += static_cast<int64_t>(in.tokens.size());
    n_rows += in.logits ? 1 : 0;
  }
  if (n_tokens > shape.max_tokens)
    throw Error("internal: " + std::to_string(n_tokens) + " tokens in one call, the plan holds " +
                std::to_string(shape.max_tokens));
  if (pages_needed > n_free_pages_)
    throw Error("the KV page pool is exhausted: this call needs " + std::to_string(pages_needed) + " more pages, " +
                std::to_string(n_free_pages_) + " of " + std::to_string(pages_total()) + " are free");

  int64_t first = 0;
  n_rows = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const SeqInput& in = inputs[i];
    Sequence& s = seqs_[static_cast<size_t>(in.seq)];
    const auto n = static_cast<int64_t>(in.tokens.size());
    grow_pages(in.seq, s.n_past + n);
    slices_[i] = backend::SeqSlice{first, n, s.n_past, in.seq};
    for (int64_t t = 0; t < n; ++t) {
      tokens_[first + t] = in.tokens[static_cast<size_t>(t)];
      pos_[first + t] = static_cast<int32_t>(s.n_past + t);
    }
    if (in.logits) logit_rows_[n_rows++] = static_cast<int32_t>(first + n - 1);
    first += n;
  }
  run_batch(n_tokens, static_cast<int32_t>(inputs.size()), n_rows);
  const uint32_t n_vocab = model_->hparams().n_vocab;
  for (int64_t r = 0; r < n_rows; ++r) logit_ptrs_[r] = host_logits_ + r * n_vocab;
  for (const SeqInput& in : inputs) seqs_[static_cast<size_t>(in.seq)].n_past += static_cast<int64_t>(in.tokens.size());
  return {logit_ptrs_, static_cast<size_t>(n_rows)};
}

const float* Session::prefill(std::span<const int32_t> tokens, const ProgressFn& progress) {
  if (tokens.empty()) throw Error("cannot prefill an empty prompt");
  check_room(model_->hparams(), options_.n_ctx, n_past(0) + static_cast<int64_t>(tokens.size()));
  const auto start = std::chrono::steady_clock::now();
  const int64_t total = static_cast<int64_t>(tokens.size());
  const float* logits = nullptr;
  for (int64_t done = 0; done < total;) {
    const int64_t n = std::min(layout_.shape.chunk, total - done);
    const bool last = done + n == total;
    const SeqInput in{0, tokens.subspan(static_cast<size_t>(done), static_cast<size_t>(n)), last};
    const auto rows = step(std::span<const SeqInput>(&in, 1));
    if (last) logits = rows[0];
    done += n;
    if (progress) {
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (!progress({done, total, secs}) && !last)
        throw Error("prefill cancelled after " + std::to_string(done) + " of " + std::to_string(total) + " tokens",
                    ErrorKind::cancelled);
    }
  }
  return logits;
}

const float* Session::decode(int32_t token) { return prefill(std::span<const int32_t>(&token, 1)); }

void Session::evaluate(std::span<const int32_t> tokens, const std::function<void(int64_t, const float*)>& on_logits,
                       const ProgressFn& progress) {
  check_tokens(model_->hparams(), tokens);
  check_room(model_->hparams(), options_.n_ctx, n_past(0) + static_cast<int64_t>(tokens.size()));
  const auto start = std::chrono::steady_clock::now();
  const int64_t total = static_cast<int64_t>(tokens.size());
  const int64_t step_tokens = std::min(layout_.shape.chunk, layout_.shape.max_logit_rows);
  const uint32_t n_vocab = model_->hparams().n_vocab;
  Sequence& s = seqs_[0];
  for (int64_t done = 0; done < total;) {
    const int64_t n = std::min(step_tokens, total - done);
    grow_pages(0, s.n_past + n);
    slices_[0] = backend::SeqSlice{0, n, s.n_past, 0};
    for (int64_t t = 0; t < n; ++t) {
      tokens_[t] = tokens[static_cast<size_t>(done + t)];
      pos_[t] = static_cast<int32_t>(s.n_past + t);
      logit_rows_[t] = static_cast<int32_t>(t);
    }
    run_batch(n, 1, n);
    for (int64_t r = 0; r < n; ++r) on_logits(done + r, host_logits_ + r * n_vocab);
    s.n_past += n;
    done += n;
    if (progress) {
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (!progress({done, total, secs}) && done < total)
        throw Error("evaluation cancelled after " + std::to_string(done) + " tokens", ErrorKind::cancelled);
    }
  }
}

}  // namespace keel::runtime
