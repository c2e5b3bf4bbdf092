// Element-wise and row-wise CPU operations of the transformer forward pass (f32).
#pragma once
#include <cstdint>

#include "backend/cpu/thread_pool.h"
#include "backend/types.h"

namespace keel::cpu {

// out[t] = x[t] * w / sqrt(mean(x[t]^2) + eps)   x, out: [n_rows, dim]; w: [dim] (may alias x/out)
void rms_norm(const float* x, const float* w, float* out, int64_t n_rows, int64_t dim, float eps);
// Σ x[i]² in double (each square exact), in 8 partial sums over i % 8 added pairwise at the end:
// the norms' shared sum, 8 independent chains instead of one (a serial double sum was 4-5% of a
// 512-token prefill of a Qwen3-0.6B shape).
double sum_of_squares(const float* x, int64_t n);

// Rotary embedding in place on x: [n_tokens, n_heads, head_dim]; rotates the first n_rot dims of
// each head of token t at position pos[t] (p.freq_factors may be null: [n_rot/2] divisors).
using RopeParams = backend::RopeParams;
void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const int32_t* pos, const RopeParams& p);
// Per token: each head of q and k RMS-normed (q_norm / k_norm; skipped when q_norm is null), then
// both rotated, the angles computed once: the same bits as rms_norm of every head, then rope of q
// and of k. q: [n_tokens, n_q_heads, head_dim], k: [n_tokens, n_kv_heads, head_dim].
void norm_rope_qk(float* q, int64_t n_q_heads, float* k, int64_t n_kv_heads, int64_t n_tokens, int64_t head_dim,
                  const float* q_norm, const float* k_norm, float eps, const int32_t* pos, const RopeParams& p);

// gate[i] = silu(gate[i]) * up[i]  (AVX2 or NEON when the CPU has it; the scalar twin is always built)
void silu_mul(float* gate, const float* up, int64_t n);
void silu_mul_generic(float* gate, const float* up, int64_t n);
// y[i] += x[i]
void add_inplace(float* y, const float* x, int64_t n);
// x[t, :] += bias for each row
void add_bias(float* x, const float* bias, int64_t n_rows, int64_t dim);

}  // namespace keel::cpu
