// AVX-512F twins of the attention kernels (compiled with -mavx512f; reached only after the
// runtime check in attention_kernels_for(), for head sizes that are a multiple of 16).
// GCC 12 warns inside its own unmasked AVX-512 intrinsics (the `__Y = __Y` pass-through of
// _mm512_undefined_ps, GCC bug 105593) once they are inlined into loops; the warning is noise.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "backend/cpu/attention_kernels.h"
#include "backend/cpu/attention_tiles.h"
#include "backend/cpu/simd_avx512.h"

namespace keel::cpu {
namespace {

// Scores are finite: plain comparisons (std::fmax is an out-of-line libm call here).
inline float max4(float a, float b, float c, float d) { return std::max(std::max(a, b), std::max(c, d)); }

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

float scores_avx512(const float* q, const float* keys, int64_t n_keys, int hd, float scale, float* out) {
  float mx = -INFINITY;
  int64_t j = 0;
  for (; j + 4 <= n_keys; j += 4) {  // four keys share each load of q
    const float* k0 = keys + j * hd;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int i = 0; i < hd; i += 16) {
      const __m512 qv = _mm512_loadu_ps(q + i);
      a0 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k0 + i), a0);
      a1 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k0 + hd + i), a1);
      a2 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k0 + 2 * hd + i), a2);
      a3 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k0 + 3 * hd + i), a3);
    }
    out[j] = _mm512_reduce_add_ps(a0) * scale;
    out[j + 1] = _mm512_reduce_add_ps(a1) * scale;
    out[j + 2] = _mm512_reduce_add_ps(a2) * scale;
    out[j + 3] = _mm512_reduce_add_ps(a3) * scale;
    mx = max4(mx, out[j], out[j + 1], std::max(out[j + 2], out[j + 3]));
  }
  for (; j < n_keys; ++j) {
    const float* k = keys + j * hd;
    __m512 a = _mm512_setzero_ps();
    for (int i = 0; i < hd; i += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), _mm512_loadu_ps(k + i), a);
    out[j] = _mm512_reduce_add_ps(a) * scale;
    mx = std::max(mx, out[j]);
  }
  return mx;
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

void accumulate_avx512(float* acc, float correction, const float* p, const float* values, int64_t n_keys, int hd) {
  const __m512 c = _mm512_set1_ps(correction);
  int i = 0;
  for (; i + 64 <= hd; i += 64) {  // 4 accumulators of 16 stay in registers over all keys
    __m512 a0 = _mm512_mul_ps(_mm512_loadu_ps(acc + i), c);
    __m512 a1 = _mm512_mul_ps(_mm512_loadu_ps(acc + i + 16), c);
    __m512 a2 = _mm512_mul_ps(_mm512_loadu_ps(acc + i + 32), c);
    __m512 a3 = _mm512_mul_ps(_mm512_loadu_ps(acc + i + 48), c);
    for (int64_t j = 0; j < n_keys; ++j) {
      const __m512 pj = _mm512_set1_ps(p[j]);
      const float* v = values + j * hd + i;
      a0 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(v), a0);
      a1 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(v + 16), a1);
      a2 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(v + 32), a2);
      a3 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(v + 48), a3);
    }
    _mm512_storeu_ps(acc + i, a0);
    _mm512_storeu_ps(acc + i + 16, a1);
    _mm512_storeu_ps(acc + i + 32, a2);
    _mm512_storeu_ps(acc + i + 48, a3);
  }
  for (; i < hd; i += 16) {
    __m512 a = _mm512_mul_ps(_mm512_loadu_ps(acc + i), c);
    for (int64_t j = 0; j < n_keys; ++j)
      a = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), _mm512_loadu_ps(values + j * hd + i), a);
    _mm512_storeu_ps(acc + i, a);
  }
}

void f16_to_f32_avx512(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}

// ---- row blocks (prefill): query rows along the lanes ----

// Strips of 32 and 16 rows, tiles of 12 keys: 24 accumulators or fewer of the 32 registers.
void scores_rows_avx512(const float* qt, int64_t ldq, int n_rows, const float* keys, int64_t n_keys, int hd,
                        float* st, int64_t lds) {
  int r = 0;
  for (; r + 32 <= n_rows; r += 32) scores_strip<F32x16, 12, 2>(qt + r, ldq, keys, n_keys, hd, st + r, lds);
  for (; r < n_rows; r += 16) scores_strip<F32x16, 12, 1>(qt + r, ldq, keys, n_keys, hd, st + r, lds);
}

void softmax_rows_avx512(float* st, int64_t lds, int n_rows, int64_t n_keys, int64_t first_visible, int group,
                         float* m, float* l, float* correction) {
  for (int r0 = 0; r0 < n_rows; r0 += 16) {
    alignas(64) int32_t visible[16];  // keys j < visible[lane] are seen by row r0 + lane
    for (int i = 0; i < 16; ++i)
      visible[i] = static_cast<int32_t>(std::clamp<int64_t>(first_visible + (r0 + i) / group, 0, n_keys));
    const __m512i vis = _mm512_load_si512(visible);
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < n_keys; ++j) {
      const __mmask16 seen = _mm512_cmpgt_epi32_mask(vis, _mm512_set1_epi32(static_cast<int32_t>(j)));
      mx = _mm512_mask_max_ps(mx, seen, mx, _mm512_loadu_ps(st + j * lds + r0));
    }
    const __m512 m_old = _mm512_loadu_ps(m + r0);
    const __m512 m_new = _mm512_max_ps(m_old, mx);
    const __m512 c = exp_nonpositive(_mm512_sub_ps(m_old, m_new));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < n_keys; ++j) {
      const __mmask16 seen = _mm512_cmpgt_epi32_mask(vis, _mm512_set1_epi32(static_cast<int32_t>(j)));
      float* s = st + j * lds + r0;
      const __m512 p = _mm512_maskz_mov_ps(seen, exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(s), m_new)));
      _mm512_storeu_ps(s, p);
      sum = _mm512_add_ps(sum, p);
    }
    _mm512_storeu_ps(l + r0, _mm512_fmadd_ps(_mm512_loadu_ps(l + r0), c, sum));
    _mm512_storeu_ps(m + r0, m_new);
    _mm512_storeu_ps(correction + r0, c);
  }
}

}  // namespace

const AttentionKernels& attention_kernels_avx512() {
  static const AttentionKernels k{scores_avx512,      exp_sum_avx512,      accumulate_avx512,     f16_to_f32_avx512,
                                  scores_rows_avx512, softmax_rows_avx512, accumulate_row_tiles<F32x16, 8, 2>};
  return k;
}

}  // namespace keel::cpu
