// AArch64 Advanced SIMD twins of element-wise ops (every AArch64 CPU has them; chosen in ops.cpp
// unless KEEL_CPU_ISA=generic).
#include <cmath>
#include <cstdint>

#include "backend/cpu/simd_neon.h"

namespace keel::cpu {

void silu_mul_neon(float* gate, const float* up, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t g = vld1q_f32(gate + i);
    const float32x4_t e = neon::exp_neon(vnegq_f32(g));
    const float32x4_t s = vdivq_f32(g, vaddq_f32(vdupq_n_f32(1.0f), e));
    vst1q_f32(gate + i, vmulq_f32(s, vld1q_f32(up + i)));
  }
  for (; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

}  // namespace keel::cpu
