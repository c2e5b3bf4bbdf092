// AVX-512 VNNI micro-kernel of the fast path (compiled with -mavx512{f,bw,vl,vnni}; reached only
// when cpu_has_avx512_vnni()). One zmm holds 4 inputs of the panel's 16 rows; vpdpbusd multiplies
// it with 4 broadcast activation bytes of a token and adds into 16 int32 row sums, so a group of
// 32 inputs is 8 instructions per token. Four tokens share each weight load.
#include <immintrin.h>

#include <cstring>

#include "backend/cpu/matmul_q8.h"

namespace keel::cpu {
namespace {

inline __m512i bcast4(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

inline void store_row(float* y, __m512 v, int n_rows, bool accumulate) {
  const __mmask16 mask = n_rows >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n_rows) - 1);
  if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, y));
  _mm512_mask_storeu_ps(y, mask, v);
}

template <int kGroup, bool kMin>
void micro_vnni_impl(const PanelQ8& p, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok,
                     float* y, int64_t ldy, int n_rows, bool accumulate) {
  constexpr int kQuads = kGroup / 4;
  const int n_groups = static_cast<int>(kc / kGroup);
  // Missing tokens of a partial tile read token 0 and are not stored.
  const ActBlockQ8* a0 = x;
  const ActBlockQ8* a1 = n_tok > 1 ? x + ldx : x;
  const ActBlockQ8* a2 = n_tok > 2 ? x + 2 * ldx : x;
  const ActBlockQ8* a3 = n_tok > 3 ? x + 3 * ldx : x;
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (int g = 0; g < n_groups; ++g) {
    const int8_t* wq = &p.q[g * kQuads][0][0];
    const int k = g * kGroup;
    const __m512i off = _mm512_load_si512(p.offset[g]);
    __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0;
    __m512i e0 = c0, e1 = c0, e2 = c0, e3 = c0;  // odd quads: two chains per token
    for (int i = 0; i < kQuads; i += 2) {
      const __m512i w0 = _mm512_load_si512(wq + 64 * i), w1 = _mm512_load_si512(wq + 64 * (i + 1));
      c0 = _mm512_dpbusd_epi32(c0, bcast4(a0->q + k + 4 * i), w0);
      c1 = _mm512_dpbusd_epi32(c1, bcast4(a1->q + k + 4 * i), w0);
      c2 = _mm512_dpbusd_epi32(c2, bcast4(a2->q + k + 4 * i), w0);
      c3 = _mm512_dpbusd_epi32(c3, bcast4(a3->q + k + 4 * i), w0);
      e0 = _mm512_dpbusd_epi32(e0, bcast4(a0->q + k + 4 * i + 4), w1);
      e1 = _mm512_dpbusd_epi32(e1, bcast4(a1->q + k + 4 * i + 4), w1);
      e2 = _mm512_dpbusd_epi32(e2, bcast4(a2->q + k + 4 * i + 4), w1);
      e3 = _mm512_dpbusd_epi32(e3, bcast4(a3->q + k + 4 * i + 4), w1);
    }
    const __m512 sc = _mm512_load_ps(p.scale[g]);
    const auto group_sum = [&](__m512i c, __m512i e) {
      return _mm512_mul_ps(sc, _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_add_epi32(c, e), off)));
    };
    s0 = _mm512_fmadd_ps(_mm512_set1_ps(a0->d[g]), group_sum(c0, e0), s0);
    s1 = _mm512_fmadd_ps(_mm512_set1_ps(a1->d[g]), group_sum(c1, e1), s1);
    s2 = _mm512_fmadd_ps(_mm512_set1_ps(a2->d[g]), group_sum(c2, e2), s2);
    s3 = _mm512_fmadd_ps(_mm512_set1_ps(a3->d[g]), group_sum(c3, e3), s3);
    if constexpr (kMin) {
      const __m512 mn = _mm512_load_ps(p.min[g]);
      s0 = _mm512_fnmadd_ps(_mm512_set1_ps(a0->dsum[g]), mn, s0);
      s1 = _mm512_fnmadd_ps(_mm512_set1_ps(a1->dsum[g]), mn, s1);
      s2 = _mm512_fnmadd_ps(_mm512_set1_ps(a2->dsum[g]), mn, s2);
      s3 = _mm512_fnmadd_ps(_mm512_set1_ps(a3->dsum[g]), mn, s3);
    }
  }
  store_row(y, s0, n_rows, accumulate);
  if (n_tok > 1) store_row(y + ldy, s1, n_rows, accumulate);
  if (n_tok > 2) store_row(y + 2 * ldy, s2, n_rows, accumulate);
  if (n_tok > 3) store_row(y + 3 * ldy, s3, n_rows, accumulate);
}

void micro_vnni(const PanelQ8& p, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok, float* y,
                int64_t ldy, int n_rows, bool accumulate) {
  static_assert(kQ8Rows == 16 && kQ8Tokens == 4, "the kernel is written for 16 rows x 4 tokens");
  if (p.group == 16)
    micro_vnni_impl<16, false>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
  else if (p.has_min)
    micro_vnni_impl<32, true>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
  else
    micro_vnni_impl<32, false>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
}

}  // namespace

Q8MicroFn q8_micro_vnni() { return micro_vnni; }

}  // namespace keel::cpu
