// The inner kernels of CPU flash attention, as a table so the SIMD twins (attention_avx2.cpp,
// attention_avx512.cpp, attention_neon.cpp) and the scalar references (attention.cpp) share one
// driver and can be compared in tests.
#pragma once
#include <cstdint>

namespace keel::cpu {

struct AttentionKernels {
  // scores[j] = scale * dot(q, keys + j*hd) for j < n_keys; returns max(scores).
  float (*scores)(const float* q, const float* keys, int64_t n_keys, int hd, float scale, float* scores);
  // scores[j] = exp(scores[j] - max) in place; returns the sum.
  float (*exp_sum)(float* scores, int64_t n, float max);
  // acc[i] = acc[i] * correction + sum_j p[j] * values[j*hd + i]
  void (*accumulate)(float* acc, float correction, const float* p, const float* values, int64_t n_keys, int hd);
  // f16 rows -> f32 (K/V tiles of an f16 cache)
  void (*f16_to_f32)(const uint16_t* src, float* dst, int64_t n);
};

const AttentionKernels& attention_kernels_generic();
const AttentionKernels& attention_kernels_avx2();    // only when the CPU has AVX2 + FMA + F16C
const AttentionKernels& attention_kernels_avx512();  // only with AVX-512F, head sizes % 16 == 0
const AttentionKernels& attention_kernels_neon();    // AArch64 only, head sizes % 4 == 0
// The fastest table for a head size on this CPU.
const AttentionKernels& attention_kernels_for(int head_dim);

}  // namespace keel::cpu
