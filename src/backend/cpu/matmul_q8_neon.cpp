// AArch64 micro-kernel of the fast path for CPUs without dotprod (Cortex-A72, Graviton 1):
// Advanced SIMD only, which every AArch64 CPU has. A q register holds 4 inputs of 4 panel rows;
// SMULL/SMLAL multiply two quads with a token's broadcast activations into 16-bit products
// summed in pairs (|w·x| <= 128·127, two of them fit int16), SADALP widens pairs into int32 and
// a final ADDP folds each row's two lanes. The loops around it: matmul_q8_neon_micro.h.
#include "backend/cpu/matmul_q8_neon_micro.h"

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

struct DotNeon {
  template <int kGroup>
  static void group(const PanelQ8& p, int half, int g, const ActBlockQ8* const (&a)[4], int32x4_t (&rows)[4][2]) {
    constexpr int kQuads = kGroup / 4;
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
    for (int t = 0; t < 4; ++t) {
      rows[t][0] = vpaddq_s32(lo[t][0], hi[t][0]);
      rows[t][1] = vpaddq_s32(lo[t][1], hi[t][1]);
    }
  }
};

}  // namespace

Q8MicroFn q8_micro_neon() { return micro<DotNeon>; }

}  // namespace keel::cpu
