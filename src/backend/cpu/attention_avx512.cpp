// AVX-512F twins of the attention kernels (compiled with -mavx512f; reached only after the
// runtime check in attention_kernels_for(), for head sizes that are a multiple of 16).
// GCC 12 warns inside its own unmasked AVX-512 intrinsics (the `__Y = __Y` pass-through of
// _mm512_undefined_ps, GCC bug 105593) once they are inlined into loops; the warning is noise.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include "backend/cpu/attention_kernels.h"
#include "backend/cpu/attention_simd.h"
#include "backend/cpu/simd_avx512.h"

namespace keel::cpu {
namespace {

void f16_to_f32_avx512(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}

void f32_to_f16_avx512(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT);
}

// Strips of 32 and 16 rows, tiles of 12 keys: 24 accumulators or fewer of the 32 registers.
void scores_rows_avx512(const float* qt, int64_t ldq, int n_rows, const float* keys, int64_t n_keys, int hd,
                        float* st, int64_t lds) {
  int r = 0;
  for (; r + 32 <= n_rows; r += 32) scores_strip<F32x16, 12, 2>(qt + r, ldq, keys, n_keys, hd, st + r, lds);
  for (; r < n_rows; r += 16) scores_strip<F32x16, 12, 1>(qt + r, ldq, keys, n_keys, hd, st + r, lds);
}

}  // namespace

const AttentionKernels& attention_kernels_avx512() {
  // Per row, then row blocks (accumulator tiles of 12 dims x 2 vectors: 24 of the 32 registers).
  using V = F32x16;
  static const AttentionKernels k{scores_simd<V>,       exp_sum_simd<V>,     accumulate_simd<V>,
                                  f16_to_f32_avx512,    scores_f16_simd<V>,  accumulate_f16_simd<V>,
                                  scores_q8_simd<V>,    accumulate_q8_simd<V>,
                                  f32_to_f16_avx512, f32_to_q8_0_avx2,    scores_rows_avx512,  softmax_rows_simd<V>,
                                  accumulate_row_tiles<V, 12, 2>};
  return k;
}

}  // namespace keel::cpu
