// Small AArch64 Advanced SIMD helpers shared by the *_neon.cpp, *_dotprod.cpp and *_i8mm.cpp
// kernels (Advanced SIMD is in every AArch64 CPU, so the baseline flags compile these). They have
// internal linkage: files compiled with +dotprod or +i8mm never lend their copy to another file
// (an inline function's copies would otherwise merge at link time).
#pragma once
#include <arm_neon.h>

#include <cstdint>

namespace keel::cpu::neon {
namespace {

// y[0..n) = (accumulate ? y : 0) + v[0..n), n <= 4.
inline void store_partial(float* y, float32x4_t v, int n, bool accumulate) {
  if (n >= 4) {
    if (accumulate) v = vaddq_f32(v, vld1q_f32(y));
    vst1q_f32(y, v);
    return;
  }
  float tmp[4];
  vst1q_f32(tmp, v);
  for (int j = 0; j < n; ++j) y[j] = (accumulate ? y[j] : 0.0f) + tmp[j];
}

// 16 activation bytes (quant + 128, ActBlockQ8::q) back to the signed quants.
inline int8x16_t signed_quants(const uint8_t* q) {
  return vreinterpretq_s8_u8(veorq_u8(vld1q_u8(q), vdupq_n_u8(0x80)));
}

}  // namespace
}  // namespace keel::cpu::neon
