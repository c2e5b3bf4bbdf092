// Gated DeltaNet (GDN) kernels on the CPU, fp32 (docs/specs/qwen35.md §2.3–2.4): the causal
// depthwise conv1d with its rolling state, q/k L2 normalisation, the decay/beta gates, the
// gated delta rule (token recurrence for decode, chunked WY form for prefill) and the gated
// RMSNorm. The delta rule runs in parallel over heads and the conv over channels; the row-wise
// ops take any range of rows (callers split them). Nothing allocates: workspaces are planned.
//
// Recurrent state layout, fixed for prefill and decode alike: per v-head a [d_k][d_v] matrix S
// (row i = key index), so a read is o = Sᵀq and a write is S += k δᵀ, both over contiguous rows.
#pragma once
#include <cstddef>
#include <cstdint>

#include "backend/cpu/matmul.h"  // Isa, best_isa
#include "backend/cpu/thread_pool.h"
#include "backend/types.h"

namespace keel::cpu {

// Causal depthwise conv1d over time followed by SiLU, per channel c:
//   out[t][c] = silu( Σ_{j<kernel} w[c][j] · e[t + j][c] ),  e = [state rows ; x rows]
// so tap kernel-1 multiplies the current token. Afterwards state holds the last kernel-1 raw
// inputs (the last rows of e). x: [n_tokens, channels]; w: [channels, kernel] (ggml ne [kernel,
// channels]); state: [kernel-1, channels], oldest row first; out: [n_tokens, channels], must not
// alias x. kernel <= kMaxConvKernel.
constexpr int kMaxConvKernel = backend::kMaxConvKernel;
void causal_conv1d_silu(const float* x, int64_t n_tokens, int64_t channels, const float* w, int kernel,
                        float* state, float* out, ThreadPool& pool);

// For each token t and head h: x_th *= scale / sqrt(Σ x_th² + eps)   (HF's l2norm, then a scale).
// Head h of token t starts at x + t * row_stride + h * dim.
void l2_norm_heads(float* x, int64_t n_tokens, int64_t row_stride, int64_t n_heads, int64_t dim, float eps,
                   float scale);

// The per-token, per-v-head gates, in place on [n_tokens, n_heads]:
//   beta  <- sigmoid(beta)
//   alpha <- ssm_a[h] · softplus(alpha + dt_bias[h])   (the log-decay g <= 0; ssm_a = -exp(A_log))
void gdn_gates(float* beta, float* alpha, const float* ssm_a, const float* dt_bias, int64_t n_tokens,
               int64_t n_heads);

// Gated RMSNorm, in place on o: o_r = o_r * w / sqrt(mean(o_r²) + eps) ⊙ silu(z_r) for each row r.
// o, z: [n_rows, dim]; w: [dim] (plain weight, not +1).
void gated_rms_norm(float* o, const float* z, const float* w, int64_t n_rows, int64_t dim, float eps);

// One GDN layer's delta rule over n_tokens consecutive tokens of one sequence.
// v-head h reads key head h % n_k_heads (GGUF tiled order).
struct GatedDeltaArgs {
  const float* q = nullptr;   // head kh of token t at q + t * qk_stride + kh * d_k (L2-normed, scaled)
  const float* k = nullptr;   // likewise (L2-normed)
  const float* v = nullptr;   // head h of token t at v + t * v_stride + h * d_v
  int64_t qk_stride = 0;
  int64_t v_stride = 0;
  const float* g = nullptr;     // [n_tokens, n_v_heads] log-decay (<= 0)
  const float* beta = nullptr;  // [n_tokens, n_v_heads] in (0, 1)
  float* state = nullptr;       // [n_v_heads, d_k, d_v] fp32, updated in place
  float* out = nullptr;         // [n_tokens, n_v_heads, d_v]
  int64_t n_tokens = 0;
  int64_t n_k_heads = 0;
  int64_t n_v_heads = 0;
  int64_t d_k = 0;
  int64_t d_v = 0;
};

constexpr int64_t kGdnChunk = 64;  // C of the chunked form

// Workspace bytes for either form with chunk size `chunk`, on up to n_threads threads.
size_t gated_delta_workspace_bytes(int64_t d_k, int64_t d_v, int n_threads, int64_t chunk = kGdnChunk);

// Token-by-token recurrence (decode): S ← e^g S; δ = β (v − Sᵀk); S += k δᵀ; o = Sᵀq.
void gated_delta_recurrent(const GatedDeltaArgs& a, float* workspace, ThreadPool& pool);

// The chunked (WY / UT-transform) form, equal to the recurrence up to rounding; cost
// O(n·(chunk·d + d²)) per head, sequential only in the state between chunks.
void gated_delta_chunked(const GatedDeltaArgs& a, float* workspace, ThreadPool& pool, int64_t chunk = kGdnChunk);

// ---- the same with the kernels of a given instruction set (tests compare the twins) ---------

void gated_delta_recurrent_with(Isa isa, const GatedDeltaArgs& a, float* workspace, ThreadPool& pool);
void gated_delta_chunked_with(Isa isa, const GatedDeltaArgs& a, float* workspace, ThreadPool& pool,
                              int64_t chunk = kGdnChunk);

// One v-head's kernels (gated_delta_impl.h compiled per ISA). ws: one thread's workspace.
struct GdnHeadKernels {
  void (*recurrent)(const GatedDeltaArgs& a, int64_t head, float* ws);
  void (*chunked)(const GatedDeltaArgs& a, int64_t head, int64_t chunk, float* ws);
};
GdnHeadKernels gdn_head_kernels_generic();  // gated_delta.cpp
GdnHeadKernels gdn_head_kernels_avx2();     // gated_delta_avx2.cpp

}  // namespace keel::cpu
