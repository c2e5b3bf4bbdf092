// Small AArch64 Advanced SIMD helpers shared by the *_neon.cpp, *_dotprod.cpp and *_i8mm.cpp
// kernels (Advanced SIMD is in every AArch64 CPU, so the baseline flags compile these). They have
// internal linkage: files compiled with +dotprod or +i8mm never lend their copy to another file
// (an inline function's copies would otherwise merge at link time).
#pragma once
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

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

// f32 vectors of 4 lanes for the kernel templates of attention_simd.h (as F32x8 of simd_avx2.h):
// an FMA sums one product per lane.
struct F32x4 {
  using Vec = float32x4_t;
  using Element = float;
  using Operands = float32x4_t;
  using Ints = int32x4_t;
  using Mask = uint32x4_t;  // all ones or all zeros per lane
  static constexpr int kLanes = 4;
  static constexpr int kPack = 1;
  static Vec zero() { return vdupq_n_f32(0.0f); }
  static Vec load(const float* p) { return vld1q_f32(p); }
  static Vec load_f16(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
  static float f16_scalar(uint16_t h) { return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0); }
  static Vec load_i8(const int8_t* p) {  // 4 quants: 4 bytes read, never past a row's end
    int32_t w;
    std::memcpy(&w, p, sizeof w);
    return vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(w))))));
  }
  static void store(float* p, Vec v) { vst1q_f32(p, v); }
  static Vec splat(float x) { return vdupq_n_f32(x); }
  static Vec mul(Vec a, Vec b) { return vmulq_f32(a, b); }
  static Operands load_operands(const float* p) { return vld1q_f32(p); }
  static Operands broadcast(const float* p) { return vld1q_dup_f32(p); }
  static Vec dot(Vec acc, Operands a, Operands b) { return vfmaq_f32(acc, a, b); }
  static Vec add(Vec a, Vec b) { return vaddq_f32(a, b); }
  static Vec sub(Vec a, Vec b) { return vsubq_f32(a, b); }
  static Vec max(Vec a, Vec b) { return vmaxq_f32(a, b); }
  static float reduce_add(Vec v) { return vaddvq_f32(v); }
  static Vec exp_nonpositive(Vec x) { return exp_neon(x); }
  static Ints load_ints(const int32_t* p) { return vld1q_s32(p); }
  static Mask greater(Ints a, int32_t b) { return vcgtq_s32(a, vdupq_n_s32(b)); }
  static Vec max_where(Mask m, Vec a, Vec b) { return vbslq_f32(m, vmaxq_f32(a, b), a); }
  static Vec zero_unless(Mask m, Vec a) { return vreinterpretq_f32_u32(vandq_u32(m, vreinterpretq_u32_f32(a))); }
};

// 16 activation bytes (quant + 128, ActBlockQ8::q) back to the signed quants.
inline int8x16_t signed_quants(const uint8_t* q) {
  return vreinterpretq_s8_u8(veorq_u8(vld1q_u8(q), vdupq_n_u8(0x80)));
}

}  // namespace
}  // namespace keel::cpu::neon
