// AArch64 Advanced SIMD twins of the attention kernels (every AArch64 CPU has them; chosen by
// attention_kernels_for() for head sizes that are a multiple of 4): QK scores and the PV
// accumulation with FMA, the softmax exponentials (exp_neon), and the f16 cache rows through FCVT.
// The row-block (prefill) kernels are attention_simd.h's templates over F32x4 (simd_neon.h).
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

float scores_neon(const float* q, const float* keys, int64_t n_keys, int hd, float scale, float* out) {
  float mx = -INFINITY;
  int64_t j = 0;
  for (; j + 4 <= n_keys; j += 4) {  // four keys share each load of q
    const float* k0 = keys + j * hd;
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
    for (int i = 0; i < hd; i += 4) {
      const float32x4_t qv = vld1q_f32(q + i);
      a0 = vfmaq_f32(a0, qv, vld1q_f32(k0 + i));
      a1 = vfmaq_f32(a1, qv, vld1q_f32(k0 + hd + i));
      a2 = vfmaq_f32(a2, qv, vld1q_f32(k0 + 2 * hd + i));
      a3 = vfmaq_f32(a3, qv, vld1q_f32(k0 + 3 * hd + i));
    }
    out[j] = vaddvq_f32(a0) * scale;
    out[j + 1] = vaddvq_f32(a1) * scale;
    out[j + 2] = vaddvq_f32(a2) * scale;
    out[j + 3] = vaddvq_f32(a3) * scale;
    mx = std::max(std::max(mx, std::max(out[j], out[j + 1])), std::max(out[j + 2], out[j + 3]));
  }
  for (; j < n_keys; ++j) {
    const float* k = keys + j * hd;
    float32x4_t a = vdupq_n_f32(0.0f);
    for (int i = 0; i < hd; i += 4) a = vfmaq_f32(a, vld1q_f32(q + i), vld1q_f32(k + i));
    out[j] = vaddvq_f32(a) * scale;
    mx = std::max(mx, out[j]);
  }
  return mx;
}

float exp_sum_neon(float* s, int64_t n, float max) {
  const float32x4_t m = vdupq_n_f32(max);
  float32x4_t sum = vdupq_n_f32(0.0f);
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const float32x4_t e = neon::exp_neon(vsubq_f32(vld1q_f32(s + j), m));
    vst1q_f32(s + j, e);
    sum = vaddq_f32(sum, e);
  }
  float total = vaddvq_f32(sum);
  for (; j < n; ++j) {
    s[j] = std::exp(s[j] - max);
    total += s[j];
  }
  return total;
}

void accumulate_neon(float* acc, float correction, const float* p, const float* values, int64_t n_keys, int hd) {
  int i = 0;
  for (; i + 16 <= hd; i += 16) {  // 4 accumulators of 4 stay in registers over all keys
    float32x4_t a0 = vmulq_n_f32(vld1q_f32(acc + i), correction);
    float32x4_t a1 = vmulq_n_f32(vld1q_f32(acc + i + 4), correction);
    float32x4_t a2 = vmulq_n_f32(vld1q_f32(acc + i + 8), correction);
    float32x4_t a3 = vmulq_n_f32(vld1q_f32(acc + i + 12), correction);
    for (int64_t j = 0; j < n_keys; ++j) {
      const float* v = values + j * hd + i;
      a0 = vfmaq_n_f32(a0, vld1q_f32(v), p[j]);
      a1 = vfmaq_n_f32(a1, vld1q_f32(v + 4), p[j]);
      a2 = vfmaq_n_f32(a2, vld1q_f32(v + 8), p[j]);
      a3 = vfmaq_n_f32(a3, vld1q_f32(v + 12), p[j]);
    }
    vst1q_f32(acc + i, a0);
    vst1q_f32(acc + i + 4, a1);
    vst1q_f32(acc + i + 8, a2);
    vst1q_f32(acc + i + 12, a3);
  }
  for (; i < hd; i += 4) {
    float32x4_t a = vmulq_n_f32(vld1q_f32(acc + i), correction);
    for (int64_t j = 0; j < n_keys; ++j) a = vfmaq_n_f32(a, vld1q_f32(values + j * hd + i), p[j]);
    vst1q_f32(acc + i, a);
  }
}

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
  // (No in-place f16 kernels: the per-row ones here are NEON's own, not attention_simd.h's.)
  static const AttentionKernels k{scores_neon,     exp_sum_neon,    accumulate_neon,
                                  f16_to_f32_neon, nullptr,         nullptr,
                                  nullptr,         nullptr,
                                  f32_to_f16_neon, quant::quantize_row_q8_0, scores_rows_neon, softmax_rows_simd<V>,
                                  accumulate_row_tiles<V, 6, 4>};
  return k;
}

}  // namespace keel::cpu
