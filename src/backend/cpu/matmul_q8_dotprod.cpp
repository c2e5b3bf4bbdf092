// AArch64 dotprod micro-kernel of the fast path (compiled with -march=armv8.2-a+dotprod; reached
// only when best_isa() found dotprod). A q register holds 4 inputs of 4 panel rows; SDOT by
// lane multiplies it with 4 of a token's activation bytes and adds into the 4 rows' int32 sums.
// The activations enter signed (quant + 128 flipped back), so no offset is subtracted. The 16
// rows are done as two halves of 8 against 4 tokens: 8 int32 and 8 float accumulators.
#include "backend/cpu/matmul_q8.h"
#include "backend/cpu/simd_neon.h"

namespace keel::cpu {
namespace {

// c[t][h] += rows [4h, 4h + 4) of quad `w` · lane L (4 inputs) of token t's activations xs[t].
template <int L>
inline void dot_quad(const int8_t* w, const int8x16_t (&xs)[4], int32x4_t (&c)[4][2]) {
  const int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + 16);
  for (int t = 0; t < 4; ++t) {
    c[t][0] = vdotq_laneq_s32(c[t][0], w0, xs[t], L);
    c[t][1] = vdotq_laneq_s32(c[t][1], w1, xs[t], L);
  }
}

// Rows [8·half, 8·half + 8) of the panel against 4 tokens.
template <int kGroup, bool kMin>
void half_dotprod(const PanelQ8& p, int half, int64_t kc, const ActBlockQ8* const (&a)[4], int n_tok, float* y,
                  int64_t ldy, int n_rows, bool accumulate) {
  constexpr int kQuads = kGroup / 4;
  const int n_groups = static_cast<int>(kc / kGroup);
  float32x4_t s[4][2];
  for (auto& st : s) st[0] = st[1] = vdupq_n_f32(0.0f);
  for (int g = 0; g < n_groups; ++g) {
    const int k = g * kGroup;
    int32x4_t c[4][2];
    for (auto& ct : c) ct[0] = ct[1] = vdupq_n_s32(0);
    for (int i = 0; i < kQuads; i += 4) {  // 16 inputs: one activation register per token
      const int8x16_t xs[4] = {neon::signed_quants(a[0]->q + k + 4 * i), neon::signed_quants(a[1]->q + k + 4 * i),
                               neon::signed_quants(a[2]->q + k + 4 * i), neon::signed_quants(a[3]->q + k + 4 * i)};
      const int8_t* wq = &p.q[g * kQuads + i][8 * half][0];
      dot_quad<0>(wq, xs, c);
      dot_quad<1>(wq + 64, xs, c);
      dot_quad<2>(wq + 128, xs, c);
      dot_quad<3>(wq + 192, xs, c);
    }
    const float32x4_t sc0 = vld1q_f32(&p.scale[g][8 * half]), sc1 = vld1q_f32(&p.scale[g][8 * half + 4]);
    for (int t = 0; t < 4; ++t) {
      s[t][0] = vfmaq_n_f32(s[t][0], vmulq_f32(sc0, vcvtq_f32_s32(c[t][0])), a[t]->d[g]);
      s[t][1] = vfmaq_n_f32(s[t][1], vmulq_f32(sc1, vcvtq_f32_s32(c[t][1])), a[t]->d[g]);
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
  half_dotprod<kGroup, kMin>(p, 0, kc, a, n_tok, y, ldy, n_rows, accumulate);
  if (n_rows > 8) half_dotprod<kGroup, kMin>(p, 1, kc, a, n_tok, y, ldy, n_rows, accumulate);
}

void micro_dotprod(const PanelQ8& p, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok, float* y,
                   int64_t ldy, int n_rows, bool accumulate) {
  static_assert(kQ8Rows == 16 && kQ8Tokens == 4, "the kernel is written for 16 rows x 4 tokens");
  if (p.group == 16)
    micro_impl<16, false>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
  else if (p.has_min)
    micro_impl<32, true>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
  else
    micro_impl<32, false>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
}

}  // namespace

Q8MicroFn q8_micro_dotprod() { return micro_dotprod; }

}  // namespace keel::cpu
