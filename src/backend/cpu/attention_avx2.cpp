// AVX2/FMA/F16C twins of the attention kernels (compiled with -mavx2 -mfma -mf16c; reached only
// after the runtime check in attention_kernels_for()).
#include <immintrin.h>

#include <cstring>

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

// Round half away from zero (std::lround's rule), exactly: |t| < 2^23, so t - trunc(t) is exact.
inline __m256 round_half_away(__m256 t) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 r = _mm256_round_ps(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 away = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(t, r)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
  const __m256 step = _mm256_or_ps(_mm256_and_ps(t, sign), _mm256_set1_ps(1.0f));  // ±1, t's sign
  return _mm256_add_ps(r, _mm256_and_ps(away, step));
}

// Strips of 16 rows, tiles of 6 keys: 12 accumulators of the 16 registers.
void scores_rows_avx2(const float* qt, int64_t ldq, int n_rows, const float* keys, int64_t n_keys, int hd, float* st,
                      int64_t lds) {
  for (int r = 0; r < n_rows; r += 16) scores_strip<F32x8, 6, 2>(qt + r, ldq, keys, n_keys, hd, st + r, lds);
}

}  // namespace

// quant::quantize_row_q8_0 a block at a time: the same amax, d = amax / 127 and id = 1 / d (scalar,
// as it computes them), each x * id rounded half away from zero.
void f32_to_q8_0_avx2(const float* src, void* dst, int64_t n) {
  auto* out = static_cast<uint8_t*>(dst);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t b = 0; b < n / 32; ++b, src += 32, out += 34) {
    __m256 x[4];
    __m256 mx = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      x[i] = _mm256_loadu_ps(src + 8 * i);
      mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, x[i]));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float d = _mm_cvtss_f32(m4) / 127.0f;
    const __m256 id = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
    __m256i q[4];
    for (int i = 0; i < 4; ++i) q[i] = _mm256_cvttps_epi32(round_half_away(_mm256_mul_ps(x[i], id)));
    // packs interleave the 128-bit lanes: dwords q0[0:4] q1[0:4] q2[0:4] q3[0:4] q0[4:8] ..., put back in order
    const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    const uint16_t h = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
    std::memcpy(out, &h, sizeof h);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 2),
                        _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  }
}

const AttentionKernels& attention_kernels_avx2() {
  // Per row, then row blocks (accumulator tiles of 6 dims x 2 vectors: 12 of the 16 registers).
  using V = F32x8;
  static const AttentionKernels k{scores_simd<V>,       exp_sum_simd<V>,     accumulate_simd<V>,
                                  f16_to_f32_avx2,      scores_f16_simd<V>,  accumulate_f16_simd<V>,
                                  scores_q8_simd<V>,    accumulate_q8_simd<V>,
                                  f32_to_f16_avx2, f32_to_q8_0_avx2,      scores_rows_avx2,    softmax_rows_simd<V>,
                                  accumulate_row_tiles<V, 6, 2>};
  return k;
}

}  // namespace keel::cpu
