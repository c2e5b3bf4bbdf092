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

// exp(x) on 4 floats, as exp_avx2 (simd_avx2.h): x = n ln2 + r, |r| <= ln2/2, degree-6
// polynomial for e^r (relative error < 2e-7), 2^n built in the exponent field; x is clamped to
// [-87, 87].
inline float32x4_t exp_neon(float32x4_t x) {
  x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.0f)), vdupq_n_f32(87.0f));
  const float32x4_t n = vrndnq_f32(vmulq_n_f32(x, 1.44269504088896341f));
  float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
  r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
  float32x4_t p = vdupq_n_f32(1.0f / 720.0f);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 120.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 24.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 6.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
  const int32x4_t bits = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
  return vmulq_f32(p, vreinterpretq_f32_s32(bits));
}

// 16 activation bytes (quant + 128, ActBlockQ8::q) back to the signed quants.
inline int8x16_t signed_quants(const uint8_t* q) {
  return vreinterpretq_s8_u8(veorq_u8(vld1q_u8(q), vdupq_n_u8(0x80)));
}

}  // namespace
}  // namespace keel::cpu::neon
