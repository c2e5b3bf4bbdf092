// Gated DeltaNet kernels: the chunked (WY) form equals the token recurrence, both equal a float64
// reference of docs/specs/qwen35.md §2.3, state carries across calls, and the causal conv1d with
// its rolling state equals a zero-padded convolution of the whole sequence.
#include <gtest/gtest.h>
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "backend/cpu/gated_delta.h"
#include "backend/cpu/thread_pool.h"

using namespace keel;

namespace {

// The floating-point control register whose flush-to-zero bits the kernels set while they run.
uint64_t fp_control() {
#if defined(__x86_64__)
  return _mm_getcsr();
#elif defined(__aarch64__)
  uint64_t v;
  asm volatile("mrs %0, fpcr" : "=r"(v));
  return v;
#else
  return 0;
#endif
}

// Random GDN inputs in the layout the layer uses: one row per token of [q | k | v].
struct Inputs {
  int64_t n_tokens, n_k, n_v, d_k, d_v;
  std::vector<float> qkv;    // [T, n_k*d_k + n_k*d_k + n_v*d_v]
  std::vector<float> g, beta;  // [T, n_v]
  std::vector<float> state0;   // [n_v, d_k, d_v]
  int64_t stride() const { return 2 * n_k * d_k + n_v * d_v; }
};

Inputs random_inputs(int64_t T, int64_t n_k, int64_t n_v, int64_t d_k, int64_t d_v, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  Inputs in{T, n_k, n_v, d_k, d_v, {}, {}, {}, {}};
  const int64_t s = in.stride();
  in.qkv.resize(static_cast<size_t>(T * s));
  for (float& x : in.qkv) x = normal(rng);
  for (int64_t t = 0; t < T; ++t) {  // L2-normalise q and k heads, scale q by 1/sqrt(d_k)
    float* row = in.qkv.data() + t * s;
    cpu::l2_norm_heads(row, 1, s, n_k, d_k, 1e-6f, 1.0f / std::sqrt(static_cast<float>(d_k)));
    cpu::l2_norm_heads(row + n_k * d_k, 1, s, n_k, d_k, 1e-6f, 1.0f);
  }
  in.g.resize(static_cast<size_t>(T * n_v));
  in.beta.resize(in.g.size());
  std::vector<float> ssm_a(static_cast<size_t>(n_v)), dt_bias(static_cast<size_t>(n_v));
  for (int64_t h = 0; h < n_v; ++h) {
    ssm_a[h] = -(0.05f + 1.45f * uniform(rng));  // -exp(A_log), A in (0.05, 1.5)
    dt_bias[h] = -3.0f + 3.5f * uniform(rng);
  }
  for (size_t i = 0; i < in.g.size(); ++i) {
    in.beta[i] = normal(rng);
    in.g[i] = 0.5f * normal(rng);
  }
  cpu::gdn_gates(in.beta.data(), in.g.data(), ssm_a.data(), dt_bias.data(), T, n_v);
  in.state0.resize(static_cast<size_t>(n_v * d_k * d_v));
  for (float& x : in.state0) x = 0.3f * normal(rng);
  return in;
}

cpu::GatedDeltaArgs args_for(const Inputs& in, int64_t t0, int64_t n, float* state, float* out) {
  cpu::GatedDeltaArgs a;
  const int64_t s = in.stride();
  a.q = in.qkv.data() + t0 * s;
  a.k = a.q + in.n_k * in.d_k;
  a.v = a.q + 2 * in.n_k * in.d_k;
  a.qk_stride = s;
  a.v_stride = s;
  a.g = in.g.data() + t0 * in.n_v;
  a.beta = in.beta.data() + t0 * in.n_v;
  a.state = state;
  a.out = out + t0 * in.n_v * in.d_v;
  a.n_tokens = n;
  a.n_k_heads = in.n_k;
  a.n_v_heads = in.n_v;
  a.d_k = in.d_k;
  a.d_v = in.d_v;
  return a;
}

// The §2.3 recurrence in float64, written out directly (S[h][i][j], i = key index).
void reference(const Inputs& in, std::vector<double>& out, std::vector<double>& S) {
  const int64_t s = in.stride(), dk = in.d_k, dv = in.d_v;
  S.assign(in.state0.begin(), in.state0.end());
  out.assign(static_cast<size_t>(in.n_tokens * in.n_v * dv), 0.0);
  std::vector<double> r(static_cast<size_t>(dv));
  for (int64_t t = 0; t < in.n_tokens; ++t)
    for (int64_t h = 0; h < in.n_v; ++h) {
      const int64_t kh = h % in.n_k;
      const float* q = in.qkv.data() + t * s + kh * dk;
      const float* k = q + in.n_k * dk;
      const float* v = in.qkv.data() + t * s + 2 * in.n_k * dk + h * dv;
      double* Sh = S.data() + h * dk * dv;
      const double decay = std::exp(static_cast<double>(in.g[t * in.n_v + h])), beta = in.beta[t * in.n_v + h];
      std::fill(r.begin(), r.end(), 0.0);
      for (int64_t i = 0; i < dk; ++i)
        for (int64_t j = 0; j < dv; ++j) {
          Sh[i * dv + j] *= decay;
          r[j] += Sh[i * dv + j] * k[i];
        }
      for (int64_t i = 0; i < dk; ++i)
        for (int64_t j = 0; j < dv; ++j) Sh[i * dv + j] += k[i] * beta * (v[j] - r[j]);
      for (int64_t j = 0; j < dv; ++j) {
        double o = 0.0;
        for (int64_t i = 0; i < dk; ++i) o += Sh[i * dv + j] * q[i];
        out[(t * in.n_v + h) * dv + j] = o;
      }
    }
}

template <typename A, typename B>
double max_abs_diff(const A& a, const B& b) {
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  return m;
}

struct Result {
  std::vector<float> out, state;
};

Result run_chunked(const Inputs& in, int64_t chunk, const std::vector<int64_t>& splits, cpu::ThreadPool& pool) {
  Result r{std::vector<float>(static_cast<size_t>(in.n_tokens * in.n_v * in.d_v)), in.state0};
  std::vector<float> ws(cpu::gated_delta_workspace_bytes(in.d_k, in.d_v, pool.size(), chunk) / sizeof(float));
  int64_t t0 = 0;
  for (size_t i = 0; i <= splits.size(); ++i) {
    const int64_t t1 = i < splits.size() ? splits[i] : in.n_tokens;
    cpu::gated_delta_chunked(args_for(in, t0, t1 - t0, r.state.data(), r.out.data()), ws.data(), pool, chunk);
    t0 = t1;
  }
  return r;
}

Result run_recurrent(const Inputs& in, cpu::ThreadPool& pool) {
  Result r{std::vector<float>(static_cast<size_t>(in.n_tokens * in.n_v * in.d_v)), in.state0};
  std::vector<float> ws(cpu::gated_delta_workspace_bytes(in.d_k, in.d_v, pool.size()) / sizeof(float));
  for (int64_t t = 0; t < in.n_tokens; ++t)  // one call per token, as decode does
    cpu::gated_delta_recurrent(args_for(in, t, 1, r.state.data(), r.out.data()), ws.data(), pool);
  return r;
}

}  // namespace

class GdnChunkedEqualsRecurrence : public testing::TestWithParam<int64_t> {};

TEST_P(GdnChunkedEqualsRecurrence, OutputsAndFinalState) {
  const int64_t T = GetParam();
  cpu::ThreadPool pool(2);
  // 2 key heads serving 4 value heads (tiled), d_k != d_v to pin the state layout.
  const Inputs in = random_inputs(T, 2, 4, 64, 48, static_cast<uint32_t>(1000 + T));
  std::vector<double> ref_out, ref_state;
  reference(in, ref_out, ref_state);
  const Result rec = run_recurrent(in, pool);
  const Result chk = run_chunked(in, cpu::kGdnChunk, {}, pool);
  const double d_out = max_abs_diff(chk.out, rec.out), d_state = max_abs_diff(chk.state, rec.state);
  std::printf("[ gdn     ] T=%lld: chunked vs recurrent max |dO| %.2g |dS| %.2g; vs f64: chunked %.2g / %.2g, "
              "recurrent %.2g / %.2g\n",
              static_cast<long long>(T), d_out, d_state, max_abs_diff(chk.out, ref_out),
              max_abs_diff(chk.state, ref_state), max_abs_diff(rec.out, ref_out), max_abs_diff(rec.state, ref_state));
  EXPECT_LE(d_out, 1e-5);
  EXPECT_LE(d_state, 1e-5);
  EXPECT_LE(max_abs_diff(chk.out, ref_out), 1e-5);
  EXPECT_LE(max_abs_diff(chk.state, ref_state), 1e-5);
  EXPECT_LE(max_abs_diff(rec.out, ref_out), 1e-5);
  EXPECT_LE(max_abs_diff(rec.state, ref_state), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(GdnLengths, GdnChunkedEqualsRecurrence,
                         testing::Values(int64_t{1}, int64_t{5}, int64_t{63}, int64_t{64}, int64_t{65}, int64_t{200}));

TEST(GdnChunked, StateCarriesAcrossCallsAndChunkSizes) {
  cpu::ThreadPool pool(3);  // 6 heads over 3 threads, chunks that straddle the call boundaries
  const Inputs in = random_inputs(200, 2, 6, 32, 32, 77);
  const Result whole = run_chunked(in, 64, {}, pool);
  for (int64_t chunk : {int64_t{1}, int64_t{7}, int64_t{16}, int64_t{64}, int64_t{128}}) {
    const Result split = run_chunked(in, chunk, {1, 70, 133, 134}, pool);
    EXPECT_LE(max_abs_diff(split.out, whole.out), 1e-5) << "chunk " << chunk;
    EXPECT_LE(max_abs_diff(split.state, whole.state), 1e-5) << "chunk " << chunk;
  }
}

TEST(GdnConv1d, RollingStateEqualsZeroPaddedConvolution) {
  cpu::ThreadPool pool(2);
  const int64_t T = 37, channels = 150;  // channels not a multiple of the 64-channel block
  const int kernel = 4;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(T * channels)), w(static_cast<size_t>(channels * kernel));
  for (float& v : x) v = normal(rng);
  for (float& v : w) v = normal(rng);

  std::vector<float> want(x.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < channels; ++c) {
      double acc = 0.0;
      for (int j = 0; j < kernel; ++j) {
        const int64_t src = t - (kernel - 1) + j;  // tap kernel-1 is the current token
        if (src >= 0) acc += static_cast<double>(w[c * kernel + j]) * x[src * channels + c];
      }
      want[t * channels + c] = static_cast<float>(acc / (1.0 + std::exp(-acc)));
    }

  // Pieces of 1, 2, 10 and 24 tokens carry the state between calls.
  std::vector<float> state(static_cast<size_t>((kernel - 1) * channels), 0.0f), got(x.size());
  int64_t t0 = 0;
  for (int64_t n : {int64_t{1}, int64_t{2}, int64_t{10}, int64_t{24}}) {
    cpu::causal_conv1d_silu(x.data() + t0 * channels, n, channels, w.data(), kernel, state.data(),
                            got.data() + t0 * channels, pool);
    t0 += n;
  }
  ASSERT_EQ(t0, T);
  EXPECT_LE(max_abs_diff(got, want), 1e-5);
  for (int m = 0; m < kernel - 1; ++m)
    for (int64_t c = 0; c < channels; ++c)
      EXPECT_EQ(state[m * channels + c], x[(T - (kernel - 1) + m) * channels + c]);
}

TEST(GdnGatedNorm, MatchesFormula) {
  const int64_t dim = 8;
  std::vector<float> o = {1, -2, 3, 0.5f, 0, 1, -1, 2}, z = {0.1f, -1, 2, 0, 3, -3, 1, 0.5f}, w(dim);
  for (int64_t i = 0; i < dim; ++i) w[i] = 0.5f + 0.1f * static_cast<float>(i);
  std::vector<float> got = o;
  cpu::gated_rms_norm(got.data(), z.data(), w.data(), 1, dim, 1e-6f);
  double ms = 0.0;
  for (float v : o) ms += static_cast<double>(v) * v / dim;
  for (int64_t i = 0; i < dim; ++i) {
    const double silu = z[i] / (1.0 + std::exp(-static_cast<double>(z[i])));
    EXPECT_NEAR(got[i], o[i] / std::sqrt(ms + 1e-6) * w[i] * silu, 1e-6);
  }
}

// The generic twin (baseline ISA) and the best one agree, on sizes that leave GEMM edge tiles
// (d_k, d_v not multiples of 16, a last chunk of 13 rows); both match the float64 recurrence.
TEST(GdnTwins, GenericEqualsBestIsa) {
  cpu::ThreadPool pool(2);
  const Inputs in = random_inputs(77, 3, 6, 24, 40, 4242);
  std::vector<double> ref_out, ref_state;
  reference(in, ref_out, ref_state);
  for (cpu::Isa isa : {cpu::Isa::generic, cpu::best_isa()}) {
    Result chk{std::vector<float>(static_cast<size_t>(in.n_tokens * in.n_v * in.d_v)), in.state0};
    Result rec = chk;
    std::vector<float> ws(cpu::gated_delta_workspace_bytes(in.d_k, in.d_v, pool.size()) / sizeof(float));
    cpu::gated_delta_chunked_with(isa, args_for(in, 0, in.n_tokens, chk.state.data(), chk.out.data()), ws.data(), pool);
    for (int64_t t = 0; t < in.n_tokens; ++t)
      cpu::gated_delta_recurrent_with(isa, args_for(in, t, 1, rec.state.data(), rec.out.data()), ws.data(), pool);
    EXPECT_LE(max_abs_diff(chk.out, ref_out), 1e-5) << cpu::isa_name(isa);
    EXPECT_LE(max_abs_diff(chk.state, ref_state), 1e-5) << cpu::isa_name(isa);
    EXPECT_LE(max_abs_diff(rec.out, ref_out), 1e-5) << cpu::isa_name(isa);
    EXPECT_LE(max_abs_diff(rec.state, ref_state), 1e-5) << cpu::isa_name(isa);
  }
}

// Strongly decaying gates push γ below the range where e^{γ_r−γ_s} is taken as a ratio of
// e^γ's: the per-pair exp path must agree with the recurrence as well.
TEST(GdnChunked, StrongDecayUsesExactPairwiseDecay) {
  cpu::ThreadPool pool(1);
  Inputs in = random_inputs(130, 1, 2, 16, 16, 99);
  for (float& g : in.g) g = -3.0f;  // γ reaches -192 within a chunk
  std::vector<double> ref_out, ref_state;
  reference(in, ref_out, ref_state);
  const Result chk = run_chunked(in, cpu::kGdnChunk, {}, pool);
  EXPECT_LE(max_abs_diff(chk.out, ref_out), 1e-5);
  EXPECT_LE(max_abs_diff(chk.state, ref_state), 1e-5);
  for (float x : chk.out) ASSERT_TRUE(std::isfinite(x));
}

// Throughput of one GDN layer's delta rule at Qwen3.5-0.8B sizes (16 heads, d_k = d_v = 128):
// run with --gtest_also_run_disabled_tests --gtest_filter='*GdnThroughput*'.
TEST(GdnThroughput, DISABLED_ChunkedAndRecurrentAtQwen35Sizes) {
  for (int threads : {1, 2}) {
    cpu::ThreadPool pool(threads);
    const Inputs in = random_inputs(1024, 16, 16, 128, 128, 7);
    std::vector<float> out(static_cast<size_t>(in.n_tokens * in.n_v * in.d_v)), state = in.state0;
    std::vector<float> ws(cpu::gated_delta_workspace_bytes(in.d_k, in.d_v, threads) / sizeof(float));
    for (cpu::Isa isa : {cpu::Isa::generic, cpu::best_isa()}) {
      const auto t0 = std::chrono::steady_clock::now();
      cpu::gated_delta_chunked_with(isa, args_for(in, 0, in.n_tokens, state.data(), out.data()), ws.data(), pool);
      const auto t1 = std::chrono::steady_clock::now();
      for (int64_t t = 0; t < 64; ++t)
        cpu::gated_delta_recurrent_with(isa, args_for(in, t, 1, state.data(), out.data()), ws.data(), pool);
      const auto t2 = std::chrono::steady_clock::now();
      const double chunked = std::chrono::duration<double>(t1 - t0).count();
      const double recurrent = std::chrono::duration<double>(t2 - t1).count() / 64;
      std::printf("[ gdn     ] %s, %d threads: chunked %.0f tok/s per layer, recurrent %.1f us/token per layer\n",
                  cpu::isa_name(isa), threads, in.n_tokens / chunked, recurrent * 1e6);
    }
  }
}

// The kernels flush subnormals only while they run: the caller's MXCSR (x86-64) or FPCR
// (AArch64) is left as it was.
TEST(GdnChunked, LeavesTheCallersFloatingPointModeAlone) {
  cpu::ThreadPool pool(1);
  const Inputs in = random_inputs(70, 1, 2, 16, 16, 3);
  const uint64_t before = fp_control();
  run_chunked(in, cpu::kGdnChunk, {}, pool);
  run_recurrent(in, pool);
  EXPECT_EQ(fp_control(), before);
}
