// CPU flash attention at Qwen3-0.6B shapes (16 query heads, 8 KV heads, head_dim 128, f16 cache,
// pages of 256): one layer's call for a prefill chunk of 512 tokens at a depth (the last chunk of
// a 4096-token prompt is tokens:512/depth:3584) and for one decode token at a depth. Reports
// GFLOP/s of the QK and PV products (4 * head_dim flops per visible key and query head).
// The /per_row variants force the decode kernels on every task (the pre-row-block behaviour); the
// /bf16 variants take fast mode's bf16 row-block kernels where this CPU has them; the /q8_0 ones
// read a q8_0 cache (decode cases).
// Run: build/keel_bench --benchmark_filter=Attention
#include <benchmark/benchmark.h>

#include <cmath>
#include <memory>
#include <utility>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/attention.h"
#include "backend/cpu/attention_kernels.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/host_memory.h"

namespace {

namespace backend = keel::backend;
namespace cpu = keel::cpu;

constexpr uint32_t kHeads = 16, kKvHeads = 8, kHeadDim = 128, kPage = 256;

void bench_attention(benchmark::State& state, int64_t n_tokens, int64_t depth, int layers, int threads,
                     cpu::AttentionPath path, bool fast, backend::KvType type) {
  backend::KvGeometry geo;
  geo.type = type;
  geo.n_layers = static_cast<uint32_t>(layers);
  geo.n_kv_heads = kKvHeads;
  geo.head_dim = kHeadDim;
  geo.page_tokens = kPage;
  const auto n_pages = static_cast<int32_t>((depth + n_tokens + kPage - 1) / kPage);
  geo.n_pages = static_cast<uint32_t>(n_pages);
  cpu::CpuBackend be(threads);
  be.create_kv(geo);
  std::vector<int32_t> table(static_cast<size_t>(n_pages));
  for (int32_t p = 0; p < n_pages; ++p) table[static_cast<size_t>(p)] = p;

  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  const int64_t total = depth + n_tokens;
  std::vector<int32_t> pos(static_cast<size_t>(total));
  for (int64_t i = 0; i < total; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  std::vector<float> k(static_cast<size_t>(total) * kKvHeads * kHeadDim), v(k.size());
  for (float& x : k) x = normal(rng);
  for (float& x : v) x = normal(rng);
  backend::SeqSlice all{0, total, 0, 0};
  backend::Batch fill;
  fill.n_tokens = total;
  fill.pos = pos.data();
  fill.n_seqs = 1;
  fill.seqs = &all;
  fill.page_table = table.data();
  fill.max_pages_per_seq = n_pages;
  be.begin_batch(fill);
  for (int l = 0; l < layers; ++l) be.kv_write(l, k.data(), v.data());

  std::vector<float> q(static_cast<size_t>(n_tokens) * kHeads * kHeadDim), out(q.size());
  for (float& x : q) x = normal(rng);
  // 64-byte aligned, as the session's plan allocates it (a vector's 16 bytes split every other
  // 32-byte load across cache lines, which slowed some kernels here and not in a model).
  const size_t ws_bytes =
      cpu::attention_workspace_bytes(geo, kHeads, threads, cpu::attention_takes_bf16(geo, fast), 1, n_tokens);
  const backend::Memory ws_memory = backend::allocate_host("attention", ws_bytes);
  float* ws = reinterpret_cast<float*>(ws_memory.get());
  backend::SeqSlice seq{0, n_tokens, depth, 0};
  cpu::AttentionArgs a;
  a.q = q.data();
  a.out = out.data();
  a.n_head = kHeads;
  a.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  std::vector<cpu::KvLayerView> views;
  for (int l = 0; l < layers; ++l) views.push_back({geo, be.kv_pages(l)});
  a.seqs = &seq;
  a.n_seqs = 1;
  a.page_table = table.data();
  a.max_pages_per_seq = n_pages;
  a.fast = fast;
  a.workspace_floats = ws_bytes / sizeof(float);
  for (auto _ : state)
    for (const cpu::KvLayerView& view : views) {
      a.kv = view;
      if (path == cpu::AttentionPath::automatic)
        cpu::flash_attention(a, ws, be.pool());
      else
        cpu::flash_attention_with(cpu::attention_kernels_for(static_cast<int>(kHeadDim)), a, ws, be.pool(), path);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  // Visible keys summed over the chunk's tokens: depth + 1, ..., depth + n_tokens.
  const double keys = static_cast<double>(n_tokens) * static_cast<double>(depth) +
                      static_cast<double>(n_tokens) * static_cast<double>(n_tokens + 1) / 2;
  state.counters["GFLOP/s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * layers * keys * kHeads * 4.0 * kHeadDim / 1e9,
      benchmark::Counter::kIsRate);
}

const bool registered = [] {
  // {tokens, depth, layers}: 28 layers' caches (a Qwen3-0.6B decode's 470 MB at depth 4096) come
  // from memory, one layer's from L3.
  const int64_t cases[][3] = {{512, 0, 1}, {512, 3584, 1}, {1, 512, 1}, {1, 4096, 1}, {1, 4096, 28}};
  struct Variant {
    cpu::AttentionPath path;
    bool fast;
    const char* suffix;
    backend::KvType type = backend::KvType::f16;
  };
  const Variant variants[] = {{cpu::AttentionPath::automatic, false, ""},
                              {cpu::AttentionPath::per_row, false, "/per_row"},
                              {cpu::AttentionPath::automatic, true, "/bf16"},
                              {cpu::AttentionPath::automatic, false, "/q8_0", backend::KvType::q8_0}};
  for (const auto& c : cases)
    for (int threads : {1, 2})
      for (const Variant& v : variants) {
        if (v.fast && cpu::attention_bf16_kernels_for(static_cast<int>(kHeadDim)) == nullptr) continue;
        if (v.type == backend::KvType::q8_0 && c[0] != 1) continue;
        const std::string layers = c[2] > 1 ? "/layers:" + std::to_string(c[2]) : "";
        const std::string name = "Attention/tokens:" + std::to_string(c[0]) + "/depth:" + std::to_string(c[1]) +
                                 layers + "/threads:" + std::to_string(threads) + v.suffix;
        benchmark::RegisterBenchmark(name.c_str(), bench_attention, c[0], c[1], static_cast<int>(c[2]), threads, v.path,
                                     v.fast, v.type)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
  return true;
}();

}  // namespace
