#include "plan/layout.h"

#include <algorithm>
#include <thread>

#include "keel/error.h"
#include "model/model.h"

namespace keel::plan {
namespace {

constexpr int kMaxSequences = 1024;

uint64_t align64(uint64_t n) { return (n + 63) / 64 * 64; }

}  // namespace

HostArrays host_arrays(const model::SessionShape& s, int32_t max_pages_per_seq, uint32_t n_vocab, bool device_logits,
                       uint64_t staging_bytes) {
  HostArrays h{};
  uint64_t at = 0;
  auto take = [&](uint64_t bytes) {
    const uint64_t offset = at;
    at += align64(bytes);
    return offset;
  };
  const auto max_tokens = static_cast<uint64_t>(s.max_tokens), seqs = static_cast<uint64_t>(s.n_seqs),
             rows = static_cast<uint64_t>(s.max_logit_rows);
  h.tokens = take(max_tokens * sizeof(int32_t));
  h.pos = take(max_tokens * sizeof(int32_t));
  h.slices = take(seqs * sizeof(backend::SeqSlice));
  h.page_table = take(seqs * static_cast<uint64_t>(max_pages_per_seq) * sizeof(int32_t));
  h.logit_rows = take(rows * sizeof(int32_t));
  h.free_pages = take(uint64_t{s.kv.n_pages} * sizeof(int32_t));
  h.page_refs = take(uint64_t{s.kv.n_pages} * sizeof(int32_t));
  h.logit_ptrs = take(seqs * sizeof(const float*));
  h.host_logits = take(device_logits ? rows * n_vocab * sizeof(float) : 0);
  h.staging = take(staging_bytes);
  h.staging_bytes = staging_bytes;
  h.total = at;
  return h;
}

uint64_t SessionLayout::scratch_bytes() const {
  uint64_t total = host.bytes;
  for (const auto& b : scratch) total += b.bytes;
  for (const auto& b : workspaces) total += b.bytes;
  return total;
}

uint64_t SessionLayout::state_bytes() const {
  uint64_t total = 0;
  for (const auto& b : state) total += b.bytes;
  for (const auto& b : snapshots) total += b.bytes;
  return total;
}

uint64_t SessionLayout::state_bytes_per_sequence() const {
  uint64_t total = 0;
  for (const auto& b : state) total += b.bytes / static_cast<uint64_t>(shape.n_seqs);
  return total;
}

std::string snapshot_buffer_name(const std::string& state_name) {
  const size_t dot = state_name.find_last_of('.');
  if (dot == std::string::npos) return state_name + "_snapshots";
  return state_name.substr(0, dot) + "_snapshots" + state_name.substr(dot);
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
  if (o.n_seqs < 1 || o.n_seqs > kMaxSequences)
    throw Error("--parallel must be between 1 and " + std::to_string(kMaxSequences) + ", got " +
                    std::to_string(o.n_seqs),
                ErrorKind::usage);
  SessionLayout layout;
  model::SessionShape& s = layout.shape;
  s.chunk = std::min(o.chunk, o.n_ctx);
  s.n_seqs = o.n_seqs;
  s.max_tokens = s.chunk + (s.n_seqs - 1);  // one prefill chunk beside a decode of every other sequence
  s.max_logit_rows = std::max<int64_t>(std::clamp<int64_t>(o.max_logit_rows, 1, s.chunk), s.n_seqs);
  s.n_threads = resolve_threads(o.n_threads);
  s.kv.type = o.kv_type;
  s.kv.n_layers = hp.n_attention_layers();
  s.kv.n_kv_heads = hp.n_head_kv;
  s.kv.head_dim = hp.head_dim;
  s.kv.page_tokens = o.page_tokens;
  layout.max_pages_per_seq = static_cast<int32_t>((o.n_ctx + o.page_tokens - 1) / o.page_tokens);
  // n_ctx tokens in all, plus one page per extra sequence: sequences whose lengths sum to n_ctx
  // always fit, whatever page each one ends in.
  s.kv.n_pages = static_cast<uint32_t>(layout.max_pages_per_seq + (s.n_seqs - 1));

  layout.scratch = family.scratch_buffers(hp, s);
  layout.scratch.push_back({"logits", static_cast<uint64_t>(s.max_logit_rows) * hp.n_vocab * sizeof(float)});
  backend::WorkloadShape& work = layout.workload;
  work.max_tokens = s.max_tokens;
  work.n_seqs = s.n_seqs;
  work.n_threads = s.n_threads;
  work.kv = s.kv;
  work.n_head = hp.n_attention_layers() > 0 ? hp.n_head : 0;
  if (hp.n_recurrent_layers() > 0 && hp.ssm_time_step_rank > 0) {
    work.gdn_d_k = hp.ssm_state_size;
    work.gdn_d_v = hp.ssm_inner_size / hp.ssm_time_step_rank;
    work.gdn_v_heads = hp.ssm_time_step_rank;
  }
  work.matrices = matrices;
  work.exact = o.exact;
  layout.workspaces = backend::workspace_buffers(o.device, work);
  layout.staging_bytes = s.kv.n_layers > 0 ? s.kv.page_bytes() : 0;
  if (o.state_snapshots < 0)
    throw Error("--state-snapshots must be 0 or more, got " + std::to_string(o.state_snapshots), ErrorKind::usage);
  for (model::BufferSpec b : family.state_buffers(hp)) {
    layout.staging_bytes = std::max<uint64_t>(layout.staging_bytes, b.bytes);
    if (o.state_snapshots > 0)
      layout.snapshots.push_back({snapshot_buffer_name(b.name), b.bytes * static_cast<uint64_t>(o.state_snapshots)});
    b.bytes *= static_cast<uint64_t>(s.n_seqs);
    layout.state.push_back(std::move(b));
  }
  layout.host = {"batch", host_arrays(s, layout.max_pages_per_seq, hp.n_vocab, o.device != backend::Device::host,
                                      layout.staging_bytes)
                              .total};
  return layout;
}

std::vector<MatrixInfo> matrices_of(const model::Model& model) {
  std::vector<MatrixInfo> out;
  for (const auto& t : model.file().tensors())
    if (t.n_dims >= 2) out.push_back({t.type, static_cast<int64_t>(t.ne[0])});
  return out;
}

}  // namespace keel::plan
