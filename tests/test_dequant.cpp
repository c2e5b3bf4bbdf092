// Scalar dequantization on hand-built blocks with values worked out from docs/specs/quants.md,
// and the f16/bf16 conversions on known bit patterns.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "quant/blocks.h"
#include "quant/dequant.h"
#include "quant/types.h"

using namespace keel::quant;

TEST(Dequant, HalfAndBfloatConversions) {
  EXPECT_EQ(f16_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xC000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x7BFF), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x0200), std::ldexp(1.0f, -15));  // a subnormal with a high mantissa bit
  EXPECT_TRUE(std::isinf(f16_to_f32(0x7C00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7E00)));
  EXPECT_EQ(f32_to_f16(1.0f), 0x3C00);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(f32_to_f16(1e6f), 0x7C00);                     // overflow -> inf
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);  // tie -> even
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // tie -> even (up)
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);
  for (uint32_t h = 0; h < 0x7C00; h += 7) EXPECT_EQ(f32_to_f16(f16_to_f32(static_cast<f16_bits>(h))), h);
  EXPECT_EQ(bf16_to_f32(0x3F80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xC040), -3.0f);
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3F80);
}

TEST(Dequant, Q8_0) {
  BlockQ8_0 b{};
  b.d = f32_to_f16(0.5f);
  for (int i = 0; i < 32; ++i) b.qs[i] = static_cast<int8_t>(i - 16);
  float y[32];
  dequantize_row(Type::Q8_0, &b, y, 32);
  EXPECT_EQ(y[0], -8.0f);
  EXPECT_EQ(y[16], 0.0f);
  EXPECT_EQ(y[31], 7.5f);
}

TEST(Dequant, Q4_0LowNibblesAreTheFirstHalf) {
  BlockQ4_0 b{};
  b.d = f32_to_f16(2.0f);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>((15 - j) << 4 | j);  // low j, high 15-j
  float y[32];
  dequantize_row(Type::Q4_0, &b, y, 32);
  EXPECT_EQ(y[0], 2.0f * (0 - 8));
  EXPECT_EQ(y[5], 2.0f * (5 - 8));
  EXPECT_EQ(y[16], 2.0f * (15 - 8));  // element 16 = high nibble of qs[0]
  EXPECT_EQ(y[31], 2.0f * (0 - 8));
}

// Scales/mins packing: sub-block s < 4 in the low 6 bits of bytes s / s+4; s >= 4 split.
void set_scale_min(uint8_t* sc, int s, uint8_t scale, uint8_t min) {
  if (s < 4) {
    sc[s] = static_cast<uint8_t>((sc[s] & 0xC0) | scale);
    sc[s + 4] = static_cast<uint8_t>((sc[s + 4] & 0xC0) | min);
  } else {
    sc[s + 4] = static_cast<uint8_t>((scale & 0x0F) | ((min & 0x0F) << 4));
    sc[s - 4] = static_cast<uint8_t>((sc[s - 4] & 0x3F) | ((scale >> 4) << 6));
    sc[s] = static_cast<uint8_t>((sc[s] & 0x3F) | ((min >> 4) << 6));
  }
}

TEST(Dequant, Q4_K) {
  BlockQ4_K b{};
  b.d = f32_to_f16(0.25f);
  b.dmin = f32_to_f16(0.5f);
  for (int s = 0; s < 8; ++s) set_scale_min(b.scales, s, static_cast<uint8_t>(10 + 7 * s), static_cast<uint8_t>(3 + 5 * s));
  for (int s = 0; s < 8; ++s) {
    uint8_t sc, m;
    get_scale_min_k4(s, b.scales, &sc, &m);
    EXPECT_EQ(sc, 10 + 7 * s);
    EXPECT_EQ(m, 3 + 5 * s);
  }
  for (int i = 0; i < 128; ++i) b.qs[i] = static_cast<uint8_t>((i % 16) | ((15 - i % 16) << 4));
  float y[256];
  dequantize_row(Type::Q4_K, &b, y, 256);
  // element 64j + l: low nibble of qs[32j + l] with sub-block 2j; 64j + 32 + l: high nibble, 2j+1
  auto want = [](int sub, int q) { return 0.25f * (10 + 7 * sub) * q - 0.5f * (3 + 5 * sub); };
  EXPECT_EQ(y[0], want(0, 0));
  EXPECT_EQ(y[3], want(0, 3));
  EXPECT_EQ(y[32 + 3], want(1, 12));
  EXPECT_EQ(y[64 * 3 + 5], want(6, (32 * 3 + 5) % 16));
  EXPECT_EQ(y[64 * 3 + 32 + 5], want(7, 15 - (32 * 3 + 5) % 16));
}

TEST(Dequant, Q5_K_HighBits) {
  BlockQ5_K b{};
  b.d = f32_to_f16(1.0f);
  b.dmin = f32_to_f16(0.0f);
  for (int s = 0; s < 8; ++s) set_scale_min(b.scales, s, 1, 0);
  std::memset(b.qs, 0x00, sizeof b.qs);
  b.qh[3] = 1 << 5;   // high bit of element 32*5 + 3
  b.qs[32 * 2 + 3] = 0x70;  // element 64*2 + 32 + 3 (sub-block 5): low bits 7
  float y[256];
  dequantize_row(Type::Q5_K, &b, y, 256);
  EXPECT_EQ(y[32 * 5 + 3], 16.0f + 7.0f);
  EXPECT_EQ(y[3], 0.0f);
}

TEST(Dequant, Q6_K) {
  BlockQ6_K b{};
  b.d = f32_to_f16(0.5f);
  for (int i = 0; i < 16; ++i) b.scales[i] = static_cast<int8_t>(i - 8);
  std::memset(b.ql, 0, sizeof b.ql);
  std::memset(b.qh, 0, sizeof b.qh);
  // element 128 + 64 + 1 (half 1, q3 of l = 1): ql'[1] high nibble, qh'[1] bits 4..5
  b.ql[64 + 1] = 0x50;
  b.qh[32 + 1] = 0x2 << 4;
  float y[256];
  dequantize_row(Type::Q6_K, &b, y, 256);
  const int q = (5 | (2 << 4)) - 32;  // 37 - 32 = 5
  EXPECT_EQ(y[128 + 64 + 1], 0.5f * static_cast<float>(b.scales[(128 + 64 + 1) / 16]) * q);
  EXPECT_EQ(y[0], 0.5f * static_cast<float>(b.scales[0]) * -32);  // all-zero quants are -32
}

TEST(Dequant, TypeTable) {
  EXPECT_EQ(info(Type::Q5_K).block_bytes, 176u);
  EXPECT_EQ(row_bytes(Type::Q5_K, 17408), 11968u);  // quants.md: 27B ffn_down row
  EXPECT_EQ(type_from_name("Q8_0"), Type::Q8_0);
  EXPECT_FALSE(type_info(5).has_value());  // ids 4 and 5 were removed from ggml
  EXPECT_FALSE(info(Type::Q2_K).computable);
}
