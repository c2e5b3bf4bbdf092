// matmul kernels: every SIMD kernel (AVX2, AVX-512, NEON) against its scalar twin, and matmul
// (every kernel set, 1 and 2 threads) against matmul_reference, on random valid blocks, odd sizes and sentinel-guarded
// output buffers.
//
// Tolerance: the weights are dequantized exactly on every path (the dequant kernels are even
// bit-exact with quant::dequantize_row), so results differ only by float summation order and FMA
// rounding: |y − ref| ≤ n_in·2⁻²⁴·Σ_k |w_k·x_k| in the worst case. We check
// |y − ref| ≤ kRelTol·Σ_k |w_k·x_k| with kRelTol = 1e-5 (n_in ≤ 512 here), the same for every
// weight type.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/matmul.h"
#include "quant/blocks.h"
#include "quant/dequant.h"
#include "matmul_test_util.h"

namespace {

using keel::cpu::Isa;
using keel::cpu::ThreadPool;
using keel::cpu::WeightView;
using keel::quant::Type;
namespace quant = keel::quant;
using namespace keel::test;

constexpr double kRelTol = 1e-5;

const Type kTypes[] = {Type::F32, Type::F16, Type::BF16, Type::Q4_0,
                       Type::Q8_0, Type::Q4_K, Type::Q5_K, Type::Q6_K};

bool have_avx2() { return keel::cpu::isa_supported(Isa::avx2); }
bool have_avx512() { return keel::cpu::isa_supported(Isa::avx512); }

void expect_close(const float* got, const float* want, const std::vector<double>& scale, int64_t n,
                  const std::string& what) {
  int bad = 0;
  for (int64_t i = 0; i < n && bad < 5; ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    if (!(err <= kRelTol * scale[i] + 1e-30)) {
      ADD_FAILURE() << what << " element " << i << ": " << got[i] << " vs " << want[i]
                    << " (scale " << scale[i] << ")";
      ++bad;
    }
  }
}

int64_t n_in_for(Type type) {
  // Several blocks, crossing the 256-input panel boundary; not a multiple of 8 for float types.
  switch (type) {
    case Type::F32: case Type::F16: case Type::BF16: return 301;
    case Type::Q4_0: case Type::Q8_0: return 288;
    default: return 512;
  }
}

std::string label(Type type) { return std::string(quant::type_name(type)); }

}  // namespace

// The detected level is one this CPU supports, and KEEL_CPU_ISA caps it. scripts/test_aarch64.sh
// sets KEEL_TEST_EXPECT_ISA to the level its qemu CPU model (and cap) must give: this checks the
// runtime detection (getauxval) on each of them.
TEST(CpuIsa, DetectsAndCaps) {
  const Isa best = keel::cpu::best_isa();
  std::printf("[ isa      ] %s\n", keel::cpu::isa_name(best));
  EXPECT_TRUE(keel::cpu::isa_supported(best));
  EXPECT_TRUE(keel::cpu::isa_supported(Isa::generic));
  const char* cap = std::getenv("KEEL_CPU_ISA");
  if (cap && std::string(cap) == "generic") {
    EXPECT_EQ(best, Isa::generic);
  }
  if (const char* want = std::getenv("KEEL_TEST_EXPECT_ISA")) {
    EXPECT_STREQ(keel::cpu::isa_name(best), want);
  }
#if defined(__x86_64__)
  EXPECT_FALSE(keel::cpu::isa_supported(Isa::neon));
  // AVX-VNNI sits between AVX2 and AVX-512: not under a cap at avx2, the level itself under a cap
  // at avxvnni where the CPU has it.
  if (best == Isa::avx2) EXPECT_FALSE(keel::cpu::isa_supported(Isa::avxvnni));
  if (cap && std::string(cap) == "avxvnni" && keel::cpu::isa_supported(Isa::avxvnni)) EXPECT_EQ(best, Isa::avxvnni);
#elif defined(__aarch64__)
  EXPECT_FALSE(keel::cpu::isa_supported(Isa::avx2));
#endif
}

void check_dequant(Isa isa) {
  std::mt19937 rng(1);
  for (Type type : kTypes) {
    const int64_t n = type == Type::F32 || type == Type::F16 || type == Type::BF16 ? 1027 : 1024;
    const auto w = random_weights(type, n, 1, rng);
    Guarded a(n), b(n);
    keel::cpu::type_kernels(Isa::generic, type).dequant_row(w.data(), a.data(), n);
    keel::cpu::type_kernels(isa, type).dequant_row(w.data(), b.data(), n);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), n * sizeof(float))) << keel::cpu::isa_name(isa) << " " << label(type);
    // The generic twin is the reference dequantizer.
    std::vector<float> ref(n);
    quant::dequantize_row(type, w.data(), ref.data(), n);
    EXPECT_EQ(0, std::memcmp(a.data(), ref.data(), n * sizeof(float))) << label(type);
    EXPECT_TRUE(a.guards_intact() && b.guards_intact()) << label(type);
  }
}

void check_gemv(Isa isa) {
  std::mt19937 rng(2);
  for (Type type : kTypes) {
    const int64_t n_in = n_in_for(type);
    for (int64_t n_out : {1, 13, 67}) {
      const auto wb = random_weights(type, n_in, n_out, rng);
      const WeightView w{type, wb.data(), n_in, n_out};
      const size_t rb = quant::row_bytes(type, n_in);
      for (int64_t n_tok : {1, 2, 3, 5, 7}) {
        const auto x = random_floats(n_tok * n_in, rng);
        const auto scale = abs_products(w, x.data(), n_tok);
        std::vector<float> xsum(n_tok * (n_in / keel::cpu::kSumBlock));
        keel::cpu::sum_activation_blocks(x.data(), n_in, n_tok, xsum.data());
        Guarded a(n_tok * n_out), b(n_tok * n_out);
        keel::cpu::type_kernels(Isa::generic, type)
            .gemv(wb.data(), rb, n_in, n_out, x.data(), n_in, xsum.data(), n_tok, a.data(), n_out);
        keel::cpu::type_kernels(isa, type)
            .gemv(wb.data(), rb, n_in, n_out, x.data(), n_in, xsum.data(), n_tok, b.data(), n_out);
        const std::string what = std::string(keel::cpu::isa_name(isa)) + " " + label(type) +
                                 " gemv n_out=" + std::to_string(n_out) + " n_tok=" + std::to_string(n_tok);
        expect_close(b.data(), a.data(), scale, n_tok * n_out, what);
        EXPECT_TRUE(a.guards_intact() && b.guards_intact()) << what;
      }
    }
  }
}

TEST(MatmulKernels, DequantAvx2IsBitExact) {
  if (!have_avx2()) GTEST_SKIP() << "no AVX2";
  check_dequant(Isa::avx2);
}

TEST(MatmulKernels, GemvAvx2MatchesScalar) {
  if (!have_avx2()) GTEST_SKIP() << "no AVX2";
  check_gemv(Isa::avx2);
}

TEST(MatmulKernels, DequantNeonIsBitExact) {
  if (!keel::cpu::isa_supported(Isa::neon)) GTEST_SKIP() << "not AArch64 (or KEEL_CPU_ISA=generic)";
  check_dequant(Isa::neon);
}

TEST(MatmulKernels, GemvNeonMatchesScalar) {
  if (!keel::cpu::isa_supported(Isa::neon)) GTEST_SKIP() << "not AArch64 (or KEEL_CPU_ISA=generic)";
  check_gemv(Isa::neon);
}

void check_pack_and_micro(Isa isa) {
  std::mt19937 rng(3);
  const auto gen = keel::cpu::gemm_kernels(Isa::generic);
  const auto avx = keel::cpu::gemm_kernels(isa);
  for (int64_t kc : {1, 7, 8, 33, 256}) {
    for (int n_rows : {1, 5, 8, 13, 16}) {
      const auto rows = random_floats(keel::cpu::kTileRows * kc, rng);
      std::vector<float> pa(kc * keel::cpu::kTileRows, kSentinel), pb(pa);
      gen.pack_panel(rows.data(), kc, n_rows, kc, pa.data());
      avx.pack_panel(rows.data(), kc, n_rows, kc, pb.data());
      ASSERT_EQ(pa, pb) << "pack kc=" << kc << " n_rows=" << n_rows;
      const auto xp = random_floats(kc * keel::cpu::kTileTokens, rng);
      for (int n_tok : {1, 4, 6}) {
        for (bool accumulate : {false, true}) {
          const int64_t ldy = 19;
          Guarded a(n_tok * ldy), b(n_tok * ldy);
          for (int64_t i = 0; i < n_tok * ldy; ++i) a.data()[i] = b.data()[i] = float(i % 5);
          gen.micro(kc, xp.data(), pa.data(), a.data(), ldy, n_tok, n_rows, accumulate);
          avx.micro(kc, xp.data(), pa.data(), b.data(), ldy, n_tok, n_rows, accumulate);
          for (int t = 0; t < n_tok; ++t)
            for (int64_t j = 0; j < ldy; ++j) {
              const int64_t i = t * ldy + j;
              if (j >= n_rows) {  // outside the tile: untouched
                EXPECT_EQ(a.data()[i], float(i % 5));
                EXPECT_EQ(b.data()[i], float(i % 5));
                continue;
              }
              double s = accumulate ? std::fabs(float(i % 5)) : 0.0;
              for (int64_t k = 0; k < kc; ++k)
                s += std::fabs(double(xp[k * 6 + t]) * pa[k * 16 + j]);
              EXPECT_NEAR(a.data()[i], b.data()[i], kRelTol * s + 1e-30)
                  << "micro kc=" << kc << " n_rows=" << n_rows << " n_tok=" << n_tok;
            }
          EXPECT_TRUE(a.guards_intact() && b.guards_intact());
        }
      }
    }
  }
}

TEST(MatmulKernels, PackAndMicroKernelAvx2MatchScalar) {
  if (!have_avx2()) GTEST_SKIP() << "no AVX2";
  check_pack_and_micro(Isa::avx2);
}

TEST(MatmulKernels, MicroKernelAvx512MatchesScalar) {
  if (!have_avx512()) GTEST_SKIP() << "no AVX-512F";
  check_pack_and_micro(Isa::avx512);
}

TEST(MatmulKernels, MicroKernelNeonMatchesScalar) {
  if (!keel::cpu::isa_supported(Isa::neon)) GTEST_SKIP() << "not AArch64 (or KEEL_CPU_ISA=generic)";
  check_pack_and_micro(Isa::neon);
}

// matmul (each kernel set, 1 and 2 threads) against matmul_reference.
void check_matmul(Isa isa, std::mt19937& rng, std::initializer_list<int64_t> token_counts) {
  ThreadPool pools[2] = {ThreadPool(1), ThreadPool(2)};
  for (Type type : kTypes) {
    const int64_t n_in = n_in_for(type);
    for (int64_t n_out : {1, 13, 67}) {
      const auto wb = random_weights(type, n_in, n_out, rng);
      const WeightView w{type, wb.data(), n_in, n_out};
      for (int64_t n_tok : token_counts) {
        const auto x = random_floats(n_tok * n_in, rng);
        const auto scale = abs_products(w, x.data(), n_tok);
        std::vector<float> ref(n_tok * n_out);
        keel::cpu::matmul_reference(w, x.data(), n_tok, ref.data());
        for (ThreadPool& pool : pools) {
          const size_t sb = keel::cpu::matmul_scratch_bytes(type, n_in, n_tok, pool.size());
          std::vector<char> scratch(sb + 1 + 64, 0x5A);  // misaligned start, guard bytes after
          Guarded y(n_tok * n_out);
          keel::cpu::matmul_with(isa, w, x.data(), n_tok, y.data(), scratch.data() + 1, pool);
          const std::string what = std::string(keel::cpu::isa_name(isa)) + " " + label(type) +
                                   " n_out=" + std::to_string(n_out) + " n_tok=" +
                                   std::to_string(n_tok) + " threads=" + std::to_string(pool.size());
          expect_close(y.data(), ref.data(), scale, n_tok * n_out, what);
          EXPECT_TRUE(y.guards_intact()) << what;
          for (size_t i = sb + 1; i < scratch.size(); ++i)
            ASSERT_EQ(scratch[i], 0x5A) << what << ": wrote past the scratch";
        }
      }
    }
  }
}

TEST(MatmulDriver, GenericMatchesReference) {
  std::mt19937 rng(4);
  check_matmul(Isa::generic, rng, {1, 2, 3, 7, 31, 33, 64, 100});
}

TEST(MatmulDriver, Avx2MatchesReference) {
  if (!have_avx2()) GTEST_SKIP() << "no AVX2";
  std::mt19937 rng(5);
  check_matmul(Isa::avx2, rng, {1, 2, 3, 7, 31, 33, 64, 100});
}

TEST(MatmulDriver, Avx512MatchesReference) {
  if (!have_avx512()) GTEST_SKIP() << "no AVX-512F";
  std::mt19937 rng(7);
  check_matmul(Isa::avx512, rng, {1, 7, 31, 64, 100});
}

TEST(MatmulDriver, NeonMatchesReference) {
  if (!keel::cpu::isa_supported(Isa::neon)) GTEST_SKIP() << "not AArch64 (or KEEL_CPU_ISA=generic)";
  std::mt19937 rng(8);
  check_matmul(Isa::neon, rng, {1, 2, 3, 7, 31, 33, 64, 100});
}

TEST(MatmulDriver, ManyTokensCrossTokenBlocks) {
  std::mt19937 rng(6);
  ThreadPool pool(2);
  for (Type type : {Type::Q8_0, Type::Q5_K}) {
    const int64_t n_in = 512, n_out = 20, n_tok = keel::cpu::kBlockTokens + 29;
    const auto wb = random_weights(type, n_in, n_out, rng);
    const WeightView w{type, wb.data(), n_in, n_out};
    const auto x = random_floats(n_tok * n_in, rng);
    const auto scale = abs_products(w, x.data(), n_tok);
    std::vector<float> ref(n_tok * n_out);
    keel::cpu::matmul_reference(w, x.data(), n_tok, ref.data());
    std::vector<char> scratch(keel::cpu::matmul_scratch_bytes(type, n_in, n_tok, pool.size()));
    Guarded y(n_tok * n_out);
    keel::cpu::matmul(w, x.data(), n_tok, y.data(), scratch.data(), pool);
    expect_close(y.data(), ref.data(), scale, n_tok * n_out, label(type) + " many tokens");
    EXPECT_TRUE(y.guards_intact());
  }
}

// Scratch sized for a large chunk also serves a call with fewer tokens (the GEMV path).
TEST(MatmulDriver, ScratchForMaxTokensServesFewerTokens) {
  std::mt19937 rng(7);
  ThreadPool pool(2);
  const int64_t n_in = 512, n_out = 33;
  const std::vector<char> sentinel(64, 0x5A);
  const size_t sb = keel::cpu::matmul_scratch_bytes(Type::Q4_K, n_in, 64, pool.size());
  const auto wb = random_weights(Type::Q4_K, n_in, n_out, rng);
  const WeightView w{Type::Q4_K, wb.data(), n_in, n_out};
  for (int64_t n_tok : {1, 4, 5, 64}) {
    const auto x = random_floats(n_tok * n_in, rng);
    std::vector<float> ref(n_tok * n_out);
    keel::cpu::matmul_reference(w, x.data(), n_tok, ref.data());
    std::vector<char> scratch(sb + sentinel.size(), 0x5A);
    Guarded y(n_tok * n_out);
    keel::cpu::matmul(w, x.data(), n_tok, y.data(), scratch.data(), pool);
    expect_close(y.data(), ref.data(), abs_products(w, x.data(), n_tok), n_tok * n_out,
                 "n_tok=" + std::to_string(n_tok));
    EXPECT_TRUE(y.guards_intact());
    EXPECT_TRUE(std::equal(sentinel.begin(), sentinel.end(), scratch.begin() + sb));
  }
}

TEST(MatmulDriver, RejectsUncomputableType) {
  EXPECT_THROW(keel::cpu::matmul_scratch_bytes(Type::Q2_K, 256, 1, 1), std::exception);
}
