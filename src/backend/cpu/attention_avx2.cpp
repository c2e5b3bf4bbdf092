// AVX2/FMA/F16C twins of the attention kernels (compiled with -mavx2 -mfma -mf16c; reached only
// after the runtime check in attention_kernels_for()).
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "backend/cpu/attention_kernels.h"
#include "backend/cpu/simd_avx2.h"

namespace keel::cpu {
namespace {



// Masks for the last partial vector of 8 keys.
inline __m256i tail_mask(int64_t n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<int64_t>(n, 8))), idx);
}

// Four query rows × 16 keys per pass: 8 accumulators, each K load feeds 4 FMAs (q broadcast).
template <int kRows>
void scores_rows(const float* const* q, const float* kt, int64_t ldk, int64_t n_keys, int hd, float scale,
                 float* out, int64_t lds) {
  const __m256 sc = _mm256_set1_ps(scale);
  for (int64_t j = 0; j < n_keys; j += 16) {
    const int64_t n = std::min<int64_t>(16, n_keys - j);
    const __m256i m0 = tail_mask(n), m1 = tail_mask(std::max<int64_t>(n - 8, 0));
    __m256 a[kRows][2];
    for (int r = 0; r < kRows; ++r) a[r][0] = a[r][1] = _mm256_setzero_ps();
    const float* k = kt + j;
    for (int i = 0; i < hd; ++i, k += ldk) {
      const __m256 k0 = _mm256_maskload_ps(k, m0), k1 = _mm256_maskload_ps(k + 8, m1);
      for (int r = 0; r < kRows; ++r) {
        const __m256 qv = _mm256_broadcast_ss(q[r] + i);
        a[r][0] = _mm256_fmadd_ps(qv, k0, a[r][0]);
        a[r][1] = _mm256_fmadd_ps(qv, k1, a[r][1]);
      }
    }
    for (int r = 0; r < kRows; ++r) {
      _mm256_maskstore_ps(out + r * lds + j, m0, _mm256_mul_ps(a[r][0], sc));
      _mm256_maskstore_ps(out + r * lds + j + 8, m1, _mm256_mul_ps(a[r][1], sc));
    }
  }
}

void scores_avx2(const float* const* q, int n_q, const float* kt, int64_t ldk, int64_t n_keys, int hd,
                 float scale, float* out, int64_t lds) {
  switch (n_q) {
    case 1: return scores_rows<1>(q, kt, ldk, n_keys, hd, scale, out, lds);
    case 2: return scores_rows<2>(q, kt, ldk, n_keys, hd, scale, out, lds);
    case 3: return scores_rows<3>(q, kt, ldk, n_keys, hd, scale, out, lds);
    default: return scores_rows<4>(q, kt, ldk, n_keys, hd, scale, out, lds);
  }
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
  float total = hsum_avx2(sum);
  for (; j < n; ++j) {
    s[j] = std::exp(s[j] - max);
    total += s[j];
  }
  return total;
}

// Four query rows × 16 outputs per pass: 8 accumulators, each V load feeds 4 FMAs.
template <int kRows>
void accumulate_rows(float* acc, const float* correction, const float* p, int64_t ldp, const float* values,
                     int64_t n_keys, int hd) {
  int i = 0;
  for (; i + 16 <= hd; i += 16) {
    __m256 a[kRows][2];
    for (int r = 0; r < kRows; ++r) {
      const __m256 c = _mm256_set1_ps(correction[r]);
      a[r][0] = _mm256_mul_ps(_mm256_loadu_ps(acc + r * hd + i), c);
      a[r][1] = _mm256_mul_ps(_mm256_loadu_ps(acc + r * hd + i + 8), c);
    }
    for (int64_t j = 0; j < n_keys; ++j) {
      const float* v = values + j * hd + i;
      const __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8);
      for (int r = 0; r < kRows; ++r) {
        const __m256 pj = _mm256_broadcast_ss(p + r * ldp + j);
        a[r][0] = _mm256_fmadd_ps(pj, v0, a[r][0]);
        a[r][1] = _mm256_fmadd_ps(pj, v1, a[r][1]);
      }
    }
    for (int r = 0; r < kRows; ++r) {
      _mm256_storeu_ps(acc + r * hd + i, a[r][0]);
      _mm256_storeu_ps(acc + r * hd + i + 8, a[r][1]);
    }
  }
  for (; i < hd; i += 8) {  // hd % 16 == 8
    for (int r = 0; r < kRows; ++r) {
      __m256 a = _mm256_mul_ps(_mm256_loadu_ps(acc + r * hd + i), _mm256_set1_ps(correction[r]));
      for (int64_t j = 0; j < n_keys; ++j)
        a = _mm256_fmadd_ps(_mm256_broadcast_ss(p + r * ldp + j), _mm256_loadu_ps(values + j * hd + i), a);
      _mm256_storeu_ps(acc + r * hd + i, a);
    }
  }
}

void accumulate_avx2(float* acc, const float* correction, const float* p, int64_t ldp, int n_q,
                     const float* values, int64_t n_keys, int hd) {
  switch (n_q) {
    case 1: return accumulate_rows<1>(acc, correction, p, ldp, values, n_keys, hd);
    case 2: return accumulate_rows<2>(acc, correction, p, ldp, values, n_keys, hd);
    case 3: return accumulate_rows<3>(acc, correction, p, ldp, values, n_keys, hd);
    default: return accumulate_rows<4>(acc, correction, p, ldp, values, n_keys, hd);
  }
}

void f16_to_f32_avx2(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}

}  // namespace

const AttentionKernels& attention_kernels_avx2() {
  static const AttentionKernels k{scores_avx2, exp_sum_avx2, accumulate_avx2, f16_to_f32_avx2};
  return k;
}

}  // namespace keel::cpu
