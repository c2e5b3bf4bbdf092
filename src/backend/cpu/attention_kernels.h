// The inner kernels of CPU flash attention, as a table so the AVX2 twins (attention_avx2.cpp)
// and the scalar references (attention.cpp) share one driver and can be compared in tests.
#pragma once
#include <cstdint>

namespace keel::cpu {

// Query rows handled together by the score and accumulate kernels (they share each K/V load).
constexpr int kAttentionRows = 4;

struct AttentionKernels {
  // For r < n_q (<= kAttentionRows), j < n_keys: scores[r * lds + j] = scale * Σ_i q[r][i] *
  // kt[i * ldk + j], with the K tile transposed: kt [hd][ldk] (columns >= n_keys are not read).
  void (*scores)(const float* const* q, int n_q, const float* kt, int64_t ldk, int64_t n_keys, int hd,
                 float scale, float* scores, int64_t lds);
  // scores[j] = exp(scores[j] - max) in place; returns the sum.
  float (*exp_sum)(float* scores, int64_t n, float max);
  // For r < n_q (<= kAttentionRows): acc[r*hd + i] = acc[r*hd + i] * correction[r] +
  // Σ_{j < n_keys} p[r * ldp + j] * values[j*hd + i].
  void (*accumulate)(float* acc, const float* correction, const float* p, int64_t ldp, int n_q,
                     const float* values, int64_t n_keys, int hd);
  // f16 rows -> f32 (K/V tiles of an f16 cache)
  void (*f16_to_f32)(const uint16_t* src, float* dst, int64_t n);
};

const AttentionKernels& attention_kernels_generic();
const AttentionKernels& attention_kernels_avx2();    // only when the CPU has AVX2 + FMA + F16C
const AttentionKernels& attention_kernels_avx512();  // only with AVX-512F, head sizes % 16 == 0
// The fastest table for a head size on this CPU.
const AttentionKernels& attention_kernels_for(int head_dim);

}  // namespace keel::cpu
