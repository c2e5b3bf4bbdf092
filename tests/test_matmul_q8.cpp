// The fast (8-bit activation) matmul path: each GEMM micro-kernel and each GEMV kernel against its
// scalar twin, every kernel set (1 and 2 threads, GEMV and GEMM token counts) against a
// double-precision reference that quantizes the activations the same way, the GEMV's batch
// invariance and its agreement with the GEMM, and the fast path against the exact one.
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
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
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

// The AVX2 activation quantizers against the scalar ones, bit for bit (quants, q16, scales, sums),
// in every form, for both activation types (Q8_0: widths with a partial 256-input block; Q8_K by
// 32- and 16-input groups). Rows: N(0,1) values; values on a grid of 1/254 of 0.37 (so products
// land on and near the halfway points of the rounding); a block whose largest magnitude
// is negative and repeats; an all-zero block; and the largest magnitude repeating with both signs,
// positive first in some blocks and negative in others (its first one sets Q8_K's sign).
TEST(MatmulQ8Activations, Avx2EqualsScalarBitForBit) {
  if (!keel::cpu::isa_supported(Isa::avx2)) GTEST_SKIP() << "no AVX2 here";
  using keel::cpu::Q8ActForm;
  std::mt19937 rng(33);
  for (Type type : kQ8Types)
    for (int64_t n_in : widths(type)) {
      constexpr int kTok = 5;
      auto x = random_floats(kTok * n_in, rng);
      for (int64_t k = 0; k < n_in; ++k)
        if (k % 4 == 1) x[4 * n_in + k] = (k / 4 + k / 256) % 2 ? -5.0f : 5.0f;  // two in each 8
      std::uniform_int_distribution<int> step(-254, 254);
      for (int64_t k = 0; k < n_in; ++k) x[n_in + k] = 0.37f * static_cast<float>(step(rng)) / 254.0f;
      for (int64_t k = 0; k < n_in; ++k) x[2 * n_in + k] = k % 7 == 3 ? -2.5f : x[2 * n_in + k];
      std::fill(x.begin() + 3 * n_in, x.begin() + 3 * n_in + 32, 0.0f);
      if (n_in >= 256) std::fill(x.begin() + 3 * n_in, x.begin() + 3 * n_in + 256, 0.0f);
      const int64_t nkb = (n_in + 255) / 256;
      for (Q8ActForm form : {Q8ActForm::offset, Q8ActForm::offset_q16, Q8ActForm::signed_q}) {
        std::vector<keel::cpu::ActBlockQ8> want(kTok * nkb), got(kTok * nkb);
        keel::cpu::quantize_activations_q8(Isa::generic, type, x.data(), n_in, 0, kTok, want.data(), form);
        keel::cpu::quantize_activations_q8(Isa::avx2, type, x.data(), n_in, 0, kTok, got.data(), form);
        for (int64_t b = 0; b < kTok * nkb; ++b)
          EXPECT_EQ(0, std::memcmp(&want[b], &got[b], sizeof want[b]))
              << label(type) << " width " << n_in << " form " << int(form) << " token " << b / nkb << " block " << b % nkb;
      }
    }
}

// The AVX2 weight unpacking and interleaving against the scalar ones, bit for bit: every field of
// the packed panel, for every type (random quant bytes: every bit pattern of qs, qh and ql),
// partial 256-input blocks (Q4_0, Q8_0), rows from an offset, fewer than 16 rows, with and
// without the offsets.
TEST(MatmulQ8Panels, Avx2EqualsScalarBitForBit) {
  if (!keel::cpu::isa_supported(Isa::avx2)) GTEST_SKIP() << "no AVX2 here";
  std::mt19937 rng(34);
  for (Type type : kQ8Types)
    for (int64_t n_in : widths(type)) {
      const int64_t n_out = 21;
      const auto wb = random_weights(type, n_in, n_out, rng);
      const WeightView w{type, wb.data(), n_in, n_out};
      auto want = std::make_unique<keel::cpu::PanelQ8>();
      auto got = std::make_unique<keel::cpu::PanelQ8>();
      for (int n_rows : {1, 7, 16})
        for (int64_t k0 = 0; k0 < n_in; k0 += 256)
          for (bool offsets : {true, false}) {
            const int64_t kc = std::min<int64_t>(256, n_in - k0);
            std::memset(want.get(), 0xA5, sizeof *want);
            std::memset(got.get(), 0xA5, sizeof *got);
            keel::cpu::pack_panel_q8(w, 5, n_rows, k0, kc, want.get(), offsets, Isa::generic);
            keel::cpu::pack_panel_q8(w, 5, n_rows, k0, kc, got.get(), offsets, Isa::avx2);
            EXPECT_EQ(0, std::memcmp(want.get(), got.get(), sizeof *want))
                << label(type) << " width " << n_in << " rows " << n_rows << " k0 " << k0 << " offsets " << offsets;
          }
    }
}

// Each micro-kernel against the scalar one on the same packed panel: 1..16 rows, 1 to the
// kernel's tokens per call (4; 16 for AMX), each with the activations in the form it reads.
TEST(MatmulQ8Kernels, SimdMatchesScalar) {
  using keel::cpu::Q8ActForm;
  std::mt19937 rng(21);
  constexpr int kMaxTok = keel::cpu::kQ8AmxTokens;
  for (Isa isa : kSimdIsas) {
    if (!have(isa)) continue;
    const int max_tok = keel::cpu::q8_micro_tokens(isa);
    for (Type type : kQ8Types) {
      const int64_t n_in = widths(type).back(), n_out = 16;
      const auto wb = random_weights(type, n_in, n_out, rng);
      const WeightView w{type, wb.data(), n_in, n_out};
      const auto x = random_floats(kMaxTok * n_in, rng);
      const int64_t nkb = (n_in + 255) / 256;
      std::vector<keel::cpu::ActBlockQ8> act(kMaxTok * nkb), simd_act(kMaxTok * nkb);
      keel::cpu::quantize_activations_q8(keel::cpu::Isa::generic, type, x.data(), n_in, 0, kMaxTok, act.data(), Q8ActForm::offset);
      keel::cpu::quantize_activations_q8(keel::cpu::Isa::generic, type, x.data(), n_in, 0, kMaxTok, simd_act.data(),
                                         keel::cpu::q8_act_form(isa, type));
      auto panel = std::make_unique<keel::cpu::PanelQ8>();
      auto simd_panel = std::make_unique<keel::cpu::PanelQ8>();
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
          keel::cpu::pack_panel_q8(w, 0, n_rows, k0, kc, simd_panel.get(),
                                   keel::cpu::q8_act_form(isa, type) != Q8ActForm::signed_q);
          if (const auto prepare = keel::cpu::q8_prepare(isa)) prepare(*simd_panel, kc);
          for (int n_tok = 1; n_tok <= max_tok; ++n_tok) {
            Guarded a(kMaxTok * 16), b(kMaxTok * 16);
            keel::cpu::q8_micro_generic()(*panel, kc, act.data() + kb, nkb, n_tok, a.data(), 16, n_rows, false);
            keel::cpu::q8_micro(isa)(*simd_panel, kc, simd_act.data() + kb, nkb, n_tok, b.data(), 16, n_rows, false);
            for (int t = 0; t < n_tok; ++t)
              for (int r = 0; r < n_rows; ++r) {
                const float u = a.data()[t * 16 + r], v = b.data()[t * 16 + r];
                ASSERT_NEAR(u, v, kRelTol * block_scale(k0, kc, t, r))
                    << keel::cpu::isa_name(isa) << " " << label(type) << " rows=" << n_rows
                    << " tokens=" << n_tok << " t=" << t << " r=" << r;
              }
            for (int t = 0; t < kMaxTok; ++t)
              for (int r = 0; r < 16; ++r)
                if (t >= n_tok || r >= n_rows) {
                  ASSERT_EQ(b.data()[t * 16 + r], kSentinel) << "wrote outside the tile";
                }
            EXPECT_TRUE(a.guards_intact() && b.guards_intact());
          }
        }
      }
    }
  }
}

// A two-panel micro-kernel (q8_micro_pair) gives the bits of two calls of its one-panel kernel:
// every type, a second panel of 1..16 rows, 1..4 tokens, onto y or not, y's rows wider than the
// tile and nothing written outside it.
TEST(MatmulQ8Kernels, PairEqualsTwoSinglePanelCallsBitForBit) {
  std::mt19937 rng(35);
  int compared = 0;
  for (Isa isa : kSimdIsas) {
    const keel::cpu::Q8MicroPairFn pair = have(isa) ? keel::cpu::q8_micro_pair(isa) : nullptr;
    if (pair == nullptr) continue;
    const keel::cpu::Q8MicroFn single = keel::cpu::q8_micro(isa);
    constexpr int kTok = keel::cpu::kQ8Tokens;
    constexpr int64_t kLdy = 40;  // two panels' 32 columns and 8 more
    for (Type type : kQ8Types) {
      const int64_t n_in = widths(type).back(), n_out = 32, nkb = (n_in + 255) / 256;
      const auto wb = random_weights(type, n_in, n_out, rng);
      const WeightView w{type, wb.data(), n_in, n_out};
      const auto x = random_floats(kTok * n_in, rng);
      std::vector<keel::cpu::ActBlockQ8> act(kTok * nkb);
      keel::cpu::quantize_activations_q8(Isa::generic, type, x.data(), n_in, 0, kTok, act.data(),
                                         keel::cpu::q8_act_form(isa, type));
      auto panels = std::make_unique<keel::cpu::PanelQ8[]>(2);
      for (int n_rows : {1, 9, 16})
        for (int64_t kb = 0; kb < nkb; ++kb) {
          const int64_t k0 = kb * 256, kc = std::min<int64_t>(256, n_in - k0);
          keel::cpu::pack_panel_q8(w, 0, 16, k0, kc, &panels[0], true, isa);
          keel::cpu::pack_panel_q8(w, 16, n_rows, k0, kc, &panels[1], true, isa);
          for (int n_tok = 1; n_tok <= kTok; ++n_tok)
            for (bool accumulate : {false, true}) {
              std::vector<float> a(kTok * kLdy, kSentinel), b(kTok * kLdy, kSentinel);
              for (int t = 0; t < n_tok; ++t)
                for (int r = 0; r < 16 + n_rows; ++r) a[t * kLdy + r] = b[t * kLdy + r] = 0.25f * (r + 1);
              single(panels[0], kc, act.data() + kb, nkb, n_tok, a.data(), kLdy, 16, accumulate);
              single(panels[1], kc, act.data() + kb, nkb, n_tok, a.data() + 16, kLdy, n_rows, accumulate);
              pair(panels.get(), kc, act.data() + kb, nkb, n_tok, b.data(), kLdy, n_rows, accumulate);
              ASSERT_EQ(a, b) << keel::cpu::isa_name(isa) << " " << label(type) << " rows=" << n_rows
                              << " tokens=" << n_tok << " accumulate=" << accumulate;
              for (int t = 0; t < kTok; ++t)
                for (int r = 0; r < kLdy; ++r)
                  if (t >= n_tok || r >= 16 + n_rows) {
                    ASSERT_EQ(b[t * kLdy + r], kSentinel) << "wrote outside the tile";
                  }
              ++compared;
            }
        }
    }
  }
  if (compared == 0) GTEST_SKIP() << "no two-panel micro-kernel on this CPU";
}

#if defined(__x86_64__)
// The AVX-VNNI kernels' results are bit for bit those of the kernels whose arithmetic they share:
// the AVX2 micro-kernel's for K-quants (exact int32 block sums with the group scales, float once a
// block), the AVX-512 VNNI micro-kernel's for Q4_0 and Q8_0 (float sums per group; the AVX2
// kernel's too), and the AVX-512 VNNI GEMV's (its 512-bit twins of the same kernels). Every
// type, 1..16 rows, 1..4 tokens, onto y or not; GEMVs: widths with a partial block, 1..7 tokens.
// The comparisons with AVX-512 VNNI need a CPU with both.
TEST(MatmulQ8Kernels, AvxVnniEqualsItsTwinsBitForBit) {
  using keel::cpu::Q8ActForm;
  if (!keel::cpu::isa_supported(Isa::avxvnni)) GTEST_SKIP() << "this CPU lacks AVX-VNNI";
  const bool vnni = have(Isa::avx512);
  std::mt19937 rng(33);
  constexpr int kTok = keel::cpu::kQ8Tokens;
  int compared = 0;
  for (Type type : kQ8Types) {
    const bool k_quant = type != Type::Q4_0 && type != Type::Q8_0;
    if (!k_quant && !vnni) continue;
    const keel::cpu::Q8MicroFn twin = k_quant ? keel::cpu::q8_micro_avx2() : keel::cpu::q8_micro_vnni();
    const int64_t n_in = widths(type).back(), n_out = 16, nkb = (n_in + 255) / 256;
    const auto wb = random_weights(type, n_in, n_out, rng);
    const WeightView w{type, wb.data(), n_in, n_out};
    const auto x = random_floats(kTok * n_in, rng);
    std::vector<keel::cpu::ActBlockQ8> act(kTok * nkb);
    keel::cpu::quantize_activations_q8(Isa::generic, type, x.data(), n_in, 0, kTok, act.data(), Q8ActForm::offset);
    auto panel = std::make_unique<keel::cpu::PanelQ8>();
    for (int n_rows : {1, 9, 16})
      for (int64_t kb = 0; kb < nkb; ++kb) {
        const int64_t k0 = kb * 256, kc = std::min<int64_t>(256, n_in - k0);
        keel::cpu::pack_panel_q8(w, 0, n_rows, k0, kc, panel.get());
        for (int n_tok = 1; n_tok <= kTok; ++n_tok)
          for (bool accumulate : {false, true}) {
            std::vector<float> a(kTok * 16, 0.25f), b(kTok * 16, 0.25f);
            twin(*panel, kc, act.data() + kb, nkb, n_tok, a.data(), 16, n_rows, accumulate);
            keel::cpu::q8_micro_avxvnni()(*panel, kc, act.data() + kb, nkb, n_tok, b.data(), 16, n_rows, accumulate);
            ASSERT_EQ(a, b) << label(type) << " rows=" << n_rows << " tokens=" << n_tok << " accumulate=" << accumulate;
            ++compared;
          }
      }
    if (!vnni) continue;
    for (int64_t width : widths(type)) {
      const auto wg = random_weights(type, width, 33, rng);
      const size_t rb = quant::row_bytes(type, static_cast<uint64_t>(width));
      for (int64_t n_tok = 1; n_tok <= 7; ++n_tok) {
        const auto xg = random_floats(n_tok * width, rng);
        std::vector<keel::cpu::GemvActQ8> gact(n_tok * ((width + 255) / 256));
        keel::cpu::quantize_activations_gemv_q8(type, xg.data(), width, n_tok, gact.data());
        std::vector<float> a(n_tok * 33), b(n_tok * 33);
        keel::cpu::q8_gemv_vnni(type)(wg.data(), rb, width, 33, gact.data(), n_tok, a.data(), 33);
        keel::cpu::q8_gemv_avxvnni(type)(wg.data(), rb, width, 33, gact.data(), n_tok, b.data(), 33);
        ASSERT_EQ(a, b) << "GEMV " << label(type) << " n_in=" << width << " tokens=" << n_tok;
        ++compared;
      }
    }
  }
  EXPECT_GT(compared, 0);
}

// The AMX kernel's integer sums are the VNNI kernel's (Q4_0, Q8_0) or the AVX2 kernel's (K-quants:
// whole blocks with the group scales applied in integers), scaled and summed in the same order:
// its results are that kernel's bit for bit, for every token count of a call (1..16: one call of
// the other per 4 tokens), accumulating onto y or not.
TEST(MatmulQ8Kernels, AmxEqualsVnniOrAvx2BitForBit) {
  using keel::cpu::Q8ActForm;
  if (!keel::cpu::amx_int8_usable() || !keel::cpu::cpu_has_avx512_vnni())
    GTEST_SKIP() << "no AMX-INT8 tiles (or no AVX-512 VNNI) on this CPU, or the OS does not grant them";
  std::mt19937 rng(27);
  constexpr int kTok = keel::cpu::kQ8AmxTokens;
  for (Type type : kQ8Types)
    for (int64_t n_in : widths(type)) {
      const auto wb = random_weights(type, n_in, 16, rng);
      const WeightView w{type, wb.data(), n_in, 16};
      const auto x = random_floats(kTok * n_in, rng);
      const int64_t nkb = (n_in + 255) / 256;
      std::vector<keel::cpu::ActBlockQ8> offset_act(kTok * nkb), signed_act(kTok * nkb);
      keel::cpu::quantize_activations_q8(keel::cpu::Isa::generic, type, x.data(), n_in, 0, kTok, offset_act.data(), Q8ActForm::offset);
      keel::cpu::quantize_activations_q8(keel::cpu::Isa::generic, type, x.data(), n_in, 0, kTok, signed_act.data(), Q8ActForm::signed_q);
      auto panel = std::make_unique<keel::cpu::PanelQ8>();
      for (int n_rows : {5, 16})
        for (int n_tok : {1, 3, 4, 7, 15, 16}) {
          std::vector<float> vnni(kTok * 16, kSentinel), amx(kTok * 16, kSentinel);  // vnni: or AVX2's
          for (int64_t kb = 0; kb < nkb; ++kb) {
            const int64_t kc = std::min<int64_t>(256, n_in - kb * 256);
            keel::cpu::pack_panel_q8(w, 0, n_rows, kb * 256, kc, panel.get());
            auto amx_panel = std::make_unique<keel::cpu::PanelQ8>();
            keel::cpu::pack_panel_q8(w, 0, n_rows, kb * 256, kc, amx_panel.get(), false);
            keel::cpu::q8_prepare_amx()(*amx_panel, kc);
            const bool k_quant = type == Type::Q4_K || type == Type::Q5_K || type == Type::Q6_K;
            if (k_quant) keel::cpu::q8_prepare_avx2()(*panel, kc);
            const auto other = k_quant ? keel::cpu::q8_micro_avx2() : keel::cpu::q8_micro_vnni();
            for (int t0 = 0; t0 < n_tok; t0 += keel::cpu::kQ8Tokens)
              other(*panel, kc, offset_act.data() + t0 * nkb + kb, nkb, std::min(keel::cpu::kQ8Tokens, n_tok - t0),
                    vnni.data() + t0 * 16, 16, n_rows, kb > 0);
            keel::cpu::q8_micro_amx()(*amx_panel, kc, signed_act.data() + kb, nkb, n_tok, amx.data(), 16, n_rows, kb > 0);
          }
          ASSERT_EQ(amx, vnni) << label(type) << " n_in=" << n_in << " rows=" << n_rows << " tokens=" << n_tok;
        }
    }
}
#endif

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
        for (int64_t n_tok : {1, 2, 3, 4, 5, 6, 9, 33}) {  // GEMV (< 5) and GEMM
          const auto x = random_floats(n_tok * n_in, rng);
          const auto scale = abs_products(w, x.data(), n_tok);
          std::vector<float> ref(n_tok * n_out), exact(n_tok * n_out);
          keel::cpu::matmul_q8_reference(w, x.data(), n_tok, ref.data());
          keel::cpu::matmul_reference(w, x.data(), n_tok, exact.data());
          int differs = 0;
          for (int64_t i = 0; i < n_tok * n_out; ++i) differs += ref[i] != exact[i];
          EXPECT_GT(differs, 0) << "the reference does not quantize";
          expect_within(ref.data(), exact.data(), scale, n_tok * n_out, 0.03, label(type) + " q8 vs exact");
          for (Isa isa : {Isa::generic, Isa::avx2, Isa::avxvnni, Isa::avx512, Isa::neon, Isa::dotprod, Isa::i8mm}) {
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

// A call longer than kQ8TokenBlock runs block by block: every token's row equals the same tokens
// multiplied in calls of their own (the first block, then the rest), bit for bit.
TEST(MatmulQ8Driver, LongCallsEqualTheirBlocksAlone) {
  std::mt19937 rng(31);
  ThreadPool pool(2);
  const Isa isa = keel::cpu::best_isa();
  for (Type type : {Type::Q8_0, Type::Q4_K}) {
    const int64_t n_in = 512, n_out = 33, n_tok = keel::cpu::kQ8TokenBlock + 37;
    const auto wb = random_weights(type, n_in, n_out, rng);
    const WeightView w{type, wb.data(), n_in, n_out};
    const auto x = random_floats(n_tok * n_in, rng);
    std::vector<char> scratch(keel::cpu::matmul_q8_scratch_bytes(n_in, n_tok, 2) + 64);
    char* s = scratch.data() + (64 - reinterpret_cast<uintptr_t>(scratch.data()) % 64) % 64;
    std::vector<float> whole(n_tok * n_out, kSentinel), parts(n_tok * n_out, kSentinel);
    keel::cpu::matmul_q8_with(isa, w, x.data(), n_tok, whole.data(), s, pool);
    const int64_t first = keel::cpu::kQ8TokenBlock;
    keel::cpu::matmul_q8_with(isa, w, x.data(), first, parts.data(), s, pool);
    keel::cpu::matmul_q8_with(isa, w, x.data() + first * n_in, n_tok - first, parts.data() + first * n_out, s, pool);
    ASSERT_EQ(whole, parts) << label(type);
    std::vector<float> ref(n_tok * n_out);
    keel::cpu::matmul_q8_reference(w, x.data(), n_tok, ref.data());
    expect_within(whole.data(), ref.data(), abs_products(w, x.data(), n_tok), n_tok * n_out, kRelTol, label(type));
  }
}

// Rows of many input blocks (17, the last partial for Q8_0; the other tests' rows have at most 3):
// a call equals the reference within tolerance, and the same tokens in a call of their own
// (other token tiles) bit for bit, for 1 and 2 threads, partial panels and token tiles.
TEST(MatmulQ8Driver, WideRows) {
  std::mt19937 rng(37);
  ThreadPool pools[2] = {ThreadPool(1), ThreadPool(2)};
  const Isa isa = keel::cpu::best_isa();
  for (Type type : {Type::Q8_0, Type::Q4_K, Type::Q6_K}) {
    const int64_t extra = type == Type::Q8_0 ? 288 : 256;  // Q8_0: a partial 256-input block too
    const int64_t n_in = 16 * keel::cpu::kQ8BlockK + extra, n_out = 37, n_tok = 21;
    const auto wb = random_weights(type, n_in, n_out, rng);
    const WeightView w{type, wb.data(), n_in, n_out};
    const auto x = random_floats(n_tok * n_in, rng);
    std::vector<float> ref(n_tok * n_out);
    keel::cpu::matmul_q8_reference(w, x.data(), n_tok, ref.data());
    for (ThreadPool& pool : pools) {
      std::vector<char> scratch(keel::cpu::matmul_q8_scratch_bytes(n_in, n_tok, pool.size()) + 64);
      char* s = scratch.data() + (64 - reinterpret_cast<uintptr_t>(scratch.data()) % 64) % 64;
      std::vector<float> whole(n_tok * n_out, kSentinel);
      keel::cpu::matmul_q8_with(isa, w, x.data(), n_tok, whole.data(), s, pool);
      const std::string what = label(type) + " threads " + std::to_string(pool.size());
      expect_within(whole.data(), ref.data(), abs_products(w, x.data(), n_tok), n_tok * n_out, kRelTol, what);
      // Token 7 again in a call of 5 tokens from it (tiles of other sizes, the same sums).
      std::vector<float> part(5 * n_out, kSentinel);
      keel::cpu::matmul_q8_with(isa, w, x.data() + 7 * n_in, 5, part.data(), s, pool);
      for (int64_t t = 0; t < 5; ++t)
        for (int64_t r = 0; r < n_out; ++r)
          ASSERT_EQ(part[t * n_out + r], whole[(7 + t) * n_out + r]) << what << " token " << 7 + t << " row " << r;
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

// The GEMV's activations are the GEMM's quants, signed (as the AMX kernel's too), with the same
// scales and sums.
TEST(MatmulQ8Gemv, ActivationsAreTheGemmQuants) {
  std::mt19937 rng(25);
  for (Type type : kQ8Types) {
    const int64_t n_in = widths(type).back(), nkb = (n_in + 255) / 256;
    const auto x = random_floats(2 * n_in, rng);
    std::vector<keel::cpu::GemvActQ8> gemv(2 * nkb);
    keel::cpu::quantize_activations_gemv_q8(type, x.data(), n_in, 2, gemv.data());
    std::vector<keel::cpu::ActBlockQ8> act(2 * nkb);
    keel::cpu::quantize_activations_q8(keel::cpu::Isa::generic, type, x.data(), n_in, 0, 2, act.data(), keel::cpu::Q8ActForm::offset);
    std::vector<keel::cpu::ActBlockQ8> signed_act(2 * nkb);
    keel::cpu::quantize_activations_q8(keel::cpu::Isa::generic, type, x.data(), n_in, 0, 2, signed_act.data(), keel::cpu::Q8ActForm::signed_q);
    const int group = keel::cpu::q8_group(type);
    for (int64_t i = 0; i < 2 * nkb; ++i) {
      const int64_t kc = std::min<int64_t>(256, n_in - (i % nkb) * 256);
      for (int64_t k = 0; k < kc; ++k) {
        ASSERT_EQ(gemv[i].q[k], int(act[i].q[k]) - 128) << label(type);
        ASSERT_EQ(gemv[i].q[k], static_cast<int8_t>(signed_act[i].q[k])) << label(type);
      }
      for (int64_t g = 0; g < kc / group; ++g) {
        ASSERT_EQ(gemv[i].d[g], act[i].d[g]) << label(type);
        ASSERT_EQ(gemv[i].dsum[g], act[i].dsum[g]) << label(type);
      }
      for (int64_t s = 0; s < kc / 16; ++s) {
        int sum = 0;
        for (int64_t k = 16 * s; k < 16 * s + 16; ++k) sum += gemv[i].q[k];
        ASSERT_EQ(gemv[i].qsum[s], sum) << label(type);
      }
    }
  }
}

// Each SIMD GEMV kernel against its scalar twin: odd row counts, widths that are not a multiple
// of 256 where the type allows, 1..7 tokens (past 4 the kernels take a second group of tokens).
TEST(MatmulQ8Gemv, SimdMatchesScalar) {
  std::mt19937 rng(26);
  int checked = 0;
  for (Isa isa : kSimdIsas) {
    if (!keel::cpu::isa_supported(isa)) continue;
    for (Type type : kQ8Types) {
      const keel::cpu::Q8GemvFn simd = keel::cpu::q8_gemv(isa, type), scalar = keel::cpu::q8_gemv_generic(type);
      if (simd == scalar) continue;  // no SIMD GEMV at this level
      ++checked;
      for (int64_t n_in : widths(type))
        for (int64_t n_out : {1, 7, 33}) {
          const auto wb = random_weights(type, n_in, n_out, rng);
          const WeightView w{type, wb.data(), n_in, n_out};
          const size_t rb = quant::row_bytes(type, static_cast<uint64_t>(n_in));
          for (int64_t n_tok = 1; n_tok <= 7; ++n_tok) {
            const auto x = random_floats(n_tok * n_in, rng);
            const auto scale = abs_products(w, x.data(), n_tok);
            std::vector<keel::cpu::GemvActQ8> act(n_tok * ((n_in + 255) / 256));
            keel::cpu::quantize_activations_gemv_q8(type, x.data(), n_in, n_tok, act.data());
            Guarded a(n_tok * n_out), b(n_tok * n_out);
            scalar(wb.data(), rb, n_in, n_out, act.data(), n_tok, a.data(), n_out);
            simd(wb.data(), rb, n_in, n_out, act.data(), n_tok, b.data(), n_out);
            const std::string what = std::string(keel::cpu::isa_name(isa)) + " " + label(type) + " n_in=" +
                                     std::to_string(n_in) + " n_out=" + std::to_string(n_out) +
                                     " n_tok=" + std::to_string(n_tok);
            expect_within(b.data(), a.data(), scale, n_tok * n_out, kRelTol, what);
            EXPECT_TRUE(a.guards_intact() && b.guards_intact()) << what;
          }
        }
    }
  }
#if defined(__x86_64__)
  if (keel::cpu::isa_supported(Isa::avx2)) {
    EXPECT_GT(checked, 0) << "no SIMD GEMV was compared";
  }
#endif
}

// Batch invariance below kGemmMinTokens: a token's result is the same bits whatever else shares
// the call and whatever the thread count.
TEST(MatmulQ8Gemv, BatchInvariant) {
  std::mt19937 rng(27);
  ThreadPool pools[2] = {ThreadPool(1), ThreadPool(2)};
  for (Type type : kQ8Types) {
    const int64_t n_in = widths(type).back(), n_out = 37;
    const auto wb = random_weights(type, n_in, n_out, rng);
    const WeightView w{type, wb.data(), n_in, n_out};
    const int64_t n_tok = keel::cpu::kGemmMinTokens - 1;
    const auto x = random_floats(n_tok * n_in, rng);
    for (Isa isa : {Isa::generic, Isa::avx2, Isa::avxvnni, Isa::avx512, Isa::neon, Isa::dotprod, Isa::i8mm}) {
      if (!keel::cpu::isa_supported(isa)) continue;
      std::vector<char> scratch(keel::cpu::matmul_scratch_bytes(type, n_in, n_tok, 2, MatmulMode::fast));
      std::vector<float> all(n_tok * n_out);
      keel::cpu::matmul_with(isa, w, x.data(), n_tok, all.data(), scratch.data(), pools[1], MatmulMode::fast);
      for (ThreadPool& pool : pools)
        for (int64_t t0 = 0; t0 < n_tok; ++t0)
          for (int64_t len = 1; t0 + len <= n_tok; ++len) {
            std::vector<float> part(len * n_out);
            keel::cpu::matmul_with(isa, w, x.data() + t0 * n_in, len, part.data(), scratch.data(), pool, MatmulMode::fast);
            for (int64_t i = 0; i < len * n_out; ++i)
              ASSERT_EQ(part[i], all[t0 * n_out + i]) << keel::cpu::isa_name(isa) << " " << label(type) << " tokens ["
                                                      << t0 << ", " << t0 + len << ") threads=" << pool.size();
          }
    }
  }
}

// matmuls quantizes x once per activation format and multiplies every weight of that format with
// it; each result must be bit for bit what matmul gives for the weight alone (GEMV and GEMM token
// counts; only Q8_0, only K-quants, and a mix with a float weight between the quantized ones).
TEST(MatmulQ8Driver, MatmulsMatchMatmulPerWeight) {
  std::mt19937 rng(29);
  ThreadPool pools[2] = {ThreadPool(1), ThreadPool(2)};
  const int64_t n_in = 512;
  const std::vector<std::vector<Type>> calls = {
      {Type::Q8_0, Type::Q8_0, Type::Q8_0},
      {Type::Q4_K, Type::Q5_K, Type::Q6_K, Type::Q4_K},
      {Type::Q6_K, Type::Q8_0, Type::F32, Type::Q4_K, Type::Q4_0, Type::Q6_K, Type::Q5_K}};
  for (const auto& types : calls) {
    std::vector<std::vector<uint8_t>> data;
    std::vector<WeightView> weights;
    for (size_t i = 0; i < types.size(); ++i) data.push_back(random_weights(types[i], n_in, 16 + 7 * i, rng));
    for (size_t i = 0; i < types.size(); ++i) weights.push_back({types[i], data[i].data(), n_in, int64_t(16 + 7 * i)});
    for (int64_t n_tok : {3, 9, 33}) {
      const auto x = random_floats(n_tok * n_in, rng);
      for (Isa isa : {Isa::generic, Isa::avx2, Isa::avxvnni, Isa::avx512, Isa::neon, Isa::dotprod, Isa::i8mm}) {
        if (!keel::cpu::isa_supported(isa)) continue;
        for (ThreadPool& pool : pools) {
          size_t bytes = 0;
          for (const WeightView& w : weights)
            bytes = std::max(bytes, keel::cpu::matmul_scratch_bytes(w.type, n_in, n_tok, pool.size(), MatmulMode::fast));
          std::vector<char> scratch(bytes);
          std::vector<std::vector<float>> alone, shared;
          std::vector<keel::cpu::MatmulProduct> products;
          for (const WeightView& w : weights) {
            alone.emplace_back(n_tok * w.n_out);
            keel::cpu::matmul_with(isa, w, x.data(), n_tok, alone.back().data(), scratch.data(), pool, MatmulMode::fast);
            shared.emplace_back(n_tok * w.n_out, kSentinel);
          }
          for (size_t i = 0; i < weights.size(); ++i) products.push_back({&weights[i], shared[i].data()});
          keel::cpu::matmuls_with(isa, x.data(), n_tok, products, scratch.data(), pool, MatmulMode::fast);
          for (size_t i = 0; i < weights.size(); ++i)
            ASSERT_EQ(shared[i], alone[i]) << keel::cpu::isa_name(isa) << " weight " << i << " ("
                                           << label(types[i]) << ") n_tok=" << n_tok << " threads=" << pool.size();
        }
      }
    }
  }
}

// The CPU backend's matmuls (one quantization of x per activation format) against its matmul per
// weight, bit for bit, on a batch it splits per sequence (a prefill chunk, single-token decodes).
TEST(MatmulQ8Driver, BackendMatmulsMatchMatmul) {
  std::mt19937 rng(30);
  const int64_t n_in = 256;
  const Type types[] = {Type::Q4_K, Type::Q8_0, Type::Q6_K, Type::Q4_K};
  std::vector<std::vector<uint8_t>> data;
  std::vector<WeightView> weights;
  for (int i = 0; i < 4; ++i) data.push_back(random_weights(types[i], n_in, 20 + i, rng));
  for (int i = 0; i < 4; ++i) weights.push_back({types[i], data[i].data(), n_in, 20 + i});
  const std::vector<keel::backend::SeqSlice> seqs = {{0, 9, 0, 0}, {9, 1, 5, 1}, {10, 1, 7, 2}, {11, 6, 0, 3}};
  const int64_t n_tok = 17;
  keel::backend::WorkloadShape shape;
  shape.max_tokens = n_tok;
  shape.n_seqs = 4;
  shape.n_threads = 2;
  for (const WeightView& w : weights) shape.matrices.push_back({w.type, w.n_in});
  keel::cpu::CpuBackend be(2);
  be.reserve(shape);
  const auto x = random_floats(n_tok * n_in, rng);
  for (int32_t n_seqs : {1, 4}) {  // one prefill chunk; the mixed batch
    keel::backend::Batch batch;
    batch.n_tokens = n_tok;
    batch.n_seqs = n_seqs;
    batch.seqs = seqs.data();
    be.begin_batch(batch);
    std::vector<std::vector<float>> alone(4), shared(4);
    for (int i = 0; i < 4; ++i) {
      alone[i].resize(n_tok * weights[i].n_out);
      shared[i].assign(n_tok * weights[i].n_out, kSentinel);
      be.matmul(weights[i], x.data(), n_tok, alone[i].data());
    }
    be.matmuls(x.data(), n_tok, {{weights[0], shared[0].data()}, {weights[1], shared[1].data()},
                                 {weights[2], shared[2].data()}, {weights[3], shared[3].data()}});
    for (int i = 0; i < 4; ++i) ASSERT_EQ(shared[i], alone[i]) << "weight " << i << " n_seqs=" << n_seqs;
  }
}

// The fast GEMV (decode) and the fast GEMM (prefill) compute the same sums in another order.
TEST(MatmulQ8Gemv, AgreesWithTheGemm) {
  std::mt19937 rng(28);
  ThreadPool pool(2);
  for (Type type : kQ8Types) {
    const int64_t n_in = widths(type).back(), n_out = 21, n_tok = 4;
    const auto wb = random_weights(type, n_in, n_out, rng);
    const WeightView w{type, wb.data(), n_in, n_out};
    const auto x = random_floats(n_tok * n_in, rng);
    const auto scale = abs_products(w, x.data(), n_tok);
    const Isa isa = keel::cpu::best_isa();
    std::vector<char> s1(keel::cpu::matmul_scratch_bytes(type, n_in, n_tok, 2, MatmulMode::fast) + 64);
    std::vector<char> s2(keel::cpu::matmul_q8_scratch_bytes(n_in, n_tok, 2) + 64);
    const auto aligned = [](std::vector<char>& v) {
      return v.data() + (64 - reinterpret_cast<uintptr_t>(v.data()) % 64) % 64;
    };
    std::vector<float> gemv(n_tok * n_out), gemm(n_tok * n_out);
    keel::cpu::matmul_with(isa, w, x.data(), n_tok, gemv.data(), s1.data(), pool, MatmulMode::fast);
    keel::cpu::matmul_q8_with(isa, w, x.data(), n_tok, gemm.data(), aligned(s2), pool);
    expect_within(gemv.data(), gemm.data(), scale, n_tok * n_out, kRelTol, label(type) + " gemv vs gemm");
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
