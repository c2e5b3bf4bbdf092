// Gated DeltaNet on the device (docs/specs/qwen35.md §2.3–2.4; raw launchers). Each matches its
// CPU twin in backend/cpu/gated_delta.*: the causal conv with rolling state, the per-head L2
// norm, the gates, the gated RMSNorm, and the gated delta rule.
//
// The delta rule runs in the chunked WY form (chunks of kGdnChunkTokens tokens) for every
// sequence, one token or many, in two kernels:
//  - prep, one CTA per (chunk, value head), every chunk of the call at once: what does not
//    depend on the state — the decays, P = (Q Kᵀ) ⊙ decay, T = (I + A)⁻¹, W = T diag(β e^γ) K and
//    U = T diag(β) V — into a planned workspace;
//  - scan, one CTA per (sequence, value head, block of kGdnColumns value columns; the columns of
//    the state are independent), which keeps its state block in shared memory for the whole call
//    and walks the sequence's chunks in order: V_new = U − W S, O = e^γ Q S + P V_new,
//    S ← e^{γ_last} S + (e^{γ_last−γ} K)ᵀ V_new.
// Arithmetic is f32 (as the CPU's); the chunk products run on the tensor cores in TF32 split
// three ways (gdn.cu), which keeps about f32's precision.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace keel::cuda {

constexpr int kGdnMaxHeadDim = 128;  // d_k and d_v the delta-rule kernels take
constexpr int kGdnChunkTokens = 64;
constexpr int kGdnColumns = 64;

// The sequences of one forward call (device arrays, host scalars).
struct SeqBatch {
  int n_seqs = 0;
  int n_tokens = 0;
  const int32_t* q_start = nullptr;  // [n_seqs + 1] tokens of sequence s: q_start[s] .. q_start[s+1]-1
  const int32_t* slot = nullptr;     // [n_seqs] state slot of sequence s
  const int32_t* seq = nullptr;      // [n_tokens] sequence of each token
  // The delta rule's chunks: each sequence cut in kGdnChunkTokens tokens (the last shorter), in
  // sequence order; sequence s owns chunks seq_chunk[s] .. seq_chunk[s+1]-1.
  int n_chunks = 0;
  const int32_t* chunk_first = nullptr;  // [n_chunks] first token (call index)
  const int32_t* chunk_len = nullptr;    // [n_chunks]
  const int32_t* seq_chunk = nullptr;    // [n_seqs + 1]
};

// Chunks of a call of up to max_tokens tokens in up to n_seqs sequences.
inline int64_t gdn_max_chunks(int64_t max_tokens, int64_t n_seqs) { return max_tokens / kGdnChunkTokens + n_seqs; }
// Fills the chunk arrays of SeqBatch for sequences of the given lengths; returns the count.
int fill_gdn_chunks(const int32_t* seq_first, const int32_t* seq_len, int n_seqs, int32_t* chunk_first,
                    int32_t* chunk_len, int32_t* seq_chunk);

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

// A decode call's delta-rule inputs in one launch (every sequence brings one token): conv1d_silu
// of x into out, the L2 norms of out's first n_k_heads heads of d_k (times q_scale) and of the
// next n_k_heads, and gdn_gates; the same bits as those launchers. Fits: d_k a multiple of 32 up
// to kGdnInputsMaxHeadDim, kernel 1..kGdnInputsMaxKernel.
struct GdnInputs {
  const float* x = nullptr;
  int64_t channels = 0;
  const float* conv_w = nullptr;
  int kernel = 0;
  float* state = nullptr;
  float* out = nullptr;
  int n_k_heads = 0, d_k = 0;
  float eps = 0.0f, q_scale = 1.0f;
  float* beta = nullptr;
  float* alpha = nullptr;
  const float* ssm_a = nullptr;
  const float* dt_bias = nullptr;
  int n_v_heads = 0;
};
constexpr int kGdnInputsMaxHeadDim = 256;
constexpr int kGdnInputsMaxKernel = 4;
bool gdn_decode_inputs_fit(int64_t d_k, int kernel);
void gdn_decode_inputs(const GdnInputs& a, const SeqBatch& b, cudaStream_t stream);

// o[r] = rms_norm(o[r]; w) * silu(z[r]) in place; o, z: [n_rows, dim]. With act_q, act_s (dim a
// multiple of 32): also o's 8-bit activations, the bits quantize_act_q8 gives for o read as any
// [tokens, n_in] with tokens * n_in = n_rows * dim (act_q8_parts' pointers for that shape). With
// f16: o rounded to f16 there too (ops.cuh's rms_norm).
void gated_rms_norm(float* o, const float* z, const float* w, int64_t n_rows, int64_t dim, float eps,
                    cudaStream_t stream, int8_t* act_q = nullptr, float2* act_s = nullptr, void* f16 = nullptr);

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
bool gated_delta_supports(int64_t d_k, int64_t d_v);
// Workspace bytes of gated_delta for calls of up to max_tokens tokens in n_seqs sequences.
size_t gated_delta_workspace_bytes(int64_t max_tokens, int64_t n_seqs, int64_t n_v_heads, int64_t d_k, int64_t d_v);
void gated_delta(const DeltaArgs& a, const SeqBatch& b, void* workspace, cudaStream_t stream);
// A decode call's gated_delta, then gated_rms_norm(out; z, w, eps) with its 8-bit activations
// (act_q, act_s as gated_rms_norm takes them), in one launch: the same bits as the two. Fits:
// every sequence one token, heads of 128 values (Qwen3.5's).
bool gated_delta_norm_fits(const DeltaArgs& a, const SeqBatch& b);
void gated_delta_norm(const DeltaArgs& a, const SeqBatch& b, const float* z, const float* w, float eps, int8_t* act_q,
                      float2* act_s, cudaStream_t stream);

}  // namespace keel::cuda
