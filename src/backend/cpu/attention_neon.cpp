// AArch64 Advanced SIMD twins of the attention kernels (every AArch64 CPU has them; chosen by
// attention_kernels_for() for head sizes that are a multiple of 4): attention_simd.h's templates
// over F32x4 (simd_neon.h) for the per-row kernels (f32 tiles, and f16 and q8_0 caches read in
// place) and the row blocks; the f16 conversions through FCVT here.
#include <algorithm>
#include <cmath>

#include "backend/cpu/attention_kernels.h"
#include "backend/cpu/attention_simd.h"
#include "backend/cpu/simd_neon.h"
#include "quant/blocks.h"
#include "quant/quantize_q8_0.h"

namespace keel::cpu {
namespace {

using neon::F32x4;

// Round to nearest even (the FPCR's default mode, which Linux leaves set), subnormal halves kept.
void f32_to_f16_neon(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
  for (; i < n; ++i) dst[i] = quant::f32_to_f16(src[i]);
}

// Strips of 16 rows, tiles of 6 keys: 24 accumulators of the 32 registers.
void scores_rows_neon(const float* qt, int64_t ldq, int n_rows, const float* keys, int64_t n_keys, int hd, float* st,
                      int64_t lds) {
  for (int r = 0; r < n_rows; r += 16) scores_strip<F32x4, 6, 4>(qt + r, ldq, keys, n_keys, hd, st + r, lds);
}

void f16_to_f32_neon(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(src + i))));
  if (i < n) {  // the tail through a zero-padded vector: the same conversion instruction
    uint16_t tail[4] = {};
    float out[4];
    std::copy(src + i, src + n, tail);
    vst1q_f32(out, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(tail))));
    std::copy(out, out + (n - i), dst + i);
  }
}

}  // namespace

const AttentionKernels& attention_kernels_neon() {
  // Per row, then row blocks (accumulator tiles of 6 dims x 4 vectors: 24 of the 32 registers).
  using V = F32x4;
  static const AttentionKernels k{scores_simd<V>,       exp_sum_simd<V>,   accumulate_simd<V>,
                                  f16_to_f32_neon,      scores_f16_simd<V>, accumulate_f16_simd<V>,
                                  scores_q8_simd<V>,    accumulate_q8_simd<V>,
                                  f32_to_f16_neon,      quant::quantize_row_q8_0, scores_rows_neon, softmax_rows_simd<V>,
                                  accumulate_row_tiles<V, 6, 4>};
  return k;
}

}  // namespace keel::cpu
