// The session's layout: every buffer a session allocates (activations, backend workspaces, KV
// pages, recurrent state, per-call metadata), derived from hparams and options alone (no tensor
// data). The planner prints it before loading; runtime::Session allocates exactly it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/family.h"
#include "model/hparams.h"

namespace keel::model { class Model; }

namespace keel::plan {

using backend::KvType;

struct SessionOptions {
  int64_t n_ctx = 2048;          // tokens one sequence can hold; the KV pool holds n_ctx tokens in all
  int64_t chunk = 512;           // prefill chunk (tokens of one sequence per forward call)
  int64_t max_logit_rows = 1;    // rows of logits one forward call may return (perplexity: chunk)
  int n_seqs = 1;                // sequences held at once (--parallel); each has its own state slot
  bool exact = false;            // f32 activations in every matmul; else 8-bit ones for quantized
                                 // weights (the CPU backend's fast path)
  KvType kv_type = KvType::f16;
  uint32_t page_tokens = 256;    // KV page size
  int n_threads = 0;             // 0: all cores
  backend::Device device = backend::Device::host;
  int device_ordinal = 0;        // which GPU, for device cuda (--device cuda:N)
  int state_snapshots = 0;       // copies of one sequence's recurrent state kept beside the slots
                                 // (hybrid models; keel serve's prefix cache); 0 for others
};

// A 2-D weight as the planner sees it: its type and input width decide the matmul scratch.
using MatrixInfo = backend::WorkloadShape::Matrix;

// Every buffer a session allocates, derived from hparams and options alone (no tensor data), so
// the planner can print it before loading and the session allocates exactly it.
struct SessionLayout {
  model::SessionShape shape;
  int32_t max_pages_per_seq = 0;
  std::vector<model::BufferSpec> scratch;     // the family's activations and the logits (backend memory)
  std::vector<model::BufferSpec> workspaces;  // the backend's own (matmul, attention, GDN)
  model::BufferSpec host;                     // per-call metadata, page bookkeeping, state-file staging (host)
  uint64_t staging_bytes = 0;                 // of host: the largest KV page or per-sequence state buffer
  std::vector<model::BufferSpec> state;       // recurrent state, n_seqs slots per buffer (hybrid models)
  std::vector<model::BufferSpec> snapshots;   // [state] state_snapshots slots per buffer (none: no snapshots)
  backend::WorkloadShape workload;            // what the workspaces were sized for
  uint64_t kv_bytes() const { return shape.kv.total_bytes(); }
  uint64_t scratch_bytes() const;             // scratch + workspaces + host
  uint64_t state_bytes() const;               // the slots and the snapshots
  uint64_t state_bytes_per_sequence() const;  // one slot of every state buffer: a snapshot's cost
};

// "gdn_state.3" -> "gdn_state_snapshots.3": the snapshot buffer beside a state buffer.
std::string snapshot_buffer_name(const std::string& state_name);

// Offsets of the session's host arrays in its one host buffer ("batch").
struct HostArrays {
  uint64_t tokens, pos, slices, page_table, logit_rows, free_pages, page_refs, logit_ptrs, host_logits, staging, total;
  uint64_t staging_bytes;  // one KV page or one sequence's slot of a state buffer (state files)
};
HostArrays host_arrays(const model::SessionShape& s, int32_t max_pages_per_seq, uint32_t n_vocab, bool device_logits,
                       uint64_t staging_bytes);

int resolve_threads(int n_threads);
SessionLayout layout_session(const model::Hparams& hp, const model::Family& family,
                             const std::vector<MatrixInfo>& matrices, const SessionOptions& options);
std::vector<MatrixInfo> matrices_of(const model::Model& model);

}  // namespace keel::plan

// The session's names for these (runtime is where they are used; plan is where they are decided).
namespace keel::runtime {
using backend::KvGeometry;
using backend::KvType;
using backend::kv_element_type;
using backend::kv_type_from_name;
using backend::kv_type_name;
using plan::layout_session;
using plan::matrices_of;
using plan::MatrixInfo;
using plan::resolve_threads;
using plan::SessionLayout;
using plan::SessionOptions;
}  // namespace keel::runtime
