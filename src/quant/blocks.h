// Block layouts of the quantized types keel computes with (see docs/specs/quants.md).
// Every struct is the exact on-disk layout; sizes are pinned below.
#pragma once
#include <cstdint>
#include <cstring>

namespace keel::quant {

constexpr int QK4_0 = 32;
constexpr int QK8_0 = 32;
constexpr int QK_K = 256;
constexpr int K_SCALE_SIZE = 12;

using f16_bits = uint16_t;   // IEEE binary16, stored raw
using bf16_bits = uint16_t;  // bfloat16, stored raw

struct BlockQ4_0 {
  f16_bits d;
  uint8_t qs[QK4_0 / 2];  // low nibbles: elements 0..15, high nibbles: 16..31
};
struct BlockQ8_0 {
  f16_bits d;
  int8_t qs[QK8_0];
};
struct BlockQ4_K {
  f16_bits d;
  f16_bits dmin;
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qs[QK_K / 2];
};
struct BlockQ5_K {
  f16_bits d;
  f16_bits dmin;
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qh[QK_K / 8];
  uint8_t qs[QK_K / 2];
};
struct BlockQ6_K {
  uint8_t ql[QK_K / 2];
  uint8_t qh[QK_K / 4];
  int8_t scales[QK_K / 16];
  f16_bits d;
};
struct BlockQ8_K {
  float d;
  int8_t qs[QK_K];
  int16_t bsums[QK_K / 16];
};

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ8_K) == 292);

// ---- scalar conversions -------------------------------------------------------------------

inline float fp32_from_bits(uint32_t w) { float f; std::memcpy(&f, &w, 4); return f; }
inline uint32_t fp32_to_bits(float f) { uint32_t w; std::memcpy(&w, &f, 4); return w; }

// binary16 -> float, exact, including subnormals, inf and nan.
inline float f16_to_f32(f16_bits h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  const uint32_t mant = h & 0x3FF;
  if (exp == 0) {
    if (mant == 0) return fp32_from_bits(sign);
    float v = static_cast<float>(mant) * (1.0f / 16777216.0f);  // mant * 2^-24
    return (sign ? -v : v);
  }
  if (exp == 31) return fp32_from_bits(sign | 0x7F800000u | (mant << 13));
  return fp32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

// float -> binary16, round to nearest even (as F16C's vcvtps2ph with mode 0).
inline f16_bits f32_to_f16(float f) {
  uint32_t x = fp32_to_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000;
  x &= 0x7FFFFFFF;
  if (x >= 0x7F800000u) {  // inf or nan
    return static_cast<f16_bits>(sign | 0x7C00 | (x > 0x7F800000u ? 0x200 : 0));
  }
  if (x >= 0x477FF000u) return static_cast<f16_bits>(sign | 0x7C00);  // overflow -> inf
  if (x < 0x38800000u) {  // subnormal or zero in f16
    // value = x as float; f16 subnormal unit is 2^-24
    float v = fp32_from_bits(x) * 16777216.0f;  // exact scaling
    uint32_t m = static_cast<uint32_t>(v);
    float rem = v - static_cast<float>(m);
    if (rem > 0.5f || (rem == 0.5f && (m & 1))) ++m;
    return static_cast<f16_bits>(sign | m);
  }
  uint32_t mant = x & 0x7FFFFF;
  uint32_t exp = (x >> 23) - 112;
  uint32_t h = (exp << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1FFF;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;  // may carry into exponent: correct
  return static_cast<f16_bits>(sign | h);
}

inline float bf16_to_f32(bf16_bits b) { return fp32_from_bits(static_cast<uint32_t>(b) << 16); }

inline bf16_bits f32_to_bf16(float f) {
  uint32_t x = fp32_to_bits(f);
  if ((x & 0x7FFFFFFF) > 0x7F800000u) return static_cast<bf16_bits>((x >> 16) | 0x40);  // quiet nan
  x += 0x7FFF + ((x >> 16) & 1);
  return static_cast<bf16_bits>(x >> 16);
}

// Q4_K / Q5_K packed 6-bit scale and min of sub-block s (0..7).
inline void get_scale_min_k4(int s, const uint8_t* q, uint8_t* scale, uint8_t* min) {
  if (s < 4) {
    *scale = q[s] & 63;
    *min = q[s + 4] & 63;
  } else {
    *scale = static_cast<uint8_t>((q[s + 4] & 0x0F) | ((q[s - 4] >> 6) << 4));
    *min = static_cast<uint8_t>((q[s + 4] >> 4) | ((q[s] >> 6) << 4));
  }
}

}  // namespace keel::quant
