// CUDA matmul kernels against the CPU's scalar references, on random valid blocks of every
// weight type, odd sizes:
//   - dequantization (embedding rows, GEMM panels): bit-identical f32 with quant::dequantize_row;
//     f16 output equal to quant::f32_to_f16 of that;
//   - GEMV (decode, f32 arithmetic): |y - ref| <= 1e-5 * sum_k |w_k x_k|, ref in double (the CPU
//     matmul tests' tolerance: only the summation order differs);
//   - 8-bit GEMV (decode, fast mode): the activations' quantization bit-identical with a host
//     twin; y against a double reference of W times the quantized activations within
//     1e-5 * sum_k |w_k x'_k| (the integer sums are exact; only float scaling and summation
//     differ); a token's row the same bits alone as among 8;
//   - GEMM (prefill: f16 W and x on the tensor cores, f32 accumulation): against a double
//     reference of the f16-rounded W and x, |y - ref| <= 1e-5 * sum_k |w'_k x'_k| (only the
//     summation order differs), and against the exact f32 reference within 2e-3 * sum |w x|
//     (the f16 rounding of both operands: 2 * 2^-11 = 9.8e-4). F32 weights take an f32 GEMM:
//     their "rounded" reference is the exact one.
#include <cstring>

#include "backend/cuda/gemv_q8.cuh"
#include "backend/cuda/matmul.cuh"
#include "cuda_test_util.h"
#include "quant/blocks.h"
#include "quant/dequant.h"

namespace {

using namespace keel;
using quant::Type;
using cuda_test::download;
using cuda_test::upload;

const Type kTypes[] = {Type::F32, Type::F16, Type::BF16, Type::Q4_0, Type::Q8_0, Type::Q4_K, Type::Q5_K, Type::Q6_K};

void put_f16(uint8_t* p, float v) {
  const quant::f16_bits h = quant::f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

std::vector<uint8_t> random_weights(Type type, int64_t n_in, int64_t n_out, std::mt19937& rng) {
  const size_t bytes = quant::row_bytes(type, uint64_t(n_in)) * size_t(n_out);
  std::vector<uint8_t> w(bytes);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.001f, 0.02f);
  const int64_t elems = n_in * n_out;
  if (type == Type::F32) {
    for (int64_t i = 0; i < elems; ++i) { const float v = normal(rng); std::memcpy(w.data() + 4 * i, &v, 4); }
    return w;
  }
  if (type == Type::F16) {
    for (int64_t i = 0; i < elems; ++i) put_f16(w.data() + 2 * i, normal(rng));
    return w;
  }
  if (type == Type::BF16) {
    for (int64_t i = 0; i < elems; ++i) { const auto h = quant::f32_to_bf16(normal(rng)); std::memcpy(w.data() + 2 * i, &h, 2); }
    return w;
  }
  for (auto& b : w) b = uint8_t(byte(rng));
  const size_t block = quant::info(type).block_bytes;
  for (size_t off = 0; off < bytes; off += block) {
    uint8_t* b = w.data() + off;
    switch (type) {
      case Type::Q4_0: case Type::Q8_0: put_f16(b, scale(rng)); break;
      case Type::Q4_K: case Type::Q5_K: put_f16(b, scale(rng)); put_f16(b + 2, scale(rng)); break;
      case Type::Q6_K: put_f16(b + 208, scale(rng)); break;
      default: break;
    }
  }
  return w;
}

std::vector<float> dequant_all(Type type, const std::vector<uint8_t>& w, int64_t n_in, int64_t n_out) {
  std::vector<float> out(size_t(n_in * n_out));
  const size_t rb = quant::row_bytes(type, uint64_t(n_in));
  for (int64_t r = 0; r < n_out; ++r) quant::dequantize_row(type, w.data() + r * rb, out.data() + r * n_in, n_in);
  return out;
}

float f16_round(float v) { return quant::f16_to_f32(quant::f32_to_f16(v)); }

int64_t n_in_for(Type type, bool aligned) {
  switch (type) {
    case Type::F32: case Type::F16: case Type::BF16: return aligned ? 1032 : 301;
    case Type::Q4_0: case Type::Q8_0: return 1056;  // 33 blocks
    default: return 1280;                           // 5 super-blocks
  }
}

// y_ref[t][r] = sum_k W[r][k] x[t][k] in double, and sum_k |W x| (the error scale).
void reference(const std::vector<float>& W, const std::vector<float>& x, int64_t n_in, int64_t n_out, int64_t n_tok,
               std::vector<double>& y, std::vector<double>& scale) {
  y.assign(size_t(n_tok * n_out), 0.0);
  scale.assign(size_t(n_tok * n_out), 0.0);
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t r = 0; r < n_out; ++r) {
      double s = 0, a = 0;
      for (int64_t k = 0; k < n_in; ++k) {
        const double p = double(W[r * n_in + k]) * x[t * n_in + k];
        s += p;
        a += std::fabs(p);
      }
      y[t * n_out + r] = s;
      scale[t * n_out + r] = a;
    }
}

// Max of |got - want| / scale; fails (5 messages at most) where it exceeds tol.
double check_close(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& scale,
                   double tol, const std::string& what) {
  double worst = 0;
  int bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    worst = std::max(worst, err / (scale[i] + 1e-30));
    if (!(err <= tol * scale[i] + 1e-30) && bad++ < 5)
      ADD_FAILURE() << what << " element " << i << ": " << got[i] << " vs " << want[i] << " (scale " << scale[i] << ")";
  }
  return worst;
}

TEST(CudaMatmul, DequantRowsBitExact) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(11);
  for (Type type : kTypes) {
    const int64_t n_in = n_in_for(type, false), n_out = 23;
    const auto w = random_weights(type, n_in, n_out, rng);
    const auto ref = dequant_all(type, w, n_in, n_out);
    const std::vector<int32_t> rows = {5, 0, 22, 5, 17, 3, 11};  // a gather, with a repeat
    auto dw = upload(w);
    auto drows = upload(rows);
    cuda::DeviceBuffer out_f32(rows.size() * n_in * 4), out_f16(rows.size() * n_in * 2);
    const cuda::DeviceWeight view{type, dw.data(), n_in, n_out};
    cuda::dequant_rows_f32(view, drows.as<int32_t>(), int64_t(rows.size()), out_f32.as<float>(), nullptr);
    cuda::dequant_rows_f16(view, drows.as<int32_t>(), int64_t(rows.size()), out_f16.data(), nullptr);
    cuda_test::sync();
    const auto got = download<float>(out_f32, rows.size() * n_in);
    const auto got_h = download<uint16_t>(out_f16, rows.size() * n_in);
    int bad = 0;
    for (size_t i = 0; i < rows.size(); ++i)
      for (int64_t k = 0; k < n_in; ++k) {
        const float want = ref[rows[i] * n_in + k];
        const float g = got[i * n_in + k];
        if (std::memcmp(&want, &g, 4) != 0 && bad++ < 5)
          ADD_FAILURE() << quant::type_name(type) << " row " << rows[i] << " elem " << k << ": " << g << " vs " << want;
        if (got_h[i * n_in + k] != quant::f32_to_f16(want) && bad++ < 5)
          ADD_FAILURE() << quant::type_name(type) << " f16 row " << rows[i] << " elem " << k;
      }
  }
}

TEST(CudaMatmul, GemvEveryTypeMatchesReference) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(12);
  for (Type type : kTypes)
    for (bool aligned : {true, false}) {
      if (!aligned && type != Type::F32 && type != Type::F16 && type != Type::BF16) continue;
      const int64_t n_in = n_in_for(type, aligned), n_out = 67;
      const auto w = random_weights(type, n_in, n_out, rng);
      const auto W = dequant_all(type, w, n_in, n_out);
      for (int64_t n_tok : {1, 3, 8}) {
        const auto x = cuda_test::random_floats(size_t(n_tok * n_in), rng);
        std::vector<double> ref, scale;
        reference(W, x, n_in, n_out, n_tok, ref, scale);
        auto dw = upload(w);
        auto dx = upload(x);
        cuda::DeviceBuffer dy(size_t(n_tok * n_out) * 4);
        cuda::gemv({type, dw.data(), n_in, n_out}, dx.as<float>(), n_tok, dy.as<float>(), nullptr);
        cuda_test::sync();
        const double worst = check_close(download<float>(dy, size_t(n_tok * n_out)), ref, scale, 1e-5,
                                         std::string("gemv ") + std::string(quant::type_name(type)));
        std::printf("gemv %-5s n_in %5lld tokens %lld: max |err|/sum|wx| = %.2e\n", std::string(quant::type_name(type)).c_str(),
                    (long long)n_in, (long long)n_tok, worst);
      }
    }
}

// The host twin of quantize_act_q8: per 32 inputs d = max|x| / 127, q = round-half-even(x / d).
void quantize_host(const std::vector<float>& x, std::vector<int8_t>& q, std::vector<float>& d) {
  q.resize(x.size());
  d.resize(x.size() / 32);
  for (size_t g = 0; g < d.size(); ++g) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[32 * g + i]));
    d[g] = amax / 127.0f;
    for (int i = 0; i < 32; ++i) q[32 * g + i] = amax == 0 ? 0 : int8_t(std::nearbyint(x[32 * g + i] / d[g]));
  }
}

TEST(CudaMatmul, GemvQ8EveryTypeMatchesReference) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(14);
  // Shapes: rows of whole chunks (the kernel's copy unit) and a partial last chunk; few rows (cut
  // in 2 or 4 parts, one warp each) and more rows than the GPU holds warps (whole rows, several
  // waves: 4099 and 20011 rows); rows that start off 16-byte boundaries (Q6_K at 1280 and 5120
  // inputs, Qwen3.5-27B's width: rows of 1050 and 4200 bytes; Q8_0 and Q4_0 at 1312 and 96).
  for (Type type : {Type::Q4_0, Type::Q8_0, Type::Q4_K, Type::Q5_K, Type::Q6_K})
  for (auto [n_in, n_out] : {std::pair<int64_t, int64_t>{1280, 67}, {8192, 67}, {8192, 4099}, {1280, 20011},
                             {type == Type::Q6_K ? 5120 : 1312, 4099}, {type == Type::Q6_K ? 5120 : 96, 67}}) {
    ASSERT_TRUE(cuda::gemv_q8_supports({type, nullptr, n_in, n_out})) << quant::type_name(type);
    const auto w = random_weights(type, n_in, n_out, rng);
    const auto W = dequant_all(type, w, n_in, n_out);
    auto dw = upload(w);
    std::vector<float> y_one;  // token 0 alone
    for (int64_t n_tok : {1, 3, 8}) {
      rng.seed(uint32_t(100 + int(type)));  // the same x for every token count (token 0 compared below)
      auto x = cuda_test::random_floats(size_t(n_tok * n_in), rng);
      for (int64_t k = 0; k < 32; ++k) x[size_t(k)] = 0.0f;  // an all-zero group
      std::vector<int8_t> q;
      std::vector<float> d;
      quantize_host(x, q, d);
      std::vector<float> xq(x.size());
      for (size_t i = 0; i < x.size(); ++i) xq[i] = d[i / 32] * float(q[i]);
      std::vector<double> ref, scale;
      reference(W, xq, n_in, n_out, n_tok, ref, scale);
      auto dx = upload(x);
      cuda::DeviceBuffer act(cuda::act_q8_bytes(n_in, n_tok)), dy(size_t(n_tok * n_out) * 4);
      cuda::quantize_act_q8(dx.as<float>(), n_tok, n_in, act.data(), nullptr);
      cuda::gemv_q8({type, dw.data(), n_in, n_out}, act.data(), n_tok, dy.as<float>(), nullptr);
      cuda_test::sync();
      const auto got_q = download<int8_t>(act, q.size());
      EXPECT_EQ(got_q, q) << "activation quants, " << quant::type_name(type);
      std::vector<float> got_s(2 * d.size());
      cuda::check(cudaMemcpy(got_s.data(), static_cast<uint8_t*>(act.data()) + (q.size() + 255) / 256 * 256,
                             got_s.size() * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
      for (size_t g = 0; g < d.size(); ++g) {
        int sum = 0;
        for (int i = 0; i < 32; ++i) sum += q[32 * g + i];
        ASSERT_EQ(got_s[2 * g], d[g]) << "group " << g;
        ASSERT_EQ(got_s[2 * g + 1], d[g] * float(sum)) << "group " << g;
      }
      const auto y = download<float>(dy, size_t(n_tok * n_out));
      const double worst = check_close(y, ref, scale, 1e-5, std::string("gemv_q8 ") + std::string(quant::type_name(type)));
      if (n_tok == 1) y_one.assign(y.begin(), y.begin() + n_out);
      EXPECT_EQ(0, std::memcmp(y_one.data(), y.data(), size_t(n_out) * 4)) << "token 0 alone vs among " << n_tok;
      std::printf("gemv_q8 %-5s %4lld x %5lld tokens %lld: max |err|/sum|wx'| = %.2e\n",
                  std::string(quant::type_name(type)).c_str(), (long long)n_out, (long long)n_in, (long long)n_tok, worst);
    }
  }
  EXPECT_TRUE(cuda::gemv_q8_supports({Type::Q6_K, nullptr, 1280, 4}));
  EXPECT_FALSE(cuda::gemv_q8_supports({Type::F16, nullptr, 4096, 4}));
}

// Q, K and V (or gate and up) in one call: each output bit for bit what its weight gives alone,
// with weights of two types (two launches) and of row counts cut in parts differently; and the
// Qwen3.5-27B delta-net input products (four weights of 5120 inputs in one launch, two of them
// 48 rows).
class GemvQ8Many : public ::testing::TestWithParam<int> {};

TEST_P(GemvQ8Many, EqualsEachAlone) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(15);
  const int64_t n_in = GetParam() == 0 ? 4096 : 5120;
  const std::vector<std::pair<Type, int64_t>> shapes =
      GetParam() == 0 ? std::vector<std::pair<Type, int64_t>>{{Type::Q4_K, 4096}, {Type::Q6_K, 1024}, {Type::Q4_K, 1024},
                                                              {Type::Q4_K, 67}}
                      : std::vector<std::pair<Type, int64_t>>{{Type::Q5_K, 10240}, {Type::Q5_K, 6144}, {Type::Q5_K, 48},
                                                              {Type::Q5_K, 48}};
  std::vector<cuda::DeviceBuffer> weights;
  std::vector<cuda::DeviceWeight> dws;
  for (auto [type, n_out] : shapes) {
    weights.push_back(upload(random_weights(type, n_in, n_out, rng)));
    dws.push_back({type, weights.back().data(), n_in, n_out});
  }
  for (int64_t n_tok : {1, 5}) {
    const auto x = cuda_test::random_floats(size_t(n_tok * n_in), rng);
    auto dx = upload(x);
    cuda::DeviceBuffer act(cuda::act_q8_bytes(n_in, n_tok));
    cuda::quantize_act_q8(dx.as<float>(), n_tok, n_in, act.data(), nullptr);
    std::vector<cuda::DeviceBuffer> alone, together;
    std::vector<cuda::GemvOut> outs;
    for (const auto& w : dws) {
      alone.emplace_back(size_t(n_tok * w.n_out) * 4);
      together.emplace_back(size_t(n_tok * w.n_out) * 4);
      cuda::gemv_q8(w, act.data(), n_tok, alone.back().as<float>(), nullptr);
      outs.push_back({&w, together.back().as<float>()});
    }
    cuda::gemv_q8_many(outs.data(), int(outs.size()), act.data(), n_tok, nullptr);
    cuda_test::sync();
    for (size_t i = 0; i < dws.size(); ++i) {
      const size_t n = size_t(n_tok * dws[i].n_out);
      EXPECT_EQ(download<uint32_t>(alone[i], n), download<uint32_t>(together[i], n))
          << "weight " << i << ", " << n_tok << " tokens";
    }
  }
}
INSTANTIATE_TEST_SUITE_P(CudaMatmul, GemvQ8Many, ::testing::Values(0, 1));

// A cuBLAS handle with its workspace on a stream of its own.
struct BlasRig {
  cuda::DeviceBuffer ws{cuda::kBlasWorkspaceBytes};
  cuda::Stream stream;
  cuda::Blas blas{ws.data(), ws.bytes(), stream.get()};
};

TEST(CudaMatmul, GemmF16EveryTypeMatchesReference) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(13);
  BlasRig rig;
  auto& blas = rig.blas;
  auto& stream = rig.stream;
  for (Type type : kTypes) {
    const int64_t n_in = n_in_for(type, type == Type::F32 ? false : true), n_out = 131;
    const auto w = random_weights(type, n_in, n_out, rng);
    const auto W = dequant_all(type, w, n_in, n_out);
    const bool rounded = type != Type::F32;  // F32 weights take an f32 GEMM: no operand rounding
    std::vector<float> Wb(W.size());
    for (size_t i = 0; i < W.size(); ++i) Wb[i] = rounded ? f16_round(W[i]) : W[i];
    for (int64_t n_tok : {9, 100}) {
      const auto x = cuda_test::random_floats(size_t(n_tok * n_in), rng);
      std::vector<float> xb(x.size());
      for (size_t i = 0; i < x.size(); ++i) xb[i] = rounded ? f16_round(x[i]) : x[i];
      std::vector<double> ref, scale, ref_b, scale_b;
      reference(W, x, n_in, n_out, n_tok, ref, scale);
      reference(Wb, xb, n_in, n_out, n_tok, ref_b, scale_b);
      auto dw = upload(w);
      auto dx = upload(x);
      cuda::DeviceBuffer dy(size_t(n_tok * n_out) * 4);
      cuda::DeviceBuffer scratch(cuda::matmul_scratch_bytes(type, n_in, n_out, n_tok));
      cuda::matmul(blas, {type, dw.data(), n_in, n_out}, dx.as<float>(), n_tok, dy.as<float>(), scratch.data());
      stream.synchronize();
      const auto y = download<float>(dy, size_t(n_tok * n_out));
      const std::string name(quant::type_name(type));
      const double worst_b = check_close(y, ref_b, scale_b, 1e-5, "gemm (f16 operands) " + name);
      const double worst = check_close(y, ref, scale, 2e-3, "gemm (exact operands) " + name);
      std::printf("gemm %-5s n_in %5lld tokens %3lld: max |err|/sum|wx| = %.2e vs f16 operands, %.2e vs exact\n",
                  name.c_str(), (long long)n_in, (long long)n_tok, worst_b, worst);
    }
  }
}

// The second product of the same x reuses the f16 copy the first left in the scratch (the
// backend's Q/K/V and gate/up): x_in_scratch must give the fresh conversion's bits, and must
// really skip it (a different x passed then still multiplies the copy).
TEST(CudaMatmul, GemmReusesTheF16CopyOfX) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(17);
  BlasRig rig;
  auto& blas = rig.blas;
  const Type type = Type::Q4_K;
  const int64_t n_in = 512, n_tok = 37, n_out_a = 96, n_out_b = 300;
  auto dwa = upload(random_weights(type, n_in, n_out_a, rng));
  auto dwb = upload(random_weights(type, n_in, n_out_b, rng));
  const cuda::DeviceWeight wa{type, dwa.data(), n_in, n_out_a}, wb{type, dwb.data(), n_in, n_out_b};
  auto dx = upload(cuda_test::random_floats(size_t(n_tok * n_in), rng));
  auto dx2 = upload(cuda_test::random_floats(size_t(n_tok * n_in), rng));
  cuda::DeviceBuffer ya(size_t(n_tok * n_out_a) * 4), fresh(size_t(n_tok * n_out_b) * 4), reused(fresh.bytes());
  cuda::DeviceBuffer scratch(std::max(cuda::matmul_scratch_bytes(type, n_in, n_out_a, n_tok),
                                      cuda::matmul_scratch_bytes(type, n_in, n_out_b, n_tok)));
  cuda::matmul(blas, wb, dx.as<float>(), n_tok, fresh.as<float>(), scratch.data());
  cuda::matmul(blas, wa, dx.as<float>(), n_tok, ya.as<float>(), scratch.data());
  cuda::matmul(blas, wb, dx2.as<float>(), n_tok, reused.as<float>(), scratch.data(), /*x_in_scratch=*/true);
  rig.stream.synchronize();
  const auto a = download<float>(fresh, size_t(n_tok * n_out_b)), b = download<float>(reused, size_t(n_tok * n_out_b));
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  EXPECT_TRUE(cuda::gemm_keeps_x_f16(wa));
  EXPECT_FALSE(cuda::gemm_keeps_x_f16({Type::F32, nullptr, n_in, n_out_a}));
}

}  // namespace

namespace {

// A measurement, not a test (disabled; run with --gtest_also_run_disabled_tests on the GPU): the GEMV's effective bandwidth on a 27B-sized matrix (5120 x 17408) per type,
// one token (decode).
TEST(CudaMatmul, DISABLED_GemvBandwidth) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(15);
  const int64_t n_in = 5120, n_out = 17408;
  for (Type type : {Type::Q8_0, Type::Q4_K, Type::Q5_K, Type::Q6_K, Type::F16}) {
    const auto w = random_weights(type, n_in, n_out, rng);
    const auto x = cuda_test::random_floats(size_t(n_in), rng);
    auto dw = upload(w);
    auto dx = upload(x);
    cuda::DeviceBuffer dy(size_t(n_out) * 4);
    const cuda::DeviceWeight view{type, dw.data(), n_in, n_out};
    cuda::gemv(view, dx.as<float>(), 1, dy.as<float>(), nullptr);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    const int reps = 50;
    cudaEventRecord(e0);
    for (int i = 0; i < reps; ++i) cuda::gemv(view, dx.as<float>(), 1, dy.as<float>(), nullptr);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    ms /= reps;
    std::printf("[cuda] gemv %-5s %lld x %lld, 1 token: %.3f ms, %.0f GB/s\n", std::string(quant::type_name(type)).c_str(),
                (long long)n_out, (long long)n_in, ms, double(w.size()) / ms / 1e6);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
  }
}

}  // namespace
