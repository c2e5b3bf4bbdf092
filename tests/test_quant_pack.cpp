// quant/pack.h is the inverse of the dequantizers: random levels, scale codes and d packed into a
// block dequantize to exactly d·c·q − dmin·m, element by element, for every level and code.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "quant/blocks.h"
#include "quant/dequant.h"
#include "quant/pack.h"

using namespace keel;
using namespace keel::quant;

namespace {

float f16_round(float v) { return f16_to_f32(f32_to_f16(v)); }

template <typename T>
std::vector<T> random_ints(std::mt19937& rng, int n, int lo, int hi) {
  std::uniform_int_distribution<int> dist(lo, hi);
  std::vector<T> out(n);
  for (auto& v : out) v = static_cast<T>(dist(rng));
  return out;
}

}  // namespace

TEST(QuantPack, Q8_0AndQ4_0) {
  std::mt19937 rng(1);
  for (int trial = 0; trial < 50; ++trial) {
    const float d = std::uniform_real_distribution<float>(-0.1f, 0.1f)(rng);
    const auto q8 = random_ints<int8_t>(rng, QK8_0, -127, 127);
    BlockQ8_0 b8;
    pack_q8_0(d, q8.data(), &b8);
    float y[QK8_0];
    dequantize_row_q8_0(&b8, y, QK8_0);
    for (int i = 0; i < QK8_0; ++i) ASSERT_EQ(y[i], f16_round(d) * q8[i]) << i;

    const auto q4 = random_ints<int8_t>(rng, QK4_0, -8, 7);
    BlockQ4_0 b4;
    pack_q4_0(d, q4.data(), &b4);
    dequantize_row_q4_0(&b4, y, QK4_0);
    for (int i = 0; i < QK4_0; ++i) ASSERT_EQ(y[i], f16_round(d) * q4[i]) << i;
  }
}

TEST(QuantPack, Q4_KAndQ5_K) {
  std::mt19937 rng(2);
  for (int trial = 0; trial < 50; ++trial) {
    const float d = std::uniform_real_distribution<float>(1e-5f, 0.01f)(rng);
    const float dmin = std::uniform_real_distribution<float>(1e-5f, 0.01f)(rng);
    const auto scales = random_ints<uint8_t>(rng, 8, 0, 63), mins = random_ints<uint8_t>(rng, 8, 0, 63);
    float y[QK_K];
    for (const int bits : {4, 5}) {
      const auto q = random_ints<uint8_t>(rng, QK_K, 0, (1 << bits) - 1);
      if (bits == 4) {
        BlockQ4_K b;
        pack_q4_k(d, dmin, scales.data(), mins.data(), q.data(), &b);
        dequantize_row_q4_k(&b, y, QK_K);
      } else {
        BlockQ5_K b;
        pack_q5_k(d, dmin, scales.data(), mins.data(), q.data(), &b);
        dequantize_row_q5_k(&b, y, QK_K);
      }
      for (int i = 0; i < QK_K; ++i) {
        const int g = i / 32;
        const float expected = f16_round(d) * scales[g] * static_cast<float>(q[i]) - f16_round(dmin) * mins[g];
        ASSERT_EQ(y[i], expected) << "q" << bits << "_K element " << i;
      }
    }
  }
}

TEST(QuantPack, Q6_K) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 50; ++trial) {
    const float d = std::uniform_real_distribution<float>(-1e-3f, 1e-3f)(rng);
    const auto scales = random_ints<int8_t>(rng, 16, -128, 127);
    const auto q = random_ints<int8_t>(rng, QK_K, -32, 31);
    BlockQ6_K b;
    pack_q6_k(d, scales.data(), q.data(), &b);
    float y[QK_K];
    dequantize_row_q6_k(&b, y, QK_K);
    for (int i = 0; i < QK_K; ++i) ASSERT_EQ(y[i], f16_round(d) * scales[i / 16] * static_cast<float>(q[i])) << i;
  }
}
