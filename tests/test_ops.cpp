// Element-wise CPU ops: the SIMD twin of silu_mul equals the scalar one; RoPE pairings rotate the
// documented element pairs and preserve each pair's norm.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "backend/cpu/ops.h"

using namespace keel;

TEST(Ops, SiluMulSimdEqualsScalarOnOddSizes) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  for (int64_t n : {1, 7, 8, 9, 31, 33, 1000}) {
    std::vector<float> gate(static_cast<size_t>(n) + 2), up(static_cast<size_t>(n));
    for (auto& x : gate) x = normal(rng);
    for (auto& x : up) x = normal(rng);
    gate[static_cast<size_t>(n)] = gate[static_cast<size_t>(n) + 1] = 777.0f;  // sentinels
    auto ref = gate;
    cpu::silu_mul_generic(ref.data(), up.data(), n);
    cpu::silu_mul(gate.data(), up.data(), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(gate[i], ref[i], 1e-6f * (1.0f + std::fabs(ref[i]))) << i;
    EXPECT_EQ(gate[static_cast<size_t>(n)], 777.0f);
    EXPECT_EQ(gate[static_cast<size_t>(n) + 1], 777.0f);
  }
}

TEST(Ops, RopePairingsAndPartialRotation) {
  const int hd = 8;
  for (auto type : {backend::RopeType::norm, backend::RopeType::neox}) {
    std::vector<float> x(hd);
    for (int i = 0; i < hd; ++i) x[i] = static_cast<float>(i + 1);
    auto y = x;
    cpu::RopeParams p{type, 4, 10000.0f, 1.0f, nullptr};  // rotate the first 4 dims only
    const int32_t pos = 3;
    cpu::rope(y.data(), 1, 1, hd, &pos, p);
    for (int i = 4; i < hd; ++i) EXPECT_EQ(y[i], x[i]);  // dims >= n_rot pass through
    const int a0 = 0, b0 = type == backend::RopeType::norm ? 1 : 2;
    const double theta = 3.0;  // pair 0: pos * base^0
    EXPECT_NEAR(y[a0], x[a0] * std::cos(theta) - x[b0] * std::sin(theta), 1e-5);
    EXPECT_NEAR(y[b0], x[a0] * std::sin(theta) + x[b0] * std::cos(theta), 1e-5);
  }
}

TEST(Ops, RmsNormMatchesDefinition) {
  std::vector<float> x = {1, -2, 3, -4}, w = {1, 2, 3, 4}, out(4);
  cpu::rms_norm(x.data(), w.data(), out.data(), 1, 4, 0.0f);
  const float rms = std::sqrt((1 + 4 + 9 + 16) / 4.0f);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(out[i], x[i] / rms * w[i], 1e-6);
}
