// AVX-512 VNNI micro-kernel of the fast path (compiled with -mavx512{f,bw,vl,vnni}; reached only
// when cpu_has_avx512_vnni()). One zmm holds 4 inputs of the panel's 16 rows; vpdpbusd multiplies
// it with 4 broadcast activation bytes of a token and adds into 16 int32 row sums, so a group of
// 32 inputs is 8 instructions per token. Four tokens share each weight load.
//
// The other work per group and token competes with vpdpbusd for the same execution ports, so it is
// kept to the minimum: the integer sums start from −offset (no subtraction), and where the token's
// scale is one per block (Q8_K activations: K-quant weights), the group sums are scaled by the
// rows' scales only, and by the token's scale once per block, with the min terms summed apart:
//   y = d · Σ_g scale_g · (c_g − offset_g) − Σ_g dsum_g · min_g
// (Q4_0/Q8_0 weights: y = Σ_g d_g · (scale_g · (c_g − offset_g)), as the scalar twin.)
//
// GCC 12 warns inside _mm512_cvtepi32_ps once it is inlined into these loops (the `__Y = __Y` of
// _mm512_undefined_ps, GCC bug 105593); the warning is noise.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <cstring>

#include "backend/cpu/matmul_q8.h"
#include "backend/cpu/simd_avx512.h"

namespace keel::cpu {
namespace {

inline __m512i bcast4(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

template <int kGroup, bool kMin, bool kBlockScale>
void micro_vnni_impl(const PanelQ8& p, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok,
                     float* y, int64_t ldy, int n_rows, bool accumulate) {
  constexpr int kTok = kQ8Tokens, kQuads = kGroup / 4;
  static_assert(kBlockScale || !kMin, "min terms come with Q8_K activations");
  const int n_groups = static_cast<int>(kc / kGroup);
  // Missing tokens of a partial tile read token 0 and are not stored.
  const ActBlockQ8* a[kTok];
  for (int t = 0; t < kTok; ++t) a[t] = t < n_tok ? x + t * ldx : x;
  __m512 s[kTok], m[kTok];
  for (int t = 0; t < kTok; ++t) s[t] = m[t] = _mm512_setzero_ps();
  for (int g = 0; g < n_groups; ++g) {
    const int8_t* wq = &p.q[g * kQuads][0][0];
    const int k = g * kGroup;
    // Even and odd quads: two chains per token, the even ones started from −offset.
    const __m512i neg_off = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_load_si512(p.offset[g]));
    __m512i c[kTok], e[kTok];
    for (int t = 0; t < kTok; ++t) {
      c[t] = neg_off;
      e[t] = _mm512_setzero_si512();
    }
    for (int i = 0; i < kQuads; i += 2) {
      const __m512i w0 = _mm512_load_si512(wq + 64 * i), w1 = _mm512_load_si512(wq + 64 * (i + 1));
      for (int t = 0; t < kTok; ++t) c[t] = _mm512_dpbusd_epi32(c[t], bcast4(a[t]->q + k + 4 * i), w0);
      for (int t = 0; t < kTok; ++t) e[t] = _mm512_dpbusd_epi32(e[t], bcast4(a[t]->q + k + 4 * i + 4), w1);
    }
    const __m512 sc = _mm512_load_ps(p.scale[g]);
    for (int t = 0; t < kTok; ++t) {
      const __m512 v = _mm512_cvtepi32_ps(_mm512_add_epi32(c[t], e[t]));
      if constexpr (kBlockScale)
        s[t] = _mm512_fmadd_ps(sc, v, s[t]);
      else
        s[t] = _mm512_fmadd_ps(_mm512_set1_ps(a[t]->d[g]), _mm512_mul_ps(sc, v), s[t]);
    }
    if constexpr (kMin) {
      const __m512 mn = _mm512_load_ps(p.min[g]);
      for (int t = 0; t < kTok; ++t) m[t] = _mm512_fmadd_ps(_mm512_set1_ps(a[t]->dsum[g]), mn, m[t]);
    }
  }
  for (int t = 0; t < n_tok; ++t) {
    __m512 v = s[t];
    if constexpr (kBlockScale) v = _mm512_fmsub_ps(_mm512_set1_ps(a[t]->d[0]), v, m[t]);
    store_lanes(y + t * ldy, v, n_rows, accumulate);
  }
}

void micro_vnni(const PanelQ8& p, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok, float* y,
                int64_t ldy, int n_rows, bool accumulate) {
  static_assert(kQ8Rows == 16 && kQ8Tokens == 4, "the kernel is written for 16 rows x 4 tokens");
  if (!p.block_scale)  // Q4_0, Q8_0
    micro_vnni_impl<32, false, false>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
  else if (p.group == 16)  // Q6_K
    micro_vnni_impl<16, false, true>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
  else  // Q4_K, Q5_K
    micro_vnni_impl<32, true, true>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
}

}  // namespace

Q8MicroFn q8_micro_vnni() { return micro_vnni; }

}  // namespace keel::cpu
