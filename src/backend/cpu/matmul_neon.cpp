// AArch64 Advanced SIMD micro-kernel for the f32 prefill GEMM (every AArch64 CPU has it; chosen
// for the neon, dotprod and i8mm levels). Same packing and contract as micro_generic: xp [kc][6]
// tokens, wp [kc][16] weights. 24 accumulators (6 tokens × 4 q registers of 4 outputs) take FMA
// by lane from the 6 token values of each k, leaving 8 of the 32 vector registers for loads.
#include "backend/cpu/matmul.h"
#include "backend/cpu/simd_neon.h"

namespace keel::cpu {
namespace {

// One token's 16 outputs: acc[0..4) += w[0..4) · lane Lane of x (a constant, hence templates).
template <int Lane>
inline void fma_token(float32x4_t (&acc)[4], const float32x4_t (&w)[4], float32x4_t x) {
  for (int v = 0; v < 4; ++v) acc[v] = vfmaq_laneq_f32(acc[v], w[v], x, Lane);
}

template <int Lane>
inline void fma_token(float32x4_t (&acc)[4], const float32x4_t (&w)[4], float32x2_t x) {
  for (int v = 0; v < 4; ++v) acc[v] = vfmaq_lane_f32(acc[v], w[v], x, Lane);
}

void micro_neon(int64_t kc, const float* xp, const float* wp, float* y, int64_t ldy, int n_tok, int n_rows,
                bool accumulate) {
  static_assert(kTileTokens == 6 && kTileRows == 16, "the kernel is written for 6 x 16 tiles");
  float32x4_t acc[6][4];
  for (auto& a : acc)
    for (auto& v : a) v = vdupq_n_f32(0.0f);
  for (int64_t k = 0; k < kc; ++k, xp += kTileTokens, wp += kTileRows) {
    const float32x4_t w[4] = {vld1q_f32(wp), vld1q_f32(wp + 4), vld1q_f32(wp + 8), vld1q_f32(wp + 12)};
    const float32x4_t x0 = vld1q_f32(xp);  // tokens 0..3
    const float32x2_t x4 = vld1_f32(xp + 4);  // tokens 4, 5
    fma_token<0>(acc[0], w, x0);
    fma_token<1>(acc[1], w, x0);
    fma_token<2>(acc[2], w, x0);
    fma_token<3>(acc[3], w, x0);
    fma_token<0>(acc[4], w, x4);
    fma_token<1>(acc[5], w, x4);
  }
  for (int t = 0; t < n_tok; ++t)
    for (int v = 0; v < 4 && 4 * v < n_rows; ++v)
      neon::store_partial(y + t * ldy + 4 * v, acc[t][v], n_rows - 4 * v, accumulate);
}

}  // namespace

GemmKernels gemm_kernels_neon() { return {gemm_kernels_generic().pack_panel, micro_neon}; }

}  // namespace keel::cpu
