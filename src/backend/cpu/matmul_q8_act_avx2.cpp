// AVX2 twins of the fast path's activation quantizers (matmul_q8.cpp; compiled with -mavx2 -mfma,
// reached only where isa_supported(Isa::avx2)). They give the scalar twins' quants, scales and
// sums bit for bit: each value times the inverse scale is one IEEE multiply (no FMA is formed:
// the products are rounded to integers by vcvtps2dq, to nearest even, as quant's nearest_int
// rounds them), and the scales are the same scalar divisions. The scalar path, one token at a
// time through an intermediate GGUF block, was 4.7% of a 4096-token prefill (Sapphire Rapids VM,
// Qwen3-0.6B-shaped Q8_0).
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "backend/cpu/matmul_q8.h"
#include "quant/blocks.h"

namespace keel::cpu {
namespace {

inline __m256 abs8(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

inline int hsum8(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// The largest magnitude of x[0 .. 8 n_vec), in four chains of maxima (one chain waited on each
// vmaxps): vmaxps returns its second operand where either is a NaN, so a NaN in x is passed over
// as std::max(amax, |x|) passes it.
inline float max_magnitude(const float* x, int n_vec) {
  __m256 m[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  int v = 0;
  for (; v + 4 <= n_vec; v += 4)
    for (int u = 0; u < 4; ++u) m[u] = _mm256_max_ps(abs8(_mm256_loadu_ps(x + 8 * (v + u))), m[u]);
  for (; v < n_vec; ++v) m[0] = _mm256_max_ps(abs8(_mm256_loadu_ps(x + 8 * v)), m[0]);
  return hmax8(_mm256_max_ps(_mm256_max_ps(m[0], m[1]), _mm256_max_ps(m[2], m[3])));
}

// The index of the first of x[0 .. kQ8BlockK) whose magnitude is amax, the last index where none
// is (a NaN amax): the scalar twin's `while (!(fabs(x[i]) == amax) && i + 1 < 256) ++i`, 8 at a
// time (an ordered comparison, false for a NaN, as ==).
inline int first_of_magnitude(const float* x, float amax) {
  const __m256 m = _mm256_set1_ps(amax);
  for (int v = 0; v < kQ8BlockK / 8; ++v) {
    const int hits = _mm256_movemask_ps(_mm256_cmp_ps(abs8(_mm256_loadu_ps(x + 8 * v)), m, _CMP_EQ_OQ));
    if (hits != 0) return 8 * v + __builtin_ctz(static_cast<unsigned>(hits));
  }
  return kQ8BlockK - 1;
}

// 32 int32 quants (4 vectors, each in [-128, 127]) as 32 bytes in order, in the form asked for.
inline __m256i to_bytes(const __m256i (&q)[4], Q8ActForm form) {
  const __m256i w01 = _mm256_packs_epi32(q[0], q[1]), w23 = _mm256_packs_epi32(q[2], q[3]);
  __m256i b = _mm256_packs_epi16(w01, w23);  // 32-bit groups in the order 0 2 4 6 1 3 5 7
  b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  return form == Q8ActForm::signed_q ? b : _mm256_xor_si256(b, _mm256_set1_epi8(static_cast<char>(0x80)));
}

// 32 values times inv, rounded to integers (in 4 vectors), and their sum.
inline int quantize32(const float* x, __m256 inv, __m256i (&q)[4]) {
  __m256i sum = _mm256_setzero_si256();
  for (int v = 0; v < 4; ++v) {
    q[v] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * v), inv));
    sum = _mm256_add_epi32(sum, q[v]);
  }
  return hsum8(sum);
}

}  // namespace

void quantize_row_act_q8_0_avx2(const float* x, int64_t n_in, Q8ActForm form, ActBlockQ8* act) {
  for (int64_t k0 = 0; k0 < n_in; k0 += kQ8BlockK, ++act) {
    const int64_t kc = std::min(kQ8BlockK, n_in - k0);
    for (int64_t b = 0; b < kc / quant::QK8_0; ++b) {
      const float* xb = x + k0 + 32 * b;
      const float amax = max_magnitude(xb, 4);
      const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
      const float d = quant::f16_to_f32(quant::f32_to_f16(amax / 127.0f));
      __m256i q[4];
      const int sum = quantize32(xb, _mm256_set1_ps(id), q);
      const __m256i bytes = to_bytes(q, form);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(act->q + 32 * b), bytes);
      if (form == Q8ActForm::offset_q16) {
        const __m256i s = to_bytes(q, Q8ActForm::signed_q);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(act->q16 + 32 * b), _mm256_cvtepi8_epi16(_mm256_castsi256_si128(s)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(act->q16 + 32 * b + 16),
                            _mm256_cvtepi8_epi16(_mm256_extracti128_si256(s, 1)));
      }
      act->d[b] = d;
      act->dsum[b] = d * static_cast<float>(sum);
    }
  }
}

void quantize_row_act_q8_k_avx2(const float* x, int64_t n_in, int group, Q8ActForm form, ActBlockQ8* act) {
  for (int64_t k0 = 0; k0 < n_in; k0 += kQ8BlockK, ++act) {
    const float* xb = x + k0;
    const float amax = max_magnitude(xb, kQ8BlockK / 8);
    if (amax == 0.0f) {  // quantize_row_q8_k's zero block: quants, d and sums 0
      const __m256i zero = form == Q8ActForm::signed_q ? _mm256_setzero_si256() : _mm256_set1_epi8(static_cast<char>(0x80));
      for (int v = 0; v < kQ8BlockK / 32; ++v) _mm256_storeu_si256(reinterpret_cast<__m256i*>(act->q + 32 * v), zero);
      for (int g = 0; g < quant::QK_K / group; ++g) act->d[g] = act->dsum[g] = 0.0f;
      continue;
    }
    const float iscale = -127.0f / xb[first_of_magnitude(xb, amax)];  // the first one's sign sets the scale's
    const float d = 1.0f / iscale;
    int sum16[kQ8BlockK / 16];
    for (int v = 0; v < kQ8BlockK / 32; ++v) {
      __m256i q[4];
      for (int u = 0; u < 4; ++u) {
        q[u] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 32 * v + 8 * u), _mm256_set1_ps(iscale)));
        q[u] = _mm256_min_epi32(q[u], _mm256_set1_epi32(127));
      }
      sum16[2 * v] = hsum8(_mm256_add_epi32(q[0], q[1]));
      sum16[2 * v + 1] = hsum8(_mm256_add_epi32(q[2], q[3]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(act->q + 32 * v), to_bytes(q, form));
    }
    const int per = group / 16;  // 16-input sums per group
    for (int g = 0; g < quant::QK_K / group; ++g) {
      int sum = 0;
      for (int i = 0; i < per; ++i) sum += sum16[g * per + i];
      act->d[g] = d;
      act->dsum[g] = d * static_cast<float>(sum);
    }
  }
}

}  // namespace keel::cpu
