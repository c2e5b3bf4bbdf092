// AVX2/FMA/F16C twins of the attention kernels (compiled with -mavx2 -mfma -mf16c; reached only
// after the runtime check in attention_kernels_for()).
#include <immintrin.h>

#include "backend/cpu/attention_kernels.h"
#include "backend/cpu/attention_simd.h"
#include "backend/cpu/simd_avx2.h"

namespace keel::cpu {
namespace {

void f16_to_f32_avx2(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}

void f32_to_f16_avx2(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT);
}

// Strips of 16 rows, tiles of 6 keys: 12 accumulators of the 16 registers.
void scores_rows_avx2(const float* qt, int64_t ldq, int n_rows, const float* keys, int64_t n_keys, int hd, float* st,
                      int64_t lds) {
  for (int r = 0; r < n_rows; r += 16) scores_strip<F32x8, 6, 2>(qt + r, ldq, keys, n_keys, hd, st + r, lds);
}

}  // namespace

const AttentionKernels& attention_kernels_avx2() {
  // Per row, then row blocks (accumulator tiles of 6 dims x 2 vectors: 12 of the 16 registers).
  using V = F32x8;
  static const AttentionKernels k{scores_simd<V>,       exp_sum_simd<V>,     accumulate_simd<V>,
                                  f16_to_f32_avx2,      scores_f16_simd<V>,  accumulate_f16_simd<V>,
                                  scores_q8_simd<V>,    accumulate_q8_simd<V>,
                                  f32_to_f16_avx2,      scores_rows_avx2,    softmax_rows_simd<V>,
                                  accumulate_row_tiles<V, 6, 2>};
  return k;
}

}  // namespace keel::cpu
