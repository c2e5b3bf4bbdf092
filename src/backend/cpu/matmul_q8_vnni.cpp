// AVX-512 VNNI micro-kernel of the fast path (compiled with -mavx512{f,bw,vl,vnni}; reached only
// when cpu_has_avx512_vnni()). One zmm holds 4 inputs of the panel's 16 rows; vpdpbusd multiplies
// it with 4 broadcast activation bytes of a token and adds into 16 int32 row sums, so a group of
// 32 inputs is 8 instructions per token. Four tokens share each weight load, and the driver's two
// swept panels share each token's broadcast (q8_micro_pair: Zen 5 VM, 2 threads, Qwen3-0.6B-shaped
// pp512, old and new in turn: Q8_0 637 / 629 -> 720 / 715 tok/s, Q4_K_M 634 -> 709, Q5_K_M
// 631 / 549 -> 686 / 609).
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

// kPanels adjacent panels (rows 16·P + j of y for panel P) against 4 tokens. Two panels share
// each broadcast of a token's activations: 6 loads for 8 vpdpbusd, where one panel takes 10. One
// panel's 4 tokens are too few chains to cover vpdpbusd's latency, so each token's sum is split
// over even and odd quads there; two panels have 8 chains already.
template <int kGroup, bool kMin, bool kBlockScale, int kPanels>
void micro_vnni_impl(const PanelQ8* p, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok, float* y,
                     int64_t ldy, int n_rows_last, bool accumulate) {
  constexpr int kTok = kQ8Tokens, kQuads = kGroup / 4, kSplit = kPanels == 1 ? 2 : 1;
  static_assert(kBlockScale || !kMin, "min terms come with Q8_K activations");
  const int n_groups = static_cast<int>(kc / kGroup);
  // Missing tokens of a partial tile read token 0 and are not stored.
  const ActBlockQ8* a[kTok];
  for (int t = 0; t < kTok; ++t) a[t] = t < n_tok ? x + t * ldx : x;
  __m512 s[kPanels][kTok], m[kPanels][kTok];
  for (int q = 0; q < kPanels; ++q)
    for (int t = 0; t < kTok; ++t) s[q][t] = m[q][t] = _mm512_setzero_ps();
  for (int g = 0; g < n_groups; ++g) {
    const int k = g * kGroup;
    // The first chain of each token starts from −offset.
    __m512i c[kPanels][kSplit][kTok];
    for (int q = 0; q < kPanels; ++q) {
      const __m512i neg_off = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_load_si512(p[q].offset[g]));
      for (int t = 0; t < kTok; ++t) {
        c[q][0][t] = neg_off;
        for (int h = 1; h < kSplit; ++h) c[q][h][t] = _mm512_setzero_si512();
      }
    }
    for (int i = 0; i < kQuads; i += kSplit)
      for (int h = 0; h < kSplit; ++h) {
        __m512i w[kPanels];
        for (int q = 0; q < kPanels; ++q) w[q] = _mm512_load_si512(&p[q].q[g * kQuads + i + h][0][0]);
        for (int t = 0; t < kTok; ++t) {
          const __m512i xt = bcast4(a[t]->q + k + 4 * (i + h));
          for (int q = 0; q < kPanels; ++q) c[q][h][t] = _mm512_dpbusd_epi32(c[q][h][t], xt, w[q]);
        }
      }
    for (int q = 0; q < kPanels; ++q) {
      const __m512 sc = _mm512_load_ps(p[q].scale[g]);
      for (int t = 0; t < kTok; ++t) {
        __m512i sum = c[q][0][t];
        for (int h = 1; h < kSplit; ++h) sum = _mm512_add_epi32(sum, c[q][h][t]);
        const __m512 v = _mm512_cvtepi32_ps(sum);
        if constexpr (kBlockScale)
          s[q][t] = _mm512_fmadd_ps(sc, v, s[q][t]);
        else
          s[q][t] = _mm512_fmadd_ps(_mm512_set1_ps(a[t]->d[g]), _mm512_mul_ps(sc, v), s[q][t]);
      }
      if constexpr (kMin) {
        const __m512 mn = _mm512_load_ps(p[q].min[g]);
        for (int t = 0; t < kTok; ++t) m[q][t] = _mm512_fmadd_ps(_mm512_set1_ps(a[t]->dsum[g]), mn, m[q][t]);
      }
    }
  }
  for (int q = 0; q < kPanels; ++q)
    for (int t = 0; t < n_tok; ++t) {
      __m512 v = s[q][t];
      if constexpr (kBlockScale) v = _mm512_fmsub_ps(_mm512_set1_ps(a[t]->d[0]), v, m[q][t]);
      store_lanes(y + t * ldy + q * kQ8Rows, v, q + 1 < kPanels ? kQ8Rows : n_rows_last, accumulate);
    }
}

template <int kPanels>
void micro_vnni_panels(const PanelQ8* p, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok, float* y,
                       int64_t ldy, int n_rows_last, bool accumulate) {
  static_assert(kQ8Rows == 16 && kQ8Tokens == 4, "the kernel is written for 16 rows x 4 tokens");
  if (!p->block_scale)  // Q4_0, Q8_0
    micro_vnni_impl<32, false, false, kPanels>(p, kc, x, ldx, n_tok, y, ldy, n_rows_last, accumulate);
  else if (p->group == 16)  // Q6_K
    micro_vnni_impl<16, false, true, kPanels>(p, kc, x, ldx, n_tok, y, ldy, n_rows_last, accumulate);
  else  // Q4_K, Q5_K
    micro_vnni_impl<32, true, true, kPanels>(p, kc, x, ldx, n_tok, y, ldy, n_rows_last, accumulate);
}

void micro_vnni(const PanelQ8& p, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok, float* y,
                int64_t ldy, int n_rows, bool accumulate) {
  micro_vnni_panels<1>(&p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
}

}  // namespace

Q8MicroFn q8_micro_vnni() { return micro_vnni; }
Q8MicroPairFn q8_micro_pair_vnni() { return micro_vnni_panels<2>; }

}  // namespace keel::cpu
