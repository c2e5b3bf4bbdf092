// Gated DeltaNet on the device (docs/specs/qwen35.md §2.3–2.4; raw launchers). Each matches its
// CPU twin in backend/cpu/gated_delta.*: the causal conv with rolling state, the per-head L2
// norm, the gates, the gated RMSNorm, and the gated delta rule.
//
// The delta rule runs in the chunked WY form (chunks of kGdnChunkTokens tokens) for every
// sequence, one token or many: a CTA owns one (sequence, value head, block of kGdnColumns value
// columns) — the columns of the state are independent of each other — keeps its state block in
// shared memory for the whole call and walks the sequence's chunks in order. Arithmetic is f32
// (as the CPU's); the chunk's small products are register-tiled in shared memory.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace keel::cuda {

// The sequences of one forward call (device arrays, host scalars).
struct SeqBatch {
  int n_seqs = 0;
  const int32_t* q_start = nullptr;  // [n_seqs + 1] tokens of sequence s: q_start[s] .. q_start[s+1]-1
  const int32_t* slot = nullptr;     // [n_seqs] state slot of sequence s
  const int32_t* seq = nullptr;      // [n_tokens] sequence of each token
  int n_tokens = 0;
};

constexpr int kGdnMaxKeyDim = 128;  // d_k the delta-rule kernel takes (any d_v)
constexpr int kGdnChunkTokens = 64;
constexpr int kGdnColumns = 64;

// Per sequence: out = silu(causal depthwise conv over [its state rows ; its x rows]); then the
// state becomes the last kernel-1 rows. x, out: [n_tokens, channels]; w: [channels, kernel];
// state: [slots][kernel-1, channels].
void conv1d_silu(const float* x, int64_t channels, const float* w, int kernel, float* state, float* out,
                 const SeqBatch& b, cudaStream_t stream);

// x_th *= scale / sqrt(|x_th|^2 + eps); head h of row r at x + r * row_stride + h * dim.
void l2_norm_heads(float* x, int64_t n_rows, int64_t row_stride, int64_t n_heads, int64_t dim, float eps, float scale,
                   cudaStream_t stream);

// beta <- sigmoid(beta); alpha <- ssm_a[h] * softplus(alpha + dt_bias[h]); both [n_tokens, n_heads].
void gdn_gates(float* beta, float* alpha, const float* ssm_a, const float* dt_bias, int64_t n_tokens, int64_t n_heads,
               cudaStream_t stream);

// o[r] = rms_norm(o[r]; w) * silu(z[r]) in place; o, z: [n_rows, dim].
void gated_rms_norm(float* o, const float* z, const float* w, int64_t n_rows, int64_t dim, float eps,
                    cudaStream_t stream);

struct DeltaArgs {
  const float* q = nullptr;  // head kh of token t at q + t * qk_stride + kh * d_k (L2-normed, scaled)
  const float* k = nullptr;
  const float* v = nullptr;  // head h of token t at v + t * v_stride + h * d_v
  int64_t qk_stride = 0, v_stride = 0;
  const float* g = nullptr;     // [n_tokens, n_v_heads] log-decay
  const float* beta = nullptr;  // [n_tokens, n_v_heads]
  float* state = nullptr;       // [slots][n_v_heads, d_k, d_v]
  float* out = nullptr;         // [n_tokens, n_v_heads, d_v]
  int n_k_heads = 0, n_v_heads = 0, d_k = 0, d_v = 0;
};
bool gated_delta_supports(int d_k);
void gated_delta(const DeltaArgs& a, const SeqBatch& b, cudaStream_t stream);

}  // namespace keel::cuda
