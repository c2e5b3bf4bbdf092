// The fast (8-bit activation) matmul path: each micro-kernel against the scalar twin, every
// kernel set (1 and 2 threads) against a double-precision reference that quantizes the
// activations the same way, and the fast path against the exact one.
//
// Tolerances. Against matmul_q8_reference the integer sums are exact, so only float rounding of
// the per-group terms remains: |y − ref| ≤ 1e-5·Σ_k |w_k·x_k| (as in test_matmul.cpp). Against the
// exact f32 path the activations' 8-bit rounding dominates: each quant is off by at most half a
// step, d/2 = max|x|/254 per group of 32 (Q8_0) or 256 (Q8_K), so |y_fast − y_exact| ≤
// Σ_k |w_k|·max|x|/254; with N(0,1) activations that is below 2% of Σ_k |w_k·x_k| and the test
// checks it loosely at 3%, plus that the fast path really rounds (not all results equal exact).
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/matmul.h"
#include "backend/cpu/matmul_q8.h"
#include "matmul_test_util.h"
#include "quant/blocks.h"
#include "quant/dequant.h"
#include "quant/quantize_act.h"

namespace {

using keel::cpu::Isa;
using keel::cpu::MatmulMode;
using keel::cpu::ThreadPool;
using namespace keel::test;

constexpr double kRelTol = 1e-5;
const Type kQ8Types[] = {Type::Q4_0, Type::Q8_0, Type::Q4_K, Type::Q5_K, Type::Q6_K};

std::string label(Type type) { return std::string(quant::type_name(type)); }

// avx512: its own micro-kernel only with VNNI (q8_micro falls back to AVX2 without it).
bool have(Isa isa) {
  if (isa == Isa::avx512) return keel::cpu::isa_supported(isa) && keel::cpu::cpu_has_avx512_vnni();
  return keel::cpu::isa_supported(isa);
}

void expect_within(const float* got, const float* want, const std::vector<double>& scale, int64_t n,
                   double rel, const std::string& what) {
  int bad = 0;
  for (int64_t i = 0; i < n && bad < 5; ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    if (!(err <= rel * scale[i] + 1e-30)) {
      ADD_FAILURE() << what << " element " << i << ": " << got[i] << " vs " << want[i] << " (scale "
                    << scale[i] << ")";
      ++bad;
    }
  }
}

// Input widths: odd numbers of 32-blocks (a partial 256-input panel) for Q4_0/Q8_0.
std::vector<int64_t> widths(Type type) {
  if (type == Type::Q4_0 || type == Type::Q8_0) return {32, 224, 288};
  return {256, 768};
}

// Each micro-kernel against the scalar one on the same packed panel: 1..4 tokens, 1..16 rows.
TEST(MatmulQ8Kernels, SimdMatchesScalar) {
  std::mt19937 rng(21);
  for (Isa isa : kSimdIsas) {
    if (!have(isa)) continue;
    for (Type type : kQ8Types) {
      const int64_t n_in = widths(type).back(), n_out = 16;
      const auto wb = random_weights(type, n_in, n_out, rng);
      const WeightView w{type, wb.data(), n_in, n_out};
      const auto x = random_floats(4 * n_in, rng);
      const int64_t nkb = (n_in + 255) / 256;
      std::vector<keel::cpu::ActBlockQ8> act(4 * nkb);
      keel::cpu::quantize_activations_q8(type, x.data(), n_in, 0, 4, act.data());
      auto panel = std::make_unique<keel::cpu::PanelQ8>();
      // Σ_k |w_rk · x_tk| over each 256-input block: the scale of the rounding error.
      std::vector<float> rows(n_out * n_in);
      const size_t rb = quant::row_bytes(type, static_cast<uint64_t>(n_in));
      for (int64_t r = 0; r < n_out; ++r) quant::dequantize_row(type, wb.data() + r * rb, rows.data() + r * n_in, n_in);
      const auto block_scale = [&](int64_t k0, int64_t kc, int t, int r) {
        double s = 0;
        for (int64_t k = k0; k < k0 + kc; ++k) s += std::fabs(double(rows[r * n_in + k]) * x[t * n_in + k]);
        return s;
      };
      for (int n_rows : {1, 7, 9, 16}) {
        for (int64_t kb = 0; kb < nkb; ++kb) {
          const int64_t k0 = kb * 256, kc = std::min<int64_t>(256, n_in - k0);
          keel::cpu::pack_panel_q8(w, 0, n_rows, k0, kc, panel.get());
          for (int n_tok = 1; n_tok <= 4; ++n_tok) {
            Guarded a(4 * 16), b(4 * 16);
            keel::cpu::q8_micro_generic()(*panel, kc, act.data() + kb, nkb, n_tok, a.data(), 16, n_rows, false);
            keel::cpu::q8_micro(isa)(*panel, kc, act.data() + kb, nkb, n_tok, b.data(), 16, n_rows, false);
            for (int t = 0; t < n_tok; ++t)
              for (int r = 0; r < n_rows; ++r) {
                const float u = a.data()[t * 16 + r], v = b.data()[t * 16 + r];
                ASSERT_NEAR(u, v, kRelTol * block_scale(k0, kc, t, r))
                    << keel::cpu::isa_name(isa) << " " << label(type) << " rows=" << n_rows
                    << " tokens=" << n_tok << " t=" << t << " r=" << r;
              }
            for (int t = 0; t < 4; ++t)
              for (int r = 0; r < 16; ++r)
                if (t >= n_tok || r >= n_rows) ASSERT_EQ(b.data()[t * 16 + r], kSentinel) << "wrote outside the tile";
            EXPECT_TRUE(a.guards_intact() && b.guards_intact());
          }
        }
      }
    }
  }
}

// matmul in fast mode (each kernel set, 1 and 2 threads) against the double-precision reference
// of the same quantization, and loosely against the exact reference.
TEST(MatmulQ8Driver, MatchesReference) {
  std::mt19937 rng(22);
  ThreadPool pools[2] = {ThreadPool(1), ThreadPool(2)};
  for (Type type : kQ8Types)
    for (int64_t n_in : widths(type))
      for (int64_t n_out : {1, 17, 50}) {
        const auto wb = random_weights(type, n_in, n_out, rng);
        const WeightView w{type, wb.data(), n_in, n_out};
        for (int64_t n_tok : {1, 2, 4, 5, 6, 9, 33}) {  // GEMV (< 5) and GEMM
          const auto x = random_floats(n_tok * n_in, rng);
          const auto scale = abs_products(w, x.data(), n_tok);
          std::vector<float> ref(n_tok * n_out), exact(n_tok * n_out);
          keel::cpu::matmul_q8_reference(w, x.data(), n_tok, ref.data());
          keel::cpu::matmul_reference(w, x.data(), n_tok, exact.data());
          int differs = 0;
          for (int64_t i = 0; i < n_tok * n_out; ++i) differs += ref[i] != exact[i];
          EXPECT_GT(differs, 0) << "the reference does not quantize";
          expect_within(ref.data(), exact.data(), scale, n_tok * n_out, 0.03, label(type) + " q8 vs exact");
          for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512, Isa::neon, Isa::dotprod, Isa::i8mm}) {
            if (!have(isa)) continue;
            for (ThreadPool& pool : pools) {
              const size_t sb = keel::cpu::matmul_scratch_bytes(type, n_in, n_tok, pool.size(), MatmulMode::fast);
              std::vector<char> scratch(sb + 1 + 64, 0x5A);  // misaligned start, guard bytes after
              Guarded y(n_tok * n_out);
              keel::cpu::matmul_with(isa, w, x.data(), n_tok, y.data(), scratch.data() + 1, pool, MatmulMode::fast);
              const std::string what = std::string(keel::cpu::isa_name(isa)) + " " + label(type) +
                                       " n_in=" + std::to_string(n_in) + " n_out=" + std::to_string(n_out) +
                                       " n_tok=" + std::to_string(n_tok) + " threads=" + std::to_string(pool.size());
              expect_within(y.data(), ref.data(), scale, n_tok * n_out, kRelTol, what);
              EXPECT_TRUE(y.guards_intact()) << what;
              for (size_t i = sb + 1; i < scratch.size(); ++i)
                ASSERT_EQ(scratch[i], 0x5A) << what << ": wrote past the scratch";
            }
          }
        }
      }
}

// Float weights are exact in both modes (GEMV and GEMM).
TEST(MatmulQ8Driver, FloatWeightsStayExact) {
  std::mt19937 rng(23);
  ThreadPool pool(2);
  for (int64_t n_tok : {3, 8}) {
    const Type type = Type::F32;
    const int64_t n_in = 256, n_out = 9;
    const auto wb = random_weights(type, n_in, n_out, rng);
    const WeightView w{type, wb.data(), n_in, n_out};
    const auto x = random_floats(n_tok * n_in, rng);
    std::vector<char> s1(keel::cpu::matmul_scratch_bytes(type, n_in, n_tok, 2, MatmulMode::fast));
    std::vector<char> s2(keel::cpu::matmul_scratch_bytes(type, n_in, n_tok, 2, MatmulMode::exact));
    std::vector<float> a(n_tok * n_out), b(n_tok * n_out);
    keel::cpu::matmul(w, x.data(), n_tok, a.data(), s1.data(), pool, MatmulMode::fast);
    keel::cpu::matmul(w, x.data(), n_tok, b.data(), s2.data(), pool, MatmulMode::exact);
    EXPECT_EQ(a, b) << n_tok;
  }
}

// The fast GEMV's rounded activations are the GEMM's quants times their scales.
TEST(MatmulQ8Driver, RoundedActivationsAreTheQuants) {
  std::mt19937 rng(25);
  for (Type type : kQ8Types) {
    const int64_t n_in = widths(type).back();
    const auto x = random_floats(2 * n_in, rng);
    std::vector<float> xr(2 * n_in);
    keel::cpu::round_activations_q8(type, x.data(), n_in, 2, xr.data());
    const int64_t nkb = (n_in + 255) / 256;
    std::vector<keel::cpu::ActBlockQ8> act(2 * nkb);
    keel::cpu::quantize_activations_q8(type, x.data(), n_in, 0, 2, act.data());
    const int group = keel::cpu::q8_group(type);
    int differs = 0;
    for (int64_t t = 0; t < 2; ++t)
      for (int64_t k = 0; k < n_in; ++k) {
        const auto& a = act[t * nkb + k / 256];
        ASSERT_EQ(xr[t * n_in + k], a.d[(k % 256) / group] * float(int(a.q[k % 256]) - 128)) << label(type);
        differs += xr[t * n_in + k] != x[t * n_in + k];
      }
    EXPECT_GT(differs, n_in) << label(type);
  }
}

// The Q8_K encoder against ggml's definition on hand-made rows.
TEST(QuantizeQ8K, MatchesDefinition) {
  std::vector<float> x(256);
  std::mt19937 rng(24);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (auto& v : x) v = normal(rng);
  x[77] = -5.0f;  // the signed maximum: iscale = -127/-5, so x[77] -> -127
  keel::quant::BlockQ8_K b;
  keel::quant::quantize_row_q8_k(x.data(), &b, 256);
  EXPECT_FLOAT_EQ(b.d, 5.0f / 127.0f);  // d = 1/iscale = max/-127
  EXPECT_EQ(b.qs[77], -127);
  for (int g = 0; g < 16; ++g) {
    int sum = 0;
    for (int j = 0; j < 16; ++j) sum += b.qs[16 * g + j];
    EXPECT_EQ(b.bsums[g], sum);
  }
  for (int j = 0; j < 256; ++j) EXPECT_LE(std::fabs(b.d * b.qs[j] - x[j]), std::fabs(b.d) * 0.5f + 1e-6f);
  std::fill(x.begin(), x.end(), 0.0f);
  keel::quant::quantize_row_q8_k(x.data(), &b, 256);
  EXPECT_EQ(b.d, 0.0f);
  EXPECT_EQ(b.qs[0], 0);
}

}  // namespace
