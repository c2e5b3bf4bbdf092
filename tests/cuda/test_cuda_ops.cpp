// CUDA element-wise and row-wise ops against their CPU twins (backend/cpu/ops.cpp), odd sizes.
// Tolerances: |got - want| <= 1e-6 * |want| (+1e-30): the kernels do the CPU's float operations
// in the CPU's order (no FMA contraction); what may differ is the order of the double sum in
// rms_norm, the device's double cos/sin/pow in rope and its expf (2 ulp) in silu / sigmoid.
#include <algorithm>
#include <cmath>
#include <tuple>

#include "backend/cpu/ops.h"
#include "backend/cuda/gdn.cuh"
#include "backend/cuda/gemv_q8.cuh"
#include "backend/cuda/matmul.cuh"
#include "backend/cuda/ops.cuh"
#include "cuda_test_util.h"

namespace {

using namespace keel;
using cuda_test::download;
using cuda_test::upload;

double check_rel(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what) {
  double worst = 0;
  int bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    worst = std::max(worst, err / (std::fabs(want[i]) + 1e-30));
    if (!(err <= tol * std::fabs(want[i]) + 1e-30) && bad++ < 5)
      ADD_FAILURE() << what << " element " << i << ": " << got[i] << " vs " << want[i];
  }
  return worst;
}

// Two 8-bit activation buffers of rows x dim hold the same quants and scales (the bytes between
// the two parts are padding, never written).
void expect_same_act(const cuda::DeviceBuffer& act_a, const cuda::DeviceBuffer& act_b, int64_t rows, int64_t dim) {
  const size_t q_bytes = size_t(rows * dim), s_off = (q_bytes + 255) / 256 * 256, s_bytes = size_t(rows * dim / 32) * 8;
  const auto a = download<uint8_t>(act_a, cuda::act_q8_bytes(dim, rows));
  const auto b = download<uint8_t>(act_b, cuda::act_q8_bytes(dim, rows));
  EXPECT_TRUE(std::equal(a.begin(), a.begin() + q_bytes, b.begin())) << "quants, dim " << dim;
  EXPECT_TRUE(std::equal(a.begin() + s_off, a.begin() + s_off + s_bytes, b.begin() + s_off)) << "scales, dim " << dim;
}

TEST(CudaOps, RmsNormRowsAndHeads) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(21);
  for (auto [rows, dim] : {std::pair<int64_t, int64_t>{7, 1001}, {33, 128}, {5, 4096}, {2, 5120}, {64, 64}}) {
    const auto x = cuda_test::random_floats(size_t(rows * dim), rng, 3.0f);
    const auto w = cuda_test::random_floats(size_t(dim), rng);
    std::vector<float> want(x.size());
    cpu::rms_norm(x.data(), w.data(), want.data(), rows, dim, 1e-6f);
    auto dx = upload(x);
    auto dw = upload(w);
    cuda::DeviceBuffer dout(x.size() * 4);
    cuda::rms_norm(dx.as<float>(), dw.as<float>(), dout.as<float>(), rows, dim, 1e-6f, nullptr);
    cuda_test::sync();
    const double worst = check_rel(download<float>(dout, x.size()), want, 1e-6, "rms_norm");
    // In place, as the per-head q/k norm is called.
    cuda::rms_norm(dx.as<float>(), dw.as<float>(), dx.as<float>(), rows, dim, 1e-6f, nullptr);
    cuda_test::sync();
    check_rel(download<float>(dx, x.size()), want, 1e-6, "rms_norm in place");
    std::printf("rms_norm %lld x %lld: max rel err %.2e\n", (long long)rows, (long long)dim, worst);
  }
}

TEST(CudaOps, RmsNormChosenRows) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(22);
  const int64_t dim = 515;
  const auto x = cuda_test::random_floats(size_t(9 * dim), rng);
  const auto w = cuda_test::random_floats(size_t(dim), rng);
  const std::vector<int32_t> rows = {8, 2, 2, 0};
  std::vector<float> want(rows.size() * dim);
  for (size_t i = 0; i < rows.size(); ++i) cpu::rms_norm(x.data() + rows[i] * dim, w.data(), want.data() + i * dim, 1, dim, 1e-5f);
  auto dx = upload(x);
  auto dw = upload(w);
  auto dr = upload(rows);
  cuda::DeviceBuffer dout(want.size() * 4);
  cuda::rms_norm_rows(dx.as<float>(), dr.as<int32_t>(), dw.as<float>(), dout.as<float>(), int64_t(rows.size()), dim, 1e-5f, nullptr);
  cuda_test::sync();
  check_rel(download<float>(dout, want.size()), want, 1e-6, "rms_norm_rows");
}

// The fused norm + 8-bit quantization (decode's norms feeding GEMVs) gives the bits of the two
// separate kernels: the same normalized rows and the same activation quants and scales.
TEST(CudaOps, RmsNormQ8EqualsNormThenQuantize) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(31);
  for (int64_t dim : {64, 1056, 4096, 5120}) {
    const int64_t rows = 3;
    const auto x = cuda_test::random_floats(size_t(rows * dim), rng);
    const auto w = cuda_test::random_floats(size_t(dim), rng);
    auto dx = upload(x);
    auto dw = upload(w);
    cuda::DeviceBuffer out_a(x.size() * 4), out_b(x.size() * 4);
    cuda::DeviceBuffer act_a(cuda::act_q8_bytes(dim, rows)), act_b(cuda::act_q8_bytes(dim, rows));
    cuda::rms_norm(dx.as<float>(), dw.as<float>(), out_a.as<float>(), rows, dim, 1e-6f, nullptr);
    cuda::quantize_act_q8(out_a.as<float>(), rows, dim, act_a.data(), nullptr);
    cuda::rms_norm_q8(dx.as<float>(), dw.as<float>(), out_b.as<float>(), rows, dim, 1e-6f, act_b.data(), nullptr);
    cuda_test::sync();
    EXPECT_EQ(download<uint32_t>(out_a, x.size()), download<uint32_t>(out_b, x.size())) << "dim " << dim;
    expect_same_act(act_a, act_b, rows, dim);
  }
}

TEST(CudaOps, AddRmsNormEqualsAddThenNorm) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(33);
  for (auto [rows, dim] : {std::pair<int64_t, int64_t>{1, 4096}, {3, 1056}, {9, 1001}}) {
    const auto y = cuda_test::random_floats(size_t(rows * dim), rng, 3.0f);
    const auto x = cuda_test::random_floats(size_t(rows * dim), rng);
    const auto w = cuda_test::random_floats(size_t(dim), rng);
    auto ya = upload(y), yb = upload(y), dx = upload(x), dw = upload(w);
    const bool q8 = dim % 32 == 0;
    cuda::DeviceBuffer out_a(y.size() * 4), out_b(y.size() * 4);
    cuda::DeviceBuffer act_a(cuda::act_q8_bytes(dim, rows)), act_b(cuda::act_q8_bytes(dim, rows));
    cuda::add_inplace(ya.as<float>(), dx.as<float>(), rows * dim, nullptr);
    if (q8) cuda::rms_norm_q8(ya.as<float>(), dw.as<float>(), out_a.as<float>(), rows, dim, 1e-6f, act_a.data(), nullptr);
    else cuda::rms_norm(ya.as<float>(), dw.as<float>(), out_a.as<float>(), rows, dim, 1e-6f, nullptr);
    cuda::add_rms_norm(yb.as<float>(), dx.as<float>(), dw.as<float>(), out_b.as<float>(), rows, dim, 1e-6f,
                       q8 ? act_b.data() : nullptr, nullptr);
    cuda_test::sync();
    EXPECT_EQ(download<uint32_t>(ya, y.size()), download<uint32_t>(yb, y.size())) << "sum, dim " << dim;
    EXPECT_EQ(download<uint32_t>(out_a, y.size()), download<uint32_t>(out_b, y.size())) << "norm, dim " << dim;
    if (!q8) continue;
    expect_same_act(act_a, act_b, rows, dim);
  }
}

TEST(CudaOps, SiluMulQ8EqualsSiluMulThenQuantize) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(32);
  for (auto [rows, dim] : {std::pair<int64_t, int64_t>{1, 12288}, {3, 1056}, {8, 64}}) {
    const auto g = cuda_test::random_floats(size_t(rows * dim), rng, 4.0f);
    const auto u = cuda_test::random_floats(size_t(rows * dim), rng, 2.0f);
    auto ga = upload(g), gb = upload(g), du = upload(u);
    cuda::DeviceBuffer act_a(cuda::act_q8_bytes(dim, rows)), act_b(cuda::act_q8_bytes(dim, rows));
    cuda::silu_mul(ga.as<float>(), du.as<float>(), rows * dim, nullptr);
    cuda::quantize_act_q8(ga.as<float>(), rows, dim, act_a.data(), nullptr);
    cuda::silu_mul_q8(gb.as<float>(), du.as<float>(), rows, dim, act_b.data(), nullptr);
    cuda_test::sync();
    EXPECT_EQ(download<uint32_t>(ga, g.size()), download<uint32_t>(gb, g.size())) << "dim " << dim;
    expect_same_act(act_a, act_b, rows, dim);
  }
}

// Decode: the sigmoid gate of Qwen3.5's attention output (one token of 24 heads of 256, gates in
// rows of twice that; and two tokens of heads of 64) writes the output projection's 8-bit
// activations on the way: the same output, and quantize_act_q8's bits for it.
TEST(CudaOps, SigmoidGateQ8EqualsGateThenQuantize) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(33);
  for (auto [tokens, heads, dim] : {std::tuple<int64_t, int64_t, int64_t>{1, 24, 256}, {2, 4, 64}}) {
    const int64_t rows = tokens * heads, width = heads * dim;
    const auto x = cuda_test::random_floats(size_t(rows * dim), rng, 3.0f);
    const auto gate = cuda_test::random_floats(size_t(rows * 2 * dim), rng, 4.0f);
    auto xa = upload(x), xb = upload(x), dg = upload(gate);
    cuda::DeviceBuffer act_a(cuda::act_q8_bytes(width, tokens)), act_b(cuda::act_q8_bytes(width, tokens));
    cuda::sigmoid_gate(xa.as<float>(), dim, dg.as<float>() + dim, 2 * dim, rows, dim, nullptr);
    cuda::quantize_act_q8(xa.as<float>(), tokens, width, act_a.data(), nullptr);
    cuda::sigmoid_gate(xb.as<float>(), dim, dg.as<float>() + dim, 2 * dim, rows, dim, nullptr, nullptr, act_b.data());
    cuda_test::sync();
    EXPECT_EQ(download<uint32_t>(xa, x.size()), download<uint32_t>(xb, x.size())) << "dim " << dim;
    EXPECT_NE(download<float>(xb, x.size()), x) << "dim " << dim;
    expect_same_act(act_a, act_b, tokens, width);
  }
}

// The ops that feed a prefill GEMM can write its f16 input on the way (CudaBackend then skips
// the GEMM's conversion): the same f32 output as without, and f32_to_f16's bits of it, on each
// kernel path (vector and general norms, float4 and scalar silu_mul, warp and CTA gated norms).
TEST(CudaOps, GemmInputF16EqualsConversion) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(34);
  auto expect_f16_of = [](const cuda::DeviceBuffer& out, const cuda::DeviceBuffer& f16, size_t n, const std::string& what) {
    cuda::DeviceBuffer want(n * 2);
    cuda::f32_to_f16(out.as<float>(), int64_t(n), want.data(), nullptr);
    cuda_test::sync();
    EXPECT_EQ(download<uint16_t>(want, n), download<uint16_t>(f16, n)) << what;
  };
  for (auto [rows, dim] : {std::pair<int64_t, int64_t>{9, 5120}, {17, 1024}, {10, 1001}}) {
    const size_t n = size_t(rows * dim);
    const auto y = cuda_test::random_floats(n, rng, 3.0f), x = cuda_test::random_floats(n, rng);
    const auto w = cuda_test::random_floats(size_t(dim), rng);
    auto ya = upload(y), yb = upload(y), dx = upload(x), dw = upload(w);
    cuda::DeviceBuffer out_a(n * 4), out_b(n * 4), f16(n * 2), f16_add(n * 2);
    cuda::rms_norm(ya.as<float>(), dw.as<float>(), out_a.as<float>(), rows, dim, 1e-6f, nullptr);
    cuda::rms_norm(yb.as<float>(), dw.as<float>(), out_b.as<float>(), rows, dim, 1e-6f, nullptr, f16.data());
    cuda_test::sync();
    EXPECT_EQ(download<uint32_t>(out_a, n), download<uint32_t>(out_b, n)) << "rms_norm, dim " << dim;
    expect_f16_of(out_b, f16, n, "rms_norm, dim " + std::to_string(dim));
    cuda::add_rms_norm(ya.as<float>(), dx.as<float>(), dw.as<float>(), out_a.as<float>(), rows, dim, 1e-6f, nullptr,
                       nullptr);
    cuda::add_rms_norm(yb.as<float>(), dx.as<float>(), dw.as<float>(), out_b.as<float>(), rows, dim, 1e-6f, nullptr,
                       nullptr, f16_add.data());
    cuda_test::sync();
    EXPECT_EQ(download<uint32_t>(out_a, n), download<uint32_t>(out_b, n)) << "add_rms_norm, dim " << dim;
    expect_f16_of(out_b, f16_add, n, "add_rms_norm, dim " + std::to_string(dim));
  }
  for (int64_t n : {int64_t{9 * 17408}, int64_t{10 * 1001}}) {
    const auto g = cuda_test::random_floats(size_t(n), rng, 4.0f), u = cuda_test::random_floats(size_t(n), rng, 2.0f);
    auto ga = upload(g), gb = upload(g), du = upload(u);
    cuda::DeviceBuffer f16(size_t(n) * 2);
    cuda::silu_mul(ga.as<float>(), du.as<float>(), n, nullptr);
    cuda::silu_mul(gb.as<float>(), du.as<float>(), n, nullptr, f16.data());
    cuda_test::sync();
    EXPECT_EQ(download<uint32_t>(ga, size_t(n)), download<uint32_t>(gb, size_t(n))) << "silu_mul, n " << n;
    expect_f16_of(gb, f16, size_t(n), "silu_mul, n " + std::to_string(n));
  }
  for (auto [rows, dim] : {std::pair<int64_t, int64_t>{9 * 48, 128}, {11, 1000}}) {
    const size_t n = size_t(rows * dim);
    const auto o = cuda_test::random_floats(n, rng, 2.0f), z = cuda_test::random_floats(n, rng, 2.0f);
    const auto w = cuda_test::random_floats(size_t(dim), rng);
    auto oa = upload(o), ob = upload(o), dz = upload(z), dw = upload(w);
    cuda::DeviceBuffer f16(n * 2);
    cuda::gated_rms_norm(oa.as<float>(), dz.as<float>(), dw.as<float>(), rows, dim, 1e-6f, nullptr);
    cuda::gated_rms_norm(ob.as<float>(), dz.as<float>(), dw.as<float>(), rows, dim, 1e-6f, nullptr, nullptr, nullptr,
                         f16.data());
    cuda_test::sync();
    EXPECT_EQ(download<uint32_t>(oa, n), download<uint32_t>(ob, n)) << "gated_rms_norm, dim " << dim;
    expect_f16_of(ob, f16, n, "gated_rms_norm, dim " + std::to_string(dim));
  }
  {  // sigmoid_gate over rows of 6144 whose gates sit in rows of twice that (Qwen3.5's Q and gate)
    const int64_t rows = 9, dim = 6144;
    const size_t n = size_t(rows * dim);
    const auto x = cuda_test::random_floats(n, rng, 2.0f), g = cuda_test::random_floats(2 * n, rng, 3.0f);
    auto xa = upload(x), xb = upload(x), dg = upload(g);
    cuda::DeviceBuffer f16(n * 2);
    cuda::sigmoid_gate(xa.as<float>(), dim, dg.as<float>() + dim, 2 * dim, rows, dim, nullptr);
    cuda::sigmoid_gate(xb.as<float>(), dim, dg.as<float>() + dim, 2 * dim, rows, dim, nullptr, f16.data());
    cuda_test::sync();
    EXPECT_EQ(download<uint32_t>(xa, n), download<uint32_t>(xb, n)) << "sigmoid_gate";
    expect_f16_of(xb, f16, n, "sigmoid_gate");
  }
}

TEST(CudaOps, RopeNormNeoxPartialFactors) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(23);
  struct Case { backend::RopeType type; int head_dim, n_rot, n_heads; float base, freq_scale; bool factors; };
  const Case cases[] = {{backend::RopeType::norm, 64, 64, 5, 10000.0f, 1.0f, false},
                        {backend::RopeType::neox, 128, 128, 3, 1000000.0f, 1.0f, false},
                        {backend::RopeType::neox, 128, 64, 2, 10000.0f, 0.25f, false},   // partial, linear scaling
                        {backend::RopeType::norm, 128, 128, 4, 500000.0f, 1.0f, true},   // llama3 factors
                        {backend::RopeType::neox, 256, 96, 1, 10000.0f, 1.0f, true}};
  for (const Case& c : cases) {
    const std::vector<int32_t> pos = {0, 1, 2, 17, 4095, 100000, 3};  // any positions, any order
    const int64_t n = int64_t(pos.size());
    const auto x = cuda_test::random_floats(size_t(n * c.n_heads * c.head_dim), rng);
    std::vector<float> factors(size_t(c.n_rot / 2));
    std::uniform_real_distribution<float> uf(1.0f, 8.0f);
    for (auto& f : factors) f = uf(rng);
    std::vector<float> want = x;
    const cpu::RopeParams p{c.type, c.n_rot, c.base, c.freq_scale, c.factors ? factors.data() : nullptr};
    cpu::rope(want.data(), n, c.n_heads, c.head_dim, pos.data(), p);
    auto dx = upload(x);
    auto dpos = upload(pos);
    auto dfac = upload(factors);
    cuda::RopeArgs a;
    a.mode = c.type == backend::RopeType::norm ? cuda::RopeMode::norm : cuda::RopeMode::neox;
    a.n_rot = c.n_rot;
    a.base = c.base;
    a.freq_scale = c.freq_scale;
    a.freq_factors = c.factors ? dfac.as<float>() : nullptr;
    cuda::rope(dx.as<float>(), n, c.n_heads, c.head_dim, dpos.as<int32_t>(), a, nullptr);
    cuda_test::sync();
    const auto got = download<float>(dx, x.size());
    // Rotation error scales with the pair's magnitude, not the (possibly tiny) output element.
    int bad = 0;
    double worst = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double err = std::fabs(double(got[i]) - want[i]);
      const double mag = std::fabs(x[i]) + std::fabs(want[i]) + 1e-30;
      worst = std::max(worst, err / mag);
      if (!(err <= 2e-6 * mag) && bad++ < 5) ADD_FAILURE() << "rope element " << i << ": " << got[i] << " vs " << want[i];
    }
    std::printf("rope hd %d n_rot %d: max err / magnitude %.2e\n", c.head_dim, c.n_rot, worst);
  }
}

// The fused per-head norm and RoPE of q and k against the CPU's rms_norm then rope.
TEST(CudaOps, NormRopeQkEqualsNormThenRope) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(24);
  struct Case { backend::RopeType type; int head_dim, n_rot; bool norm, factors; };
  const Case cases[] = {{backend::RopeType::neox, 128, 128, true, false},   // Qwen3
                        {backend::RopeType::neox, 256, 64, true, false},    // Qwen3.5: partial
                        {backend::RopeType::norm, 64, 64, false, true},     // llama: no norm, factors
                        {backend::RopeType::norm, 128, 96, true, false}};
  const std::vector<int32_t> pos = {5, 0, 70000};
  const int64_t n = int64_t(pos.size()), n_q = 5, n_k = 2;
  for (const Case& c : cases) {
    ASSERT_TRUE(cuda::norm_rope_qk_fits(c.head_dim, c.n_rot));
    const auto q = cuda_test::random_floats(size_t(n * n_q * c.head_dim), rng, 2.0f);
    const auto k = cuda_test::random_floats(size_t(n * n_k * c.head_dim), rng, 2.0f);
    const auto qn = cuda_test::random_floats(size_t(c.head_dim), rng), kn = cuda_test::random_floats(size_t(c.head_dim), rng);
    std::vector<float> factors(size_t(c.n_rot / 2));
    std::uniform_real_distribution<float> uf(1.0f, 8.0f);
    for (auto& f : factors) f = uf(rng);
    std::vector<float> want_q = q, want_k = k;
    if (c.norm) {
      cpu::rms_norm(want_q.data(), qn.data(), want_q.data(), n * n_q, c.head_dim, 1e-6f);
      cpu::rms_norm(want_k.data(), kn.data(), want_k.data(), n * n_k, c.head_dim, 1e-6f);
    }
    const cpu::RopeParams p{c.type, c.n_rot, 1000000.0f, 1.0f, c.factors ? factors.data() : nullptr};
    cpu::rope(want_q.data(), n, n_q, c.head_dim, pos.data(), p);
    cpu::rope(want_k.data(), n, n_k, c.head_dim, pos.data(), p);
    auto dq = upload(q), dk = upload(k), dqn = upload(qn), dkn = upload(kn), dpos = upload(pos), dfac = upload(factors);
    cuda::RopeArgs a;
    a.mode = c.type == backend::RopeType::norm ? cuda::RopeMode::norm : cuda::RopeMode::neox;
    a.n_rot = c.n_rot;
    a.base = 1000000.0f;
    a.freq_factors = c.factors ? dfac.as<float>() : nullptr;
    cuda::norm_rope_qk(dq.as<float>(), n_q, dk.as<float>(), n_k, n, c.head_dim, c.norm ? dqn.as<float>() : nullptr,
                       c.norm ? dkn.as<float>() : nullptr, 1e-6f, dpos.as<int32_t>(), a, nullptr);
    cuda_test::sync();
    // The norm's double sum may round the other way in the last place; a rotation's error scales
    // with its pair's magnitude (about 1 after the norm), not with the output element.
    for (auto [got, want] : {std::pair{download<float>(dq, q.size()), want_q}, {download<float>(dk, k.size()), want_k}}) {
      int bad = 0;
      for (size_t i = 0; i < want.size(); ++i)
        if (!(std::fabs(double(got[i]) - want[i]) <= 2e-6 * (1.0 + std::fabs(want[i]))) && bad++ < 5)
          ADD_FAILURE() << "hd " << c.head_dim << " element " << i << ": " << got[i] << " vs " << want[i];
    }
  }
}

// The fused norm, RoPE and cache store against norm_rope_qk then kv_write: the same q, k and
// page bytes, f16 and q8_0 caches, two sequences, a padding token (no store), partial RoPE.
TEST(CudaOps, NormRopeKvWriteEqualsNormRopeThenKvWrite) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(25);
  struct Case { cuda::KvElem elem; cuda::RopeMode mode; int head_dim, n_rot; bool norm; };
  const Case cases[] = {{cuda::KvElem::f16, cuda::RopeMode::neox, 128, 128, true},
                        {cuda::KvElem::q8_0, cuda::RopeMode::neox, 128, 128, true},
                        {cuda::KvElem::q8_0, cuda::RopeMode::neox, 256, 64, true},
                        {cuda::KvElem::f16, cuda::RopeMode::norm, 64, 64, false},
                        {cuda::KvElem::q8_0, cuda::RopeMode::norm, 64, 64, false}};
  // Tokens: sequence 0 at 5, 6; padding; sequence 1 at 300 (its second page).
  const std::vector<int32_t> seq = {0, 0, -1, 1}, pos = {5, 6, 0, 300}, q_start = {0, 2, 4};
  const int page_tokens = 256, max_pages = 2;
  const std::vector<int32_t> pages = {3, 0, 1, 2};  // sequence 0: page 3; sequence 1: pages 1, 2
  const int64_t n = int64_t(seq.size()), n_q = 6, n_k = 3;
  for (const Case& c : cases) {
    const cuda::KvLayout kv{c.elem, int(n_k), c.head_dim, page_tokens};
    const auto q = cuda_test::random_floats(size_t(n * n_q * c.head_dim), rng, 2.0f);
    const auto k = cuda_test::random_floats(size_t(n * n_k * c.head_dim), rng, 2.0f);
    const auto v = cuda_test::random_floats(size_t(n * n_k * c.head_dim), rng, 2.0f);
    const auto qn = cuda_test::random_floats(size_t(c.head_dim), rng), kn = cuda_test::random_floats(size_t(c.head_dim), rng);
    auto dseq = upload(seq), dpos = upload(pos), dqs = upload(q_start), dpages = upload(pages), dqn = upload(qn),
         dkn = upload(kn), dv = upload(v);
    const auto b = cuda_test::attention_batch(int(n), 2, dseq, dpos, &dqs, dpages, max_pages);
    cuda::RopeArgs a;
    a.mode = c.mode;
    a.n_rot = c.n_rot;
    a.base = 1000000.0f;
    const float* wq = c.norm ? dqn.as<float>() : nullptr;
    const float* wk = c.norm ? dkn.as<float>() : nullptr;
    const size_t pool_bytes = 4 * kv.page_bytes();
    auto dq1 = upload(q), dk1 = upload(k), dq2 = upload(q), dk2 = upload(k);
    cuda::DeviceBuffer pool1(pool_bytes), pool2(pool_bytes);
    cuda::check(cudaMemset(pool1.data(), 0x5A, pool_bytes), "memset");
    cuda::check(cudaMemset(pool2.data(), 0x5A, pool_bytes), "memset");
    cuda::norm_rope_qk(dq1.as<float>(), n_q, dk1.as<float>(), n_k, n, c.head_dim, wq, wk, 1e-6f, b.pos, a, nullptr);
    cuda::kv_write(kv, pool1.data(), b, dk1.as<float>(), dv.as<float>(), nullptr);
    cuda::norm_rope_kv_write(dq2.as<float>(), n_q, dk2.as<float>(), dv.as<float>(), n_k, c.head_dim, wq, wk, 1e-6f, a, kv,
                             pool2.data(), b, nullptr);
    cuda_test::sync();
    const std::string name = std::string(c.elem == cuda::KvElem::f16 ? "f16" : "q8_0") + " hd " + std::to_string(c.head_dim);
    EXPECT_EQ(download<float>(dq1, q.size()), download<float>(dq2, q.size())) << name << ": q";
    EXPECT_EQ(download<float>(dk1, k.size()), download<float>(dk2, k.size())) << name << ": k";
    const auto p1 = download<uint8_t>(pool1, pool_bytes), p2 = download<uint8_t>(pool2, pool_bytes);
    EXPECT_TRUE(p1 == p2) << name << ": pages";
    EXPECT_FALSE(std::all_of(p2.begin(), p2.end(), [](uint8_t x) { return x == 0x5A; })) << name << ": nothing stored";
    // q's heads taken from the query halves of rows twice as wide (Qwen3.5's query | gate heads),
    // q itself garbage before: the same q, k and pages.
    std::vector<float> wide(q.size() * 2);
    for (size_t r = 0; r < size_t(n * n_q); ++r)
      for (int d = 0; d < c.head_dim; ++d) {
        wide[r * 2 * c.head_dim + d] = q[r * c.head_dim + d];
        wide[r * 2 * c.head_dim + c.head_dim + d] = -7.0f;
      }
    auto dwide = upload(wide), dk3 = upload(k), dq3 = upload(std::vector<float>(q.size(), 99.0f));
    cuda::DeviceBuffer pool3(pool_bytes);
    cuda::check(cudaMemset(pool3.data(), 0x5A, pool_bytes), "memset");
    cuda::norm_rope_kv_write(dq3.as<float>(), n_q, dk3.as<float>(), dv.as<float>(), n_k, c.head_dim, wq, wk, 1e-6f, a, kv,
                             pool3.data(), b, nullptr, dwide.as<float>(), 2 * c.head_dim);
    cuda_test::sync();
    EXPECT_EQ(download<float>(dq1, q.size()), download<float>(dq3, q.size())) << name << ": q from wider rows";
    EXPECT_EQ(download<float>(dk1, k.size()), download<float>(dk3, k.size())) << name << ": k (q from wider rows)";
    EXPECT_TRUE(p1 == download<uint8_t>(pool3, pool_bytes)) << name << ": pages (q from wider rows)";
  }
}

TEST(CudaOps, ElementWise) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(24);
  const int64_t rows = 13, dim = 777, n = rows * dim;
  const auto a = cuda_test::random_floats(size_t(n), rng, 4.0f);
  const auto b = cuda_test::random_floats(size_t(n), rng);
  const auto bias = cuda_test::random_floats(size_t(dim), rng);

  std::vector<float> want = a;
  cpu::silu_mul_generic(want.data(), b.data(), n);
  auto da = upload(a);
  auto db = upload(b);
  cuda::silu_mul(da.as<float>(), db.as<float>(), n, nullptr);
  cuda_test::sync();
  std::printf("silu_mul: max rel err %.2e\n", check_rel(download<float>(da, size_t(n)), want, 1e-6, "silu_mul"));

  want = a;
  cpu::add_inplace(want.data(), b.data(), n);
  auto da2 = upload(a);
  cuda::add_inplace(da2.as<float>(), db.as<float>(), n, nullptr);
  cuda_test::sync();
  check_rel(download<float>(da2, size_t(n)), want, 0.0, "add");

  want = a;
  cpu::add_bias(want.data(), bias.data(), rows, dim);
  auto da3 = upload(a);
  auto dbias = upload(bias);
  cuda::add_bias(da3.as<float>(), dbias.as<float>(), rows, dim, nullptr);
  cuda_test::sync();
  check_rel(download<float>(da3, size_t(n)), want, 0.0, "add_bias");

  // sigmoid gate over strided rows: x rows of width 300 inside rows of dim, gate likewise.
  const int64_t width = 300;
  want = a;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < width; ++i) want[r * dim + i] /= 1.0f + std::exp(-b[r * dim + 400 + i]);
  auto da4 = upload(a);
  cuda::sigmoid_gate(da4.as<float>(), dim, db.as<float>() + 400, dim, rows, width, nullptr);
  cuda_test::sync();
  std::printf("sigmoid_gate: max rel err %.2e\n", check_rel(download<float>(da4, size_t(n)), want, 1e-6, "sigmoid_gate"));
}

}  // namespace
