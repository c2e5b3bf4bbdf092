// The backend seam: the operations the model families are written against, and nothing
// device-specific. A family's forward pass is an eager sequence of these calls over buffers the
// backend allocated at session start (from the plan); a backend never allocates after freeze().
//
// Conventions for every op:
//   - activations are f32, row-major, [rows, width], in the backend's memory;
//   - ops that take no row count work on the current batch (begin_batch): embed, rope, kv_write,
//     attention, conv1d_silu, gated_delta, logits. Per-token positions, sequences, page tables
//     and state slots come from the batch, never from scalar arguments;
//   - a sequence's tokens are consecutive in the batch; attention is causal within the sequence
//     over its own pages; recurrent state is per sequence slot.
// The CPU backend (backend/cpu/cpu_backend.h) implements it with the SIMD kernels and their
// scalar twins; a GPU backend implements the same calls on its device.
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "backend/types.h"

namespace keel::backend {

// Device memory owned by one allocation; the deleter knows its device.
struct MemoryFree {
  void (*free)(void* ptr) = nullptr;
  void operator()(uint8_t* p) const {
    if (p && free) free(p);
  }
};
using Memory = std::unique_ptr<uint8_t, MemoryFree>;

// The sizes a backend's own workspaces depend on (matmul packing, attention tiles, GDN chunks).
struct WorkloadShape {
  int64_t max_tokens = 1;        // tokens in one forward call (a prefill chunk + other decodes)
  int32_t n_seqs = 1;            // sequences one call can carry (the session's)
  int n_threads = 1;             // CPU: the workspaces are per thread
  KvGeometry kv;                 // attention layers' page pool (n_layers 0: none)
  uint32_t n_head = 0;           // query heads of the attention layers
  int64_t gdn_d_k = 0;           // Gated DeltaNet head sizes (0: no GDN layers)
  int64_t gdn_d_v = 0;
  int64_t gdn_v_heads = 0;
  struct Matrix {
    quant::Type type;
    int64_t n_in;
  };
  std::vector<Matrix> matrices;  // every 2-D weight the forward multiplies by
  bool exact = false;            // f32 activations in every matmul (no 8-bit activation path)
};

// The workspaces a backend on `device` allocates for `shape`: the planner lists them without a
// device at hand, and the backend allocates exactly them in reserve().
std::vector<BufferSpec> workspace_buffers(Device device, const WorkloadShape& shape);

// One Gated DeltaNet layer's delta rule over the batch (per sequence: the token recurrence when
// it brings one token, the chunked WY form otherwise). v-head h reads key head h % n_k_heads.
struct GatedDeltaArgs {
  const float* q = nullptr;     // head kh of token t at q + t * qk_stride + kh * d_k (L2-normed, scaled)
  const float* k = nullptr;     // likewise (L2-normed)
  const float* v = nullptr;     // head h of token t at v + t * v_stride + h * d_v
  int64_t qk_stride = 0;
  int64_t v_stride = 0;
  const float* g = nullptr;     // [n_tokens, n_v_heads] log-decay (<= 0)
  const float* beta = nullptr;  // [n_tokens, n_v_heads] in (0, 1)
  float* state = nullptr;       // [slots][n_v_heads, d_k, d_v] f32; the slot of each sequence is updated
  float* out = nullptr;         // [n_tokens, n_v_heads, d_v]
  int64_t n_k_heads = 0;
  int64_t n_v_heads = 0;
  int64_t d_k = 0;
  int64_t d_v = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;

  // ---- memory: every call here happens at session start, before freeze() --------------------
  // Zeroed memory of `bytes` (any size, 64-byte aligned). Throws keel::Error naming `name` when it
  // cannot, and always after freeze().
  virtual Memory allocate(std::string_view name, size_t bytes) = 0;
  // The backend's workspaces for `shape` (workspace_buffers(device(), shape)).
  virtual void reserve(const WorkloadShape& shape) = 0;
  // The paged KV pool: every page of every attention layer, allocated now.
  virtual void create_kv(const KvGeometry& geometry) = 0;
  // A weight / a 1-D f32 tensor where the backend reads it (CPU: the mmapped data itself).
  virtual WeightView place_weight(std::string_view name, const WeightView& host) = 0;
  virtual const float* place_vector(std::string_view name, const float* host, int64_t n) = 0;
  // The session's host-side block (per-call metadata, page bookkeeping, the logits rows it reads
  // back): allocate_host's memory (host_memory.h). A GPU backend page-locks it, so download()
  // copies the logits straight into it rather than through the driver's bounce buffer.
  virtual Memory allocate_host_block(std::string_view name, size_t bytes);
  // No allocation after this (a later one throws).
  virtual void freeze() = 0;
  virtual bool frozen() const = 0;

  // ---- transfers ------------------------------------------------------------------------------
  virtual void download(const void* src, void* host_dst, size_t bytes) = 0;  // waits for pending work
  virtual void upload(const void* host_src, void* dst, size_t bytes) = 0;
  virtual void zero(void* dst, size_t bytes) = 0;
  // One KV page (K then V rows, KvGeometry::page_bytes()) of attention layer `layer` to or from
  // host memory (prompt-cache state files).
  virtual void read_kv_page(uint32_t layer, int32_t page, void* host_dst) = 0;
  virtual void write_kv_page(uint32_t layer, int32_t page, const void* host_src) = 0;

  // ---- one forward call -------------------------------------------------------------------------
  // The metadata of the next ops (the caller keeps `batch` and its arrays alive until the next
  // begin_batch).
  virtual void begin_batch(const Batch& batch) = 0;
  // The call's last op has been queued (a GPU backend may launch the call's work as one graph).
  virtual void end_batch() {}

  // out[t] = row batch.tokens[t] of table, dequantized: [n_tokens, n_embd].
  virtual void embed(const WeightView& table, float* out) = 0;
  // out[r] = x[r] * w / sqrt(mean(x[r]^2) + eps); x, out: [n_rows, dim] (may alias); w: [dim].
  virtual void rms_norm(const float* x, const float* w, float* out, int64_t n_rows, int64_t dim, float eps) = 0;
  // o[r] = rms_norm(o[r]; w) ⊙ silu(z[r]) in place; o, z: [n_rows, dim].
  virtual void gated_rms_norm(float* o, const float* z, const float* w, int64_t n_rows, int64_t dim, float eps) = 0;
  virtual void add(float* y, const float* x, int64_t n) = 0;                                  // y += x
  // y += x, then out = rms_norm(y) (a residual add and the next norm): the same bits as the two.
  virtual void add_rms_norm(float* y, const float* x, const float* w, float* out, int64_t n_rows, int64_t dim,
                            float eps) {
    add(y, x, n_rows * dim);
    rms_norm(y, w, out, n_rows, dim, eps);
  }
  virtual void add_bias(float* x, const float* bias, int64_t n_rows, int64_t dim) = 0;        // x[r] += bias
  virtual void silu_mul(float* gate, const float* up, int64_t n) = 0;                         // gate = silu(gate) * up
  // x[r] *= sigmoid(gate[r]) for rows of `dim`; row r of gate at gate + r * gate_stride.
  virtual void sigmoid_gate(float* x, const float* gate, int64_t gate_stride, int64_t n_rows, int64_t dim) = 0;
  // dst[r][0..width) = src[r][0..width) with the given row strides (floats).
  virtual void copy_rows(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t n_rows,
                         int64_t width) = 0;
  // y[t] = W x[t]: x [n_tokens, n_in], y [n_tokens, n_out] (no aliasing).
  virtual void matmul(const WeightView& w, const float* x, int64_t n_tokens, float* y) = 0;
  // Several weights times one x (Q, K and V; gate and up): y_i = W_i x, each bit for bit what
  // matmul gives. A backend may launch them together; by default they go one by one.
  struct Product {
    const WeightView& w;
    float* y;
  };
  virtual void matmuls(const float* x, int64_t n_tokens, std::initializer_list<Product> products) {
    for (const Product& p : products) matmul(p.w, x, n_tokens, p.y);
  }
  // RoPE in place on x: [n_tokens, n_heads, head_dim], token t at batch.pos[t].
  virtual void rope(float* x, int64_t n_heads, int64_t head_dim, const RopeParams& p) = 0;
  // The attention inputs before the cache, in place: each head's RMSNorm of q and k (weights
  // q_norm / k_norm, [head_dim]; skipped when q_norm is null), then RoPE of both. q: [n_tokens,
  // n_q_heads, head_dim], k: [n_tokens, n_kv_heads, head_dim]. The same as those four calls.
  virtual void norm_rope_qk(float* q, int64_t n_q_heads, float* k, int64_t n_kv_heads, int64_t n_tokens,
                            int64_t head_dim, const float* q_norm, const float* k_norm, float eps, const RopeParams& p) {
    if (q_norm) {
      rms_norm(q, q_norm, q, n_tokens * n_q_heads, head_dim, eps);
      rms_norm(k, k_norm, k, n_tokens * n_kv_heads, head_dim, eps);
    }
    rope(q, n_q_heads, head_dim, p);
    rope(k, n_kv_heads, head_dim, p);
  }
  // Stores K and V of every batch token in its sequence's page: k, v [n_tokens, n_kv_heads * head_dim].
  virtual void kv_write(uint32_t layer, const float* k, const float* v) = 0;
  // Where norm_rope_kv_write takes q's heads from when they are not in q yet: head h of token t
  // at rows + (t * n_q_heads + h) * stride (the query halves of a wider projection's heads).
  struct QRows {
    const float* rows = nullptr;  // null: q holds them
    int64_t stride = 0;
  };
  // copy_rows of q_from into q, norm_rope_qk, then kv_write(layer, k, v): a backend may do them in
  // one pass.
  virtual void norm_rope_kv_write(uint32_t layer, float* q, int64_t n_q_heads, float* k, const float* v,
                                  int64_t n_kv_heads, int64_t n_tokens, int64_t head_dim, const float* q_norm,
                                  const float* k_norm, float eps, const RopeParams& p, const QRows& q_from) {
    if (q_from.rows) copy_rows(q_from.rows, q_from.stride, q, head_dim, n_tokens * n_q_heads, head_dim);
    norm_rope_qk(q, n_q_heads, k, n_kv_heads, n_tokens, head_dim, q_norm, k_norm, eps, p);
    kv_write(layer, k, v);
  }
  // Causal GQA flash attention of each token over its sequence's pages of attention layer `layer`.
  // q, out: [n_tokens, n_head, head_dim].
  virtual void attention(uint32_t layer, const float* q, float* out, uint32_t n_head, float scale) = 0;

  // Gated DeltaNet pieces (docs/specs/qwen35.md §2.3). conv1d_silu: per sequence, causal depthwise
  // conv over [its state rows ; its x rows], then SiLU; x, out: [n_tokens, channels]; w: [channels,
  // kernel]; state: [slots][kernel - 1, channels], updated to the last kernel - 1 inputs.
  virtual void conv1d_silu(const float* x, int64_t channels, const float* w, int kernel, float* state, float* out) = 0;
  // x_th *= scale / sqrt(|x_th|^2 + eps) for each row and head; head h of row r at x + r * row_stride + h * dim.
  virtual void l2_norm_heads(float* x, int64_t n_rows, int64_t row_stride, int64_t n_heads, int64_t dim, float eps,
                             float scale) = 0;
  // beta <- sigmoid(beta); alpha <- ssm_a[h] * softplus(alpha + dt_bias[h]), both [n_tokens, n_heads].
  virtual void gdn_gates(float* beta, float* alpha, const float* ssm_a, const float* dt_bias, int64_t n_heads) = 0;
  virtual void gated_delta(const GatedDeltaArgs& args) = 0;
  // gated_delta, then gated_rms_norm(args.out; z, w) over each head's d_v values, for a call of
  // n_tokens tokens (z: [n_tokens, n_v_heads, d_v]): a backend may do both in one pass.
  virtual void gated_delta_norm(const GatedDeltaArgs& args, int64_t n_tokens, const float* z, const float* w,
                                float eps) {
    gated_delta(args);
    gated_rms_norm(args.out, z, w, n_tokens * args.n_v_heads, args.d_v, eps);
  }
  // The delta rule's inputs from the projected mix, as the family would make them with the four
  // calls above: conv1d_silu(mix -> u); the L2 norms of u's first n_k_heads heads of d_k (the
  // queries, times q_scale) and of the next n_k_heads (the keys); gdn_gates(beta, alpha). A
  // backend may do them in one pass; by default it makes those calls.
  struct GdnInputArgs {
    const float* mix = nullptr;  // [n_tokens, channels]
    int64_t n_tokens = 0;
    int64_t channels = 0;
    const float* conv_w = nullptr;  // [channels, kernel]
    int kernel = 0;
    float* conv_state = nullptr;  // [slots][kernel - 1, channels]
    float* u = nullptr;           // [n_tokens, channels]: q heads | k heads | v
    int64_t n_k_heads = 0;
    int64_t d_k = 0;
    float l2_eps = 0.0f;
    float q_scale = 1.0f;
    float* beta = nullptr;   // [n_tokens, n_v_heads]
    float* alpha = nullptr;  // [n_tokens, n_v_heads]
    const float* ssm_a = nullptr;
    const float* dt_bias = nullptr;
    int64_t n_v_heads = 0;
  };
  virtual void gdn_inputs(const GdnInputArgs& a) {
    conv1d_silu(a.mix, a.channels, a.conv_w, a.kernel, a.conv_state, a.u);
    l2_norm_heads(a.u, a.n_tokens, a.channels, a.n_k_heads, a.d_k, a.l2_eps, a.q_scale);
    l2_norm_heads(a.u + a.n_k_heads * a.d_k, a.n_tokens, a.channels, a.n_k_heads, a.d_k, a.l2_eps, 1.0f);
    gdn_gates(a.beta, a.alpha, a.ssm_a, a.dt_bias, a.n_v_heads);
  }

  // logits[r] = W_out · rms_norm(hidden[batch.logit_rows[r]]; norm_w) for r < batch.n_logit_rows.
  // hidden: [n_tokens, n_embd]; rows: [n_logit_rows, n_embd] scratch; logits: [n_logit_rows, n_out].
  virtual void logits(const float* hidden, const float* norm_w, float eps, const WeightView& w_out, float* rows,
                      float* logits) = 0;
};

// The backend for `device` ("host": the CPU backend on n_threads threads; "cuda": GPU `ordinal`).
std::unique_ptr<Backend> make_backend(Device device, int n_threads, int ordinal = 0);

}  // namespace keel::backend
