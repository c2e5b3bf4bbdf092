// AVX-512F twins of the attention kernels (compiled with -mavx512f; reached only after the
// runtime check in attention_kernels_for(), for head sizes that are a multiple of 16).
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "backend/cpu/attention_kernels.h"

namespace keel::cpu {
namespace {

// exp(x) for x <= 0 (score - max): x = n ln2 + r, degree-6 polynomial for e^r, 2^n in the exponent.
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
}

// Four query rows × 32 keys per pass: 8 accumulators, each K load feeds 4 FMAs (q broadcast).
template <int kRows>
void scores_rows(const float* const* q, const float* kt, int64_t ldk, int64_t n_keys, int hd, float scale,
                 float* out, int64_t lds) {
  const __m512 sc = _mm512_set1_ps(scale);
  for (int64_t j = 0; j < n_keys; j += 32) {
    const int64_t n = std::min<int64_t>(32, n_keys - j);
    const __mmask16 m0 = n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
    const __mmask16 m1 = n >= 32 ? __mmask16(0xFFFF) : n <= 16 ? __mmask16(0) : __mmask16((1u << (n - 16)) - 1);
    __m512 a[kRows][2];
    for (int r = 0; r < kRows; ++r) a[r][0] = a[r][1] = _mm512_setzero_ps();
    const float* k = kt + j;
    for (int i = 0; i < hd; ++i, k += ldk) {
      const __m512 k0 = _mm512_maskz_loadu_ps(m0, k), k1 = _mm512_maskz_loadu_ps(m1, k + 16);
      for (int r = 0; r < kRows; ++r) {
        const __m512 qv = _mm512_set1_ps(q[r][i]);
        a[r][0] = _mm512_fmadd_ps(qv, k0, a[r][0]);
        a[r][1] = _mm512_fmadd_ps(qv, k1, a[r][1]);
      }
    }
    for (int r = 0; r < kRows; ++r) {
      _mm512_mask_storeu_ps(out + r * lds + j, m0, _mm512_mul_ps(a[r][0], sc));
      _mm512_mask_storeu_ps(out + r * lds + j + 16, m1, _mm512_mul_ps(a[r][1], sc));
    }
  }
}

void scores_avx512(const float* const* q, int n_q, const float* kt, int64_t ldk, int64_t n_keys, int hd,
                   float scale, float* out, int64_t lds) {
  switch (n_q) {
    case 1: return scores_rows<1>(q, kt, ldk, n_keys, hd, scale, out, lds);
    case 2: return scores_rows<2>(q, kt, ldk, n_keys, hd, scale, out, lds);
    case 3: return scores_rows<3>(q, kt, ldk, n_keys, hd, scale, out, lds);
    default: return scores_rows<4>(q, kt, ldk, n_keys, hd, scale, out, lds);
  }
}

float exp_sum_avx512(float* s, int64_t n, float max) {
  const __m512 m = _mm512_set1_ps(max);
  __m512 sum = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(s + j), m));
    _mm512_storeu_ps(s + j, e);
    sum = _mm512_add_ps(sum, e);
  }
  float total = _mm512_reduce_add_ps(sum);
  for (; j < n; ++j) {
    s[j] = std::exp(s[j] - max);
    total += s[j];
  }
  return total;
}

// Four query rows × 64 outputs per pass: 16 accumulators, each V load feeds 4 FMAs.
template <int kRows>
void accumulate_rows(float* acc, const float* correction, const float* p, int64_t ldp, const float* values,
                     int64_t n_keys, int hd) {
  int i = 0;
  for (; i + 64 <= hd; i += 64) {
    __m512 a[kRows][4];
    for (int r = 0; r < kRows; ++r) {
      const __m512 c = _mm512_set1_ps(correction[r]);
      for (int u = 0; u < 4; ++u) a[r][u] = _mm512_mul_ps(_mm512_loadu_ps(acc + r * hd + i + 16 * u), c);
    }
    for (int64_t j = 0; j < n_keys; ++j) {
      const float* v = values + j * hd + i;
      const __m512 v0 = _mm512_loadu_ps(v), v1 = _mm512_loadu_ps(v + 16), v2 = _mm512_loadu_ps(v + 32),
                   v3 = _mm512_loadu_ps(v + 48);
      for (int r = 0; r < kRows; ++r) {
        const __m512 pj = _mm512_set1_ps(p[r * ldp + j]);
        a[r][0] = _mm512_fmadd_ps(pj, v0, a[r][0]);
        a[r][1] = _mm512_fmadd_ps(pj, v1, a[r][1]);
        a[r][2] = _mm512_fmadd_ps(pj, v2, a[r][2]);
        a[r][3] = _mm512_fmadd_ps(pj, v3, a[r][3]);
      }
    }
    for (int r = 0; r < kRows; ++r)
      for (int u = 0; u < 4; ++u) _mm512_storeu_ps(acc + r * hd + i + 16 * u, a[r][u]);
  }
  for (; i < hd; i += 16) {
    for (int r = 0; r < kRows; ++r) {
      __m512 a = _mm512_mul_ps(_mm512_loadu_ps(acc + r * hd + i), _mm512_set1_ps(correction[r]));
      for (int64_t j = 0; j < n_keys; ++j)
        a = _mm512_fmadd_ps(_mm512_set1_ps(p[r * ldp + j]), _mm512_loadu_ps(values + j * hd + i), a);
      _mm512_storeu_ps(acc + r * hd + i, a);
    }
  }
}

void accumulate_avx512(float* acc, const float* correction, const float* p, int64_t ldp, int n_q,
                       const float* values, int64_t n_keys, int hd) {
  switch (n_q) {
    case 1: return accumulate_rows<1>(acc, correction, p, ldp, values, n_keys, hd);
    case 2: return accumulate_rows<2>(acc, correction, p, ldp, values, n_keys, hd);
    case 3: return accumulate_rows<3>(acc, correction, p, ldp, values, n_keys, hd);
    default: return accumulate_rows<4>(acc, correction, p, ldp, values, n_keys, hd);
  }
}

void f16_to_f32_avx512(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}

}  // namespace

const AttentionKernels& attention_kernels_avx512() {
  static const AttentionKernels k{scores_avx512, exp_sum_avx512, accumulate_avx512, f16_to_f32_avx512};
  return k;
}

}  // namespace keel::cpu
