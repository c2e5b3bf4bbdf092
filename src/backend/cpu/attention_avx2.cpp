// AVX2/FMA/F16C twins of the attention kernels (compiled with -mavx2 -mfma -mf16c; reached only
// after the runtime check in attention_kernels_for()).
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "backend/cpu/attention_kernels.h"
#include "backend/cpu/attention_tiles.h"
#include "backend/cpu/simd_avx2.h"

namespace keel::cpu {
namespace {

// Scores are finite: plain comparisons (std::fmax is an out-of-line libm call here).
inline float max4(float a, float b, float c, float d) { return std::max(std::max(a, b), std::max(c, d)); }

inline float hsum(__m256 v) { return hsum_avx2(v); }


float scores_avx2(const float* q, const float* keys, int64_t n_keys, int hd, float scale, float* out) {
  float mx = -INFINITY;
  int64_t j = 0;
  for (; j + 4 <= n_keys; j += 4) {  // four keys share each load of q
    const float* k0 = keys + j * hd;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int i = 0; i < hd; i += 8) {
      const __m256 qv = _mm256_loadu_ps(q + i);
      a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + i), a0);
      a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + hd + i), a1);
      a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 2 * hd + i), a2);
      a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 3 * hd + i), a3);
    }
    out[j] = hsum(a0) * scale;
    out[j + 1] = hsum(a1) * scale;
    out[j + 2] = hsum(a2) * scale;
    out[j + 3] = hsum(a3) * scale;
    mx = max4(mx, out[j], out[j + 1], std::max(out[j + 2], out[j + 3]));
  }
  for (; j < n_keys; ++j) {
    const float* k = keys + j * hd;
    __m256 a = _mm256_setzero_ps();
    for (int i = 0; i < hd; i += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), a);
    out[j] = hsum(a) * scale;
    mx = std::max(mx, out[j]);
  }
  return mx;
}

float exp_sum_avx2(float* s, int64_t n, float max) {
  const __m256 m = _mm256_set1_ps(max);
  __m256 sum = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + j), m));
    _mm256_storeu_ps(s + j, e);
    sum = _mm256_add_ps(sum, e);
  }
  float total = hsum(sum);
  for (; j < n; ++j) {
    s[j] = std::exp(s[j] - max);
    total += s[j];
  }
  return total;
}

void accumulate_avx2(float* acc, float correction, const float* p, const float* values, int64_t n_keys, int hd) {
  const __m256 c = _mm256_set1_ps(correction);
  for (int i = 0; i < hd; i += 32) {  // 4 accumulators of 8 stay in registers over all keys
    const int width = hd - i >= 32 ? 32 : hd - i;
    if (width == 32) {
      __m256 a0 = _mm256_mul_ps(_mm256_loadu_ps(acc + i), c);
      __m256 a1 = _mm256_mul_ps(_mm256_loadu_ps(acc + i + 8), c);
      __m256 a2 = _mm256_mul_ps(_mm256_loadu_ps(acc + i + 16), c);
      __m256 a3 = _mm256_mul_ps(_mm256_loadu_ps(acc + i + 24), c);
      for (int64_t j = 0; j < n_keys; ++j) {
        const __m256 pj = _mm256_set1_ps(p[j]);
        const float* v = values + j * hd + i;
        a0 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v), a0);
        a1 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 8), a1);
        a2 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 16), a2);
        a3 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 24), a3);
      }
      _mm256_storeu_ps(acc + i, a0);
      _mm256_storeu_ps(acc + i + 8, a1);
      _mm256_storeu_ps(acc + i + 16, a2);
      _mm256_storeu_ps(acc + i + 24, a3);
    } else {
      for (int k = i; k < hd; k += 8) {
        __m256 a = _mm256_mul_ps(_mm256_loadu_ps(acc + k), c);
        for (int64_t j = 0; j < n_keys; ++j)
          a = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), _mm256_loadu_ps(values + j * hd + k), a);
        _mm256_storeu_ps(acc + k, a);
      }
    }
  }
}

void f16_to_f32_avx2(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}

// ---- row blocks (prefill): query rows along the lanes ----

// Strips of 16 rows, tiles of 6 keys: 12 accumulators of the 16 registers.
void scores_rows_avx2(const float* qt, int64_t ldq, int n_rows, const float* keys, int64_t n_keys, int hd, float* st,
                      int64_t lds) {
  for (int r = 0; r < n_rows; r += 16) scores_strip<F32x8, 6, 2>(qt + r, ldq, keys, n_keys, hd, st + r, lds);
}

void softmax_rows_avx2(float* st, int64_t lds, int n_rows, int64_t n_keys, int64_t first_visible, int group, float* m,
                       float* l, float* correction) {
  for (int r0 = 0; r0 < n_rows; r0 += 8) {
    alignas(32) int32_t visible[8];  // keys j < visible[lane] are seen by row r0 + lane
    for (int i = 0; i < 8; ++i)
      visible[i] = static_cast<int32_t>(std::clamp<int64_t>(first_visible + (r0 + i) / group, 0, n_keys));
    const __m256i vis = _mm256_load_si256(reinterpret_cast<const __m256i*>(visible));
    __m256 mx = _mm256_set1_ps(-INFINITY);
    for (int64_t j = 0; j < n_keys; ++j) {
      const __m256 seen =
          _mm256_castsi256_ps(_mm256_cmpgt_epi32(vis, _mm256_set1_epi32(static_cast<int32_t>(j))));
      mx = _mm256_blendv_ps(mx, _mm256_max_ps(mx, _mm256_loadu_ps(st + j * lds + r0)), seen);
    }
    const __m256 m_old = _mm256_loadu_ps(m + r0);
    const __m256 m_new = _mm256_max_ps(m_old, mx);
    const __m256 c = exp_avx2(_mm256_sub_ps(m_old, m_new));
    __m256 sum = _mm256_setzero_ps();
    for (int64_t j = 0; j < n_keys; ++j) {
      const __m256 seen =
          _mm256_castsi256_ps(_mm256_cmpgt_epi32(vis, _mm256_set1_epi32(static_cast<int32_t>(j))));
      float* s = st + j * lds + r0;
      const __m256 p = _mm256_and_ps(seen, exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(s), m_new)));
      _mm256_storeu_ps(s, p);
      sum = _mm256_add_ps(sum, p);
    }
    _mm256_storeu_ps(l + r0, _mm256_fmadd_ps(_mm256_loadu_ps(l + r0), c, sum));
    _mm256_storeu_ps(m + r0, m_new);
    _mm256_storeu_ps(correction + r0, c);
  }
}

}  // namespace

const AttentionKernels& attention_kernels_avx2() {
  static const AttentionKernels k{scores_avx2,      exp_sum_avx2,      accumulate_avx2,     f16_to_f32_avx2,
                                  scores_rows_avx2, softmax_rows_avx2, accumulate_row_tiles<F32x8, 4, 2>};
  return k;
}

}  // namespace keel::cpu
