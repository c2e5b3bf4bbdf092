// AArch64 micro-kernel of the fast path for CPUs without dotprod (Cortex-A72, Graviton 1):
// Advanced SIMD only, which every AArch64 CPU has. A q register holds 4 inputs of 4 panel rows;
// SMULL/SMLAL multiply two quads with a token's broadcast activations into 16-bit products
// summed in pairs (|w·x| <= 128·127, two of them fit int16), SADALP widens pairs into int32 and
// a final ADDP folds each row's two lanes. The activations enter signed, so no offset is
// subtracted. Two halves of 8 rows against 4 tokens, as the dotprod kernel.
#include "backend/cpu/matmul_q8.h"
#include "backend/cpu/simd_neon.h"

namespace keel::cpu {
namespace {

// 4 bytes (lane L of xs) repeated in all four 32-bit lanes.
template <int L>
inline int8x16_t broadcast_quad(int8x16_t xs) {
  return vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(xs), L));
}

// Quads L and L + 1 (8 inputs) of rows [4h, 4h + 4): lo[t][h] holds rows 4h, 4h+1 (two lanes
// each), hi[t][h] rows 4h+2, 4h+3.
template <int L>
inline void dot_quad_pair(const int8_t* w, const int8x16_t (&xs)[4], int32x4_t (&lo)[4][2], int32x4_t (&hi)[4][2]) {
  for (int h = 0; h < 2; ++h) {
    const int8x16_t w0 = vld1q_s8(w + 16 * h), w1 = vld1q_s8(w + 64 + 16 * h);
    for (int t = 0; t < 4; ++t) {
      const int8x16_t x0 = broadcast_quad<L>(xs[t]), x1 = broadcast_quad<L + 1>(xs[t]);
      const int16x8_t pl = vmlal_s8(vmull_s8(vget_low_s8(w0), vget_low_s8(x0)), vget_low_s8(w1), vget_low_s8(x1));
      const int16x8_t ph = vmlal_high_s8(vmull_high_s8(w0, x0), w1, x1);
      lo[t][h] = vpadalq_s16(lo[t][h], pl);
      hi[t][h] = vpadalq_s16(hi[t][h], ph);
    }
  }
}

template <int kGroup, bool kMin>
void half_neon(const PanelQ8& p, int half, int64_t kc, const ActBlockQ8* const (&a)[4], int n_tok, float* y,
               int64_t ldy, int n_rows, bool accumulate) {
  constexpr int kQuads = kGroup / 4;
  const int n_groups = static_cast<int>(kc / kGroup);
  float32x4_t s[4][2];
  for (auto& st : s) st[0] = st[1] = vdupq_n_f32(0.0f);
  for (int g = 0; g < n_groups; ++g) {
    const int k = g * kGroup;
    int32x4_t lo[4][2], hi[4][2];
    for (int t = 0; t < 4; ++t) lo[t][0] = lo[t][1] = hi[t][0] = hi[t][1] = vdupq_n_s32(0);
    for (int i = 0; i < kQuads; i += 4) {  // 16 inputs: one activation register per token
      const int8x16_t xs[4] = {neon::signed_quants(a[0]->q + k + 4 * i), neon::signed_quants(a[1]->q + k + 4 * i),
                               neon::signed_quants(a[2]->q + k + 4 * i), neon::signed_quants(a[3]->q + k + 4 * i)};
      const int8_t* wq = &p.q[g * kQuads + i][8 * half][0];
      dot_quad_pair<0>(wq, xs, lo, hi);
      dot_quad_pair<2>(wq + 128, xs, lo, hi);
    }
    const float32x4_t sc0 = vld1q_f32(&p.scale[g][8 * half]), sc1 = vld1q_f32(&p.scale[g][8 * half + 4]);
    for (int t = 0; t < 4; ++t) {
      const int32x4_t c0 = vpaddq_s32(lo[t][0], hi[t][0]), c1 = vpaddq_s32(lo[t][1], hi[t][1]);
      s[t][0] = vfmaq_n_f32(s[t][0], vmulq_f32(sc0, vcvtq_f32_s32(c0)), a[t]->d[g]);
      s[t][1] = vfmaq_n_f32(s[t][1], vmulq_f32(sc1, vcvtq_f32_s32(c1)), a[t]->d[g]);
    }
    if constexpr (kMin) {
      const float32x4_t mn0 = vld1q_f32(&p.min[g][8 * half]), mn1 = vld1q_f32(&p.min[g][8 * half + 4]);
      for (int t = 0; t < 4; ++t) {
        s[t][0] = vfmsq_f32(s[t][0], mn0, vdupq_n_f32(a[t]->dsum[g]));
        s[t][1] = vfmsq_f32(s[t][1], mn1, vdupq_n_f32(a[t]->dsum[g]));
      }
    }
  }
  const int n = n_rows - 8 * half;
  for (int t = 0; t < n_tok; ++t) {
    float* yt = y + t * ldy + 8 * half;
    neon::store_partial(yt, s[t][0], n, accumulate);
    if (n > 4) neon::store_partial(yt + 4, s[t][1], n - 4, accumulate);
  }
}

template <int kGroup, bool kMin>
void micro_impl(const PanelQ8& p, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
                int n_rows, bool accumulate) {
  // Missing tokens of a partial tile read token 0 and are not stored.
  const ActBlockQ8* const a[4] = {x, n_tok > 1 ? x + ldx : x, n_tok > 2 ? x + 2 * ldx : x,
                                  n_tok > 3 ? x + 3 * ldx : x};
  half_neon<kGroup, kMin>(p, 0, kc, a, n_tok, y, ldy, n_rows, accumulate);
  if (n_rows > 8) half_neon<kGroup, kMin>(p, 1, kc, a, n_tok, y, ldy, n_rows, accumulate);
}

void micro_neon(const PanelQ8& p, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
                int n_rows, bool accumulate) {
  static_assert(kQ8Rows == 16 && kQ8Tokens == 4, "the kernel is written for 16 rows x 4 tokens");
  if (p.group == 16)
    micro_impl<16, false>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
  else if (p.has_min)
    micro_impl<32, true>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
  else
    micro_impl<32, false>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
}

}  // namespace

Q8MicroFn q8_micro_neon() { return micro_neon; }

}  // namespace keel::cpu
