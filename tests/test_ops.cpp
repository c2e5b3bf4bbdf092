// Element-wise CPU ops: the SIMD twin of silu_mul equals the scalar one; RoPE pairings rotate the
// documented element pairs and preserve each pair's norm; the one-pass q/k norm and RoPE equals the
// four ops it replaces.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/ops.h"
#include "keel/error.h"

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

// CpuBackend::norm_rope_qk (one pass over the tokens, each token's angles computed once for q and
// k) against Backend's default (rms_norm of q's and k's heads, then rope of each), bit for bit:
// both RoPE pairings, partial rotation, frequency factors, with and without the norms, and enough
// tokens at scattered positions for the rows to be split between the threads.
TEST(Ops, NormRopeQkOnePassEqualsNormsThenRopes) {
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const int64_t hd = 128, n_q = 16, n_k = 8, n_tok = 37;
  std::vector<int32_t> pos(n_tok);
  for (auto& p : pos) p = static_cast<int32_t>(rng() % 40000);
  backend::SeqSlice seq{0, n_tok, 0, 0};
  backend::Batch batch;
  batch.n_tokens = n_tok;
  batch.pos = pos.data();
  batch.n_seqs = 1;
  batch.seqs = &seq;
  std::vector<float> q_norm(hd), k_norm(hd), factors(hd / 2);
  for (auto& w : q_norm) w = normal(rng);
  for (auto& w : k_norm) w = normal(rng);
  for (size_t i = 0; i < factors.size(); ++i) factors[i] = 1.0f + 0.25f * static_cast<float>(i % 5);
  cpu::CpuBackend be(2);
  be.begin_batch(batch);
  for (auto type : {backend::RopeType::norm, backend::RopeType::neox})
    for (int n_rot : {128, 64})
      for (bool norms : {true, false})
        for (bool with_factors : {false, true}) {
          const backend::RopeParams p{type, n_rot, 1000000.0f, 1.0f, with_factors ? factors.data() : nullptr};
          std::vector<float> q(static_cast<size_t>(n_tok * n_q * hd)), k(static_cast<size_t>(n_tok * n_k * hd));
          for (auto& x : q) x = normal(rng);
          for (auto& x : k) x = normal(rng);
          auto q_ref = q, k_ref = k;
          const float* qn = norms ? q_norm.data() : nullptr;
          const float* kn = norms ? k_norm.data() : nullptr;
          be.norm_rope_qk(q.data(), n_q, k.data(), n_k, n_tok, hd, qn, kn, 1e-6f, p);
          be.backend::Backend::norm_rope_qk(q_ref.data(), n_q, k_ref.data(), n_k, n_tok, hd, qn, kn, 1e-6f, p);
          EXPECT_EQ(0, std::memcmp(q.data(), q_ref.data(), q.size() * sizeof(float)))
              << "q, n_rot " << n_rot << " norms " << norms << " factors " << with_factors;
          EXPECT_EQ(0, std::memcmp(k.data(), k_ref.data(), k.size() * sizeof(float)))
              << "k, n_rot " << n_rot << " norms " << norms << " factors " << with_factors;
        }
}

// A rotation wider than the angle tables (1024 dims: head sizes above that are refused at load)
// is an error before any value is touched, not a write past them.
TEST(Ops, RopeWiderThanItsTablesIsRefused) {
  std::vector<float> x(1028, 1.0f);
  const int32_t pos = 7;
  const backend::RopeParams wide{backend::RopeType::neox, 1026, 10000.0f, 1.0f, nullptr};
  EXPECT_THROW(cpu::rope(x.data(), 1, 1, 1028, &pos, wide), Error);
  EXPECT_THROW(cpu::norm_rope_qk(x.data(), 1, x.data(), 0, 1, 1028, nullptr, nullptr, 1e-6f, &pos, wide), Error);
  EXPECT_TRUE(std::all_of(x.begin(), x.end(), [](float v) { return v == 1.0f; }));
  const backend::RopeParams widest{backend::RopeType::neox, 1024, 10000.0f, 1.0f, nullptr};
  EXPECT_NO_THROW(cpu::rope(x.data(), 1, 1, 1028, &pos, widest));
}
