#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "quant/blocks.h"
#include "quant/dequant.h"
#include "quant/quantize.h"

using namespace keel::quant;

namespace {

std::vector<float> gaussian(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(n);
  for (auto& v : x) v = nd(rng);
  return x;
}

std::vector<float> round_trip(Type t, const std::vector<float>& x, int64_t ncol) {
  const size_t rb = row_bytes(t, ncol);
  const int64_t nrow = static_cast<int64_t>(x.size()) / ncol;
  std::vector<uint8_t> q(rb * nrow + 1, 0xAB);  // sentinel after the last row
  std::vector<float> y(x.size());
  for (int64_t r = 0; r < nrow; ++r) quantize_row(t, &x[r * ncol], &q[r * rb], ncol);
  EXPECT_EQ(q.back(), 0xAB) << "wrote past the row";
  for (int64_t r = 0; r < nrow; ++r) dequantize_row(t, &q[r * rb], &y[r * ncol], ncol);
  return y;
}

double rel_rmse(const std::vector<float>& x, const std::vector<float>& y) {
  double e = 0, s = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double d = double{y[i]} - x[i];
    e += d * d;
    s += double{x[i]} * x[i];
  }
  return std::sqrt(e / s);
}

}  // namespace

// Relative RMSE on 16 x 4096 N(0,1) values (mt19937_64 seed 7, std::normal_distribution<float>).
// The bounds are llama.cpp's reference quantizers (quantize_row_*_ref of the libggml-base that
// node-llama-cpp 3.21.1 ships) on exactly this data; keel measured q8_0 0.005304 (identical
// bytes), q4_0 0.083345, q4_K 0.070339, q5_K 0.035002, q6_K 0.017590.
TEST(Quantize, GaussianErrorIsNoWorseThanLlamaCpp) {
  const int64_t ncol = 4096;
  const std::vector<float> x = gaussian(16 * ncol, 7);
  struct Case { Type type; double llama_cpp; double keel; };
  const Case cases[] = {
      {Type::Q8_0, 0.005304, 0.005304}, {Type::Q4_0, 0.085257, 0.083345}, {Type::Q4_K, 0.071021, 0.070339},
      {Type::Q5_K, 0.035962, 0.035002}, {Type::Q6_K, 0.017598, 0.017590},
  };
  for (const Case& c : cases) {
    const double err = rel_rmse(x, round_trip(c.type, x, ncol));
    EXPECT_LE(err, c.llama_cpp + 1e-6) << type_name(c.type);
    EXPECT_NEAR(err, c.keel, 2e-6) << type_name(c.type) << ": the encoder changed";
  }
}

TEST(Quantize, FloatTypesRoundTrip) {
  const std::vector<float> x = gaussian(512, 3);
  EXPECT_EQ(round_trip(Type::F32, x, 512), x);
  EXPECT_LT(rel_rmse(x, round_trip(Type::F16, x, 512)), 4e-4);
  EXPECT_LT(rel_rmse(x, round_trip(Type::BF16, x, 512)), 3e-3);
}

// Zero rows, constant rows, a single outlier, tiny and huge magnitudes: finite, sensible output.
TEST(Quantize, EdgeRows) {
  const int64_t n = 512;
  std::vector<std::vector<float>> rows;
  rows.emplace_back(n, 0.0f);
  rows.emplace_back(n, 0.75f);
  rows.emplace_back(n, -3.0f);
  std::vector<float> outlier = gaussian(n, 11);
  outlier[77] = 40.0f;
  rows.push_back(outlier);
  std::vector<float> tiny = gaussian(n, 12);
  for (auto& v : tiny) v *= 1e-3f;  // scales near the bottom of f16
  rows.push_back(tiny);
  std::vector<float> huge = gaussian(n, 13);
  for (auto& v : huge) v *= 1000.0f;
  rows.push_back(huge);
  std::vector<float> positive = gaussian(n, 14);
  for (auto& v : positive) v = std::fabs(v) + 2.0f;
  rows.push_back(positive);
  for (Type t : {Type::Q8_0, Type::Q4_0, Type::Q4_K, Type::Q5_K, Type::Q6_K}) {
    for (size_t i = 0; i < rows.size(); ++i) {
      const std::vector<float> y = round_trip(t, rows[i], n);
      double amax = 0;
      for (float v : rows[i]) amax = std::max(amax, double{std::fabs(v)});
      for (int64_t j = 0; j < n; ++j) {
        ASSERT_TRUE(std::isfinite(y[j])) << type_name(t) << " row " << i;
        // Never further off than the row's largest magnitude (a loose sanity bound).
        ASSERT_LE(std::fabs(y[j] - rows[i][j]), amax * 0.6 + 1e-30) << type_name(t) << " row " << i << " j " << j;
      }
      if (i == 0) {
        for (float v : y) ASSERT_EQ(v, 0.0f) << type_name(t);
      }
      if (i == 1 || i == 2) {  // a constant row is exact up to the f16 scales
        EXPECT_LT(rel_rmse(rows[i], y), 2e-3) << type_name(t) << " row " << i;
      }
      if (i >= 3) {
        EXPECT_LT(rel_rmse(rows[i], y), t == Type::Q4_0 ? 0.2 : 0.12) << type_name(t) << " row " << i;
      }
    }
  }
}

TEST(Quantize, RefusesTypesItCannotWrite) {
  std::vector<float> x(256);
  std::vector<uint8_t> out(1024);
  EXPECT_FALSE(can_quantize_to(Type::Q2_K));
  EXPECT_THROW(quantize_row(Type::Q2_K, x.data(), out.data(), 256), std::exception);
}
