// matmul benchmarks at Qwen3-0.6B shapes: GEMV (1 token, decode) reports GB/s of weights read,
// GEMM (64 and 512 tokens, prefill chunks) reports GFLOP/s. 1 and 2 threads.
//
// GEMV runs "cold" (and "hot" for comparison): cold cycles through copies of the weight matrix totalling ~384 MiB, as a
// decode step streams the whole model from memory; a matrix alone would sit in the L2/L3 caches.
// Run: build-mm/keel_bench --benchmark_filter=Matmul
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/matmul.h"
#include "quant/blocks.h"

namespace {

using keel::cpu::ThreadPool;
using keel::cpu::WeightView;
using keel::quant::Type;
namespace quant = keel::quant;

constexpr size_t kColdBytes = size_t{384} << 20;

struct AlignedBuffer {
  explicit AlignedBuffer(size_t n) : raw(new uint8_t[n + 64]) {
    data = raw.get() + (64 - reinterpret_cast<uintptr_t>(raw.get()) % 64) % 64;
  }
  std::unique_ptr<uint8_t[]> raw;
  uint8_t* data;
};

// Random valid weights (random quant bytes, small finite scales), `copies` times in a row.
AlignedBuffer make_weights(Type type, int64_t n_in, int64_t n_out, size_t copies, size_t* matrix_bytes) {
  const size_t bytes = quant::row_bytes(type, static_cast<uint64_t>(n_in)) * static_cast<size_t>(n_out);
  AlignedBuffer buf(bytes * copies);
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> value(-0.05f, 0.05f);
  uint8_t* w = buf.data;
  const auto put_f16 = [](uint8_t* p, float v) {
    const quant::f16_bits h = quant::f32_to_f16(v);
    std::memcpy(p, &h, 2);
  };
  if (type == Type::F32) {
    for (size_t i = 0; i < bytes / 4; ++i) {
      const float v = value(rng);
      std::memcpy(w + 4 * i, &v, 4);
    }
  } else if (type == Type::F16) {
    for (size_t i = 0; i < bytes / 2; ++i) put_f16(w + 2 * i, value(rng));
  } else {
    for (size_t i = 0; i < bytes; ++i) w[i] = static_cast<uint8_t>(byte(rng));
    const size_t block = quant::info(type).block_bytes;
    for (size_t off = 0; off < bytes; off += block) {
      if (type == Type::Q6_K) {
        put_f16(w + off + 208, 0.001f);
      } else {
        put_f16(w + off, 0.001f);
        if (type == Type::Q4_K || type == Type::Q5_K) put_f16(w + off + 2, 0.001f);
      }
    }
  }
  for (size_t c = 1; c < copies; ++c) std::memcpy(w + c * bytes, w, bytes);
  *matrix_bytes = bytes;
  return buf;
}

ThreadPool& pool_of(int threads) {
  static ThreadPool one(1), two(2);
  return threads == 1 ? one : two;
}

void bench_matmul(benchmark::State& state, Type type, int64_t n_in, int64_t n_out, int64_t n_tok,
                  int threads, bool cold, keel::cpu::MatmulMode mode) {
  const size_t one = quant::row_bytes(type, static_cast<uint64_t>(n_in)) * static_cast<size_t>(n_out);
  const size_t copies = cold ? std::max<size_t>(1, kColdBytes / one) : 1;
  size_t matrix_bytes = 0;
  AlignedBuffer w = make_weights(type, n_in, n_out, copies, &matrix_bytes);
  std::vector<float> x(static_cast<size_t>(n_tok * n_in));
  std::mt19937 rng(8);
  std::normal_distribution<float> normal;
  for (float& v : x) v = normal(rng);
  std::vector<float> y(static_cast<size_t>(n_tok * n_out));
  ThreadPool& pool = pool_of(threads);
  AlignedBuffer scratch(keel::cpu::matmul_scratch_bytes(type, n_in, n_tok, pool.size(), mode));

  size_t c = 0;
  for (auto _ : state) {
    const WeightView view{type, w.data + c * matrix_bytes, n_in, n_out};
    keel::cpu::matmul(view, x.data(), n_tok, y.data(), scratch.data, pool, mode);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
    c = (c + 1) % copies;
  }
  const double iters = static_cast<double>(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(iters * static_cast<double>(matrix_bytes) / 1e9,
                                              benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(
      iters * 2.0 * static_cast<double>(n_in * n_out * n_tok) / 1e9, benchmark::Counter::kIsRate);
}

const bool registered = [] {
  const Type types[] = {Type::Q8_0, Type::Q4_K, Type::Q5_K, Type::Q6_K, Type::F32};
  const int64_t shapes[][2] = {{1024, 3072}, {3072, 1024}, {1024, 2048}};
  for (Type type : types)
    for (const auto& shape : shapes)
      for (int64_t n_tok : {1, 64, 512})
        for (int threads : {1, 2})
          for (bool cold : {true, false}) {
            if (!cold && n_tok >= keel::cpu::kGemmMinTokens) continue;  // GEMM: weights stay hot
            const std::string name = "Matmul/" + std::string(quant::type_name(type)) + "/" +
                                     std::to_string(shape[0]) + "x" + std::to_string(shape[1]) +
                                     "/tokens:" + std::to_string(n_tok) + "/threads:" +
                                     std::to_string(threads) + (n_tok == 1 ? (cold ? "/cold" : "/hot") : "");
            benchmark::RegisterBenchmark(name.c_str(), bench_matmul, type, shape[0], shape[1], n_tok,
                                         threads, cold && n_tok < keel::cpu::kGemmMinTokens,
                                         keel::cpu::MatmulMode::exact)
                ->UseRealTime()
                ->Unit(benchmark::kMillisecond)
                ->ComputeStatistics("min", [](const std::vector<double>& v) {
                  return *std::min_element(v.begin(), v.end());
                });
          }
  // The fast path (8-bit activations; integer GEMV and GEMM) on the same shapes: compare with
  // Matmul/... above.
  for (Type type : {Type::Q4_0, Type::Q8_0, Type::Q4_K, Type::Q5_K, Type::Q6_K})
    for (const auto& shape : shapes)
      for (int64_t n_tok : {1, 64, 512})
        for (int threads : {1, 2})
          for (bool cold : {true, false}) {
            if (!cold && n_tok >= keel::cpu::kGemmMinTokens) continue;  // GEMM: weights stay hot
            const std::string name = "MatmulFast/" + std::string(quant::type_name(type)) + "/" +
                                     std::to_string(shape[0]) + "x" + std::to_string(shape[1]) +
                                     "/tokens:" + std::to_string(n_tok) + "/threads:" + std::to_string(threads) +
                                     (n_tok == 1 ? (cold ? "/cold" : "/hot") : "");
            benchmark::RegisterBenchmark(name.c_str(), bench_matmul, type, shape[0], shape[1], n_tok, threads,
                                         cold && n_tok < keel::cpu::kGemmMinTokens, keel::cpu::MatmulMode::fast)
                ->UseRealTime()
                ->Unit(benchmark::kMillisecond);
          }
  // Small batches around the GEMV -> GEMM switch (kGemmMinTokens), weights hot.
  for (Type type : {Type::Q8_0, Type::Q4_K, Type::Q6_K})
    for (int64_t n_tok = 2; n_tok <= 8; ++n_tok) {
      const std::string name = "MatmulSmall/" + std::string(quant::type_name(type)) +
                               "/1024x3072/tokens:" + std::to_string(n_tok) + "/threads:1";
      benchmark::RegisterBenchmark(name.c_str(), bench_matmul, type, 1024, 3072, n_tok, 1, false,
                                   keel::cpu::MatmulMode::exact)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  return true;
}();

}  // namespace
