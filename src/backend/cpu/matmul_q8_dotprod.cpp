// AArch64 dotprod micro-kernel of the fast path (compiled with -march=armv8.2-a+dotprod; reached
// only when best_isa() found dotprod). A q register holds 4 inputs of 4 panel rows; SDOT by
// lane multiplies it with 4 of a token's activation bytes and adds into the 4 rows' int32 sums.
// The activations enter signed (quant + 128 flipped back), so no offset is subtracted. The loops
// around it: matmul_q8_neon_micro.h.
#include "backend/cpu/matmul_q8_neon_micro.h"

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

struct DotSdot {
  template <int kGroup>
  static void group(const PanelQ8& p, int half, int g, const ActBlockQ8* const (&a)[4], int32x4_t (&c)[4][2]) {
    constexpr int kQuads = kGroup / 4;
    const int k = g * kGroup;
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
  }
};

}  // namespace

Q8MicroFn q8_micro_dotprod() { return micro<DotSdot>; }

}  // namespace keel::cpu
