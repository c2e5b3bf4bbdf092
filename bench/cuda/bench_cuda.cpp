// CUDA kernel and synthetic-forward benchmark (no model file needed): times the device kernels
// on Qwen3-8B shapes with random weights of a chosen type, and a whole Qwen3-8B-shaped forward
// pass (36 layers, 4096 wide, 32/8 heads of 128, FFN 12288, vocab 151936) built from the same
// launchers the backend uses: prefill chunks and decode steps (eager and CUDA-graph replay).
//
//   keel_cuda_bench kernels            GEMV GB/s, GEMM TFLOP/s per type, attention TFLOP/s / GB/s
//   keel_cuda_bench forward q8_0|q4_k  prefill pp4096 / pp32768, decode at depth 0/4096/32768
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/attention.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemv_q8.cuh"
#include "backend/cuda/matmul.cuh"
#include "backend/cuda/memory.h"
#include "backend/cuda/ops.cuh"
#include "keel/error.h"
#include "quant/blocks.h"
#include "quant/types.h"

using namespace keel;
using quant::Type;

namespace {

// Random but valid weight bytes (finite f16 scales), generated on the host in one block-sized
// pattern and tiled (the kernels' speed does not depend on the values).
cuda::DeviceBuffer random_weight(Type type, int64_t n_in, int64_t n_out) {
  const size_t rb = quant::row_bytes(type, uint64_t(n_in));
  const size_t bytes = rb * size_t(n_out);
  std::vector<uint8_t> pattern(std::min<size_t>(bytes, size_t(64) << 20));
  uint32_t state = 12345;
  for (auto& b : pattern) { state = state * 1664525u + 1013904223u; b = uint8_t(state >> 24); }
  const auto ti = quant::info(type);
  auto put_f16 = [&](size_t off, float v) { const auto h = quant::f32_to_f16(v); std::memcpy(&pattern[off], &h, 2); };
  if (type == Type::F16 || type == Type::BF16) {
    for (size_t off = 0; off + 2 <= pattern.size(); off += 2) put_f16(off, float(int(pattern[off]) - 128) / 128.0f);
  } else if (type == Type::F32) {
    for (size_t off = 0; off + 4 <= pattern.size(); off += 4) { const float v = float(int(pattern[off]) - 128) / 128.0f; std::memcpy(&pattern[off], &v, 4); }
  } else {
    for (size_t off = 0; off + ti.block_bytes <= pattern.size(); off += ti.block_bytes) {
      if (type == Type::Q6_K) put_f16(off + 208, 0.01f);
      else { put_f16(off, 0.01f); if (type == Type::Q4_K || type == Type::Q5_K) put_f16(off + 2, 0.005f); }
    }
  }
  cuda::DeviceBuffer buf(bytes);
  const size_t piece = pattern.size() / ti.block_bytes * ti.block_bytes;
  for (size_t off = 0; off < bytes; off += piece)
    cuda::check(cudaMemcpy(static_cast<uint8_t*>(buf.data()) + off, pattern.data(), std::min(piece, bytes - off),
                           cudaMemcpyHostToDevice), "cudaMemcpy");
  return buf;
}

template <class F>
double time_ms(cudaStream_t stream, int reps, F&& f) {
  f();  // warm-up
  cuda::check(cudaStreamSynchronize(stream), "sync");
  cuda::Event a, b;
  a.record(stream);
  for (int i = 0; i < reps; ++i) f();
  b.record(stream);
  b.synchronize();
  return b.ms_since(a) / reps;
}

struct Meta {  // device arrays of one call (one sequence)
  int32_t* seq; int32_t* pos; int32_t* q_start; int32_t* pages; int max_pages;
};

void set_meta(const Meta& m, int n_tokens, int pos0) {
  std::vector<int32_t> seq(static_cast<size_t>(n_tokens), 0), pos(static_cast<size_t>(n_tokens));
  for (int t = 0; t < n_tokens; ++t) pos[t] = pos0 + t;
  const int32_t qs[2] = {0, n_tokens};
  cuda::check(cudaMemcpy(m.seq, seq.data(), seq.size() * 4, cudaMemcpyHostToDevice), "meta");
  cuda::check(cudaMemcpy(m.pos, pos.data(), pos.size() * 4, cudaMemcpyHostToDevice), "meta");
  cuda::check(cudaMemcpy(m.q_start, qs, 8, cudaMemcpyHostToDevice), "meta");
}

// One sequence's KV pool of max_ctx tokens (pages in order), zeroed, with zeroed queries, outputs
// and split workspace for up to max_tokens query tokens: the attention benches' setup.
// Random K/V (f16 or q8_0 pages) and q of unit variance: the online softmax's running max then moves as
// in a real model (zeros would never move it, and would flatter the kernels that skip rescales).
void fill_random(const cuda::KvLayout& kv, cuda::DeviceBuffer& pool, cuda::DeviceBuffer& q) {
  uint32_t state = 12345u;
  auto normal = [&] {  // sum of 4 uniforms, rescaled: close enough to N(0, 1) for timing
    float acc = 0.0f;
    for (int i = 0; i < 4; ++i) {
      state = state * 1664525u + 1013904223u;
      acc += static_cast<float>(state >> 8) * (1.0f / 16777216.0f);
    }
    return (acc - 2.0f) * 1.7320508f;
  };
  std::vector<quant::f16_bits> table(65536);
  for (auto& h : table) h = quant::f32_to_f16(normal());
  if (kv.elem == cuda::KvElem::f16) {
    std::vector<quant::f16_bits> host(pool.bytes() / 2);
    for (auto& h : host) {
      state = state * 1664525u + 1013904223u;
      h = table[state >> 16];
    }
    cuda::check(cudaMemcpy(pool.data(), host.data(), pool.bytes(), cudaMemcpyHostToDevice), "pool");
  } else {  // q8_0 blocks of the same N(0, 1) values: scale 1/48, quants clamped to +-127
    std::vector<int8_t> quants(65536);
    for (auto& x : quants) x = static_cast<int8_t>(std::clamp(std::lround(normal() * 48.0f), -127L, 127L));
    const quant::f16_bits d = quant::f32_to_f16(1.0f / 48.0f);
    std::vector<uint8_t> host(pool.bytes());
    for (size_t at = 0; at + 34 <= host.size(); at += 34) {
      std::memcpy(&host[at], &d, 2);
      for (int i = 0; i < 32; ++i) {
        state = state * 1664525u + 1013904223u;
        host[at + 2 + i] = static_cast<uint8_t>(quants[state >> 16]);
      }
    }
    cuda::check(cudaMemcpy(pool.data(), host.data(), pool.bytes(), cudaMemcpyHostToDevice), "pool");
  }
  std::vector<float> host_q(q.bytes() / 4);
  for (auto& x : host_q) x = normal();
  cuda::check(cudaMemcpy(q.data(), host_q.data(), q.bytes(), cudaMemcpyHostToDevice), "q");
}

struct AttentionRig {
  AttentionRig(const cuda::KvLayout& kv, int n_head, int max_ctx, int max_tokens)
      : n_pages((max_ctx + kv.page_tokens - 1) / kv.page_tokens),
        pool(size_t(n_pages) * kv.page_bytes()),
        q(size_t(max_tokens) * n_head * kv.head_dim * 4),
        out(q.bytes()),
        ws(cuda::attention_workspace_bytes(kv, n_head, max_tokens)),
        meta_buf(size_t(3 * max_tokens + 4 + n_pages) * 4) {
    fill_random(kv, pool, q);
    auto* mb = meta_buf.as<int32_t>();
    m = Meta{mb, mb + max_tokens, mb + 2 * max_tokens, mb + 2 * max_tokens + 4, n_pages};
    std::vector<int32_t> pages(static_cast<size_t>(n_pages));
    for (int i = 0; i < n_pages; ++i) pages[i] = i;
    cuda::check(cudaMemcpy(m.pages, pages.data(), pages.size() * 4, cudaMemcpyHostToDevice), "meta");
    b.n_seqs = 1; b.seq = m.seq; b.pos = m.pos; b.q_start = m.q_start; b.pages = m.pages; b.max_pages_per_seq = n_pages;
  }
  // The next call: n_tokens tokens from position pos0.
  void set(int n_tokens, int pos0) {
    set_meta(m, n_tokens, pos0);
    b.n_tokens = n_tokens;
  }
  int n_pages;
  cuda::DeviceBuffer pool, q, out, ws, meta_buf;
  Meta m{};
  cuda::AttentionBatch b;
};

void bench_kernels() {
  cuda::Stream stream;
  cuda::DeviceBuffer blas_ws(cuda::kBlasWorkspaceBytes);
  cuda::Blas blas(blas_ws.data(), blas_ws.bytes(), stream.get());
  const Type types[] = {Type::F16, Type::BF16, Type::Q4_0, Type::Q8_0, Type::Q4_K, Type::Q5_K, Type::Q6_K};
  std::printf("\n== GEMV (decode), 1 and 8 tokens: weight GB/s ==\n");
  for (Type type : types)
    for (auto [n_in, n_out] : {std::pair<int64_t, int64_t>{4096, 12288}, {12288, 4096}, {4096, 151936}}) {
      auto w = random_weight(type, n_in, n_out);
      cuda::DeviceBuffer x(size_t(8 * n_in) * 4), y(size_t(8 * n_out) * 4);
      cuda::check(cudaMemset(x.data(), 0, x.bytes()), "memset");
      const cuda::DeviceWeight dw{type, w.data(), n_in, n_out};
      for (int nt : {1, 8}) {
        const double ms = time_ms(stream.get(), 20, [&] { cuda::gemv(dw, x.as<float>(), nt, y.as<float>(), stream.get()); });
        std::printf("gemv %-5s %6lld x %6lld  tokens %d: %8.3f ms  %7.1f GB/s\n", std::string(quant::type_name(type)).c_str(),
                    (long long)n_out, (long long)n_in, nt, ms, double(w.bytes()) / ms / 1e6);
        if (!cuda::gemv_q8_supports(dw)) continue;
        cuda::DeviceBuffer act(cuda::act_q8_bytes(n_in, nt));
        const double ms_q = time_ms(stream.get(), 20, [&] {
          cuda::quantize_act_q8(x.as<float>(), nt, n_in, act.data(), stream.get());
          cuda::gemv_q8(dw, act.data(), nt, y.as<float>(), stream.get());
        });
        std::printf("gemv_q8 %-5s %6lld x %6lld  tokens %d: %8.3f ms  %7.1f GB/s (with the activation quantization)\n",
                    std::string(quant::type_name(type)).c_str(), (long long)n_out, (long long)n_in, nt, ms_q,
                    double(w.bytes()) / ms_q / 1e6);
      }
    }
  std::printf("\n== GEMM (prefill: dequant panel to f16 + cuBLAS), 4096 tokens: TFLOP/s ==\n");
  for (Type type : types)
    for (auto [n_in, n_out] : {std::pair<int64_t, int64_t>{4096, 12288}, {12288, 4096}, {4096, 4096}}) {
      const int64_t nt = 4096;
      auto w = random_weight(type, n_in, n_out);
      cuda::DeviceBuffer x(size_t(nt * n_in) * 4), y(size_t(nt * n_out) * 4);
      cuda::check(cudaMemset(x.data(), 0, x.bytes()), "memset");
      cuda::DeviceBuffer scratch(cuda::matmul_scratch_bytes(type, n_in, n_out, nt));
      const cuda::DeviceWeight dw{type, w.data(), n_in, n_out};
      const double ms = time_ms(stream.get(), 10, [&] { cuda::matmul(blas, dw, x.as<float>(), nt, y.as<float>(), scratch.data()); });
      const double ms_deq = time_ms(stream.get(), 10, [&] { cuda::dequant_rows_f16(dw, nullptr, n_out, scratch.data(), stream.get()); });
      std::printf("gemm %-5s %6lld x %6lld  x %lld tokens: %8.3f ms  %6.1f TFLOP/s  (dequant alone %.3f ms)\n",
                  std::string(quant::type_name(type)).c_str(), (long long)n_out, (long long)n_in, (long long)nt, ms,
                  2.0 * n_in * n_out * nt / ms / 1e9, ms_deq);
    }

  std::printf("\n== attention (32 heads / 8 KV heads, head 128, pages of 256) ==\n");
  for (auto elem : {cuda::KvElem::f16, cuda::KvElem::q8_0}) {
    const cuda::KvLayout kv{elem, 8, 128, 256};
    const int n_head = 32;
    AttentionRig rig(kv, n_head, 32768 + 4096, 4096);
    const char* name = elem == cuda::KvElem::f16 ? "f16" : "q8_0";
    auto run = [&] {
      cuda::attention(kv, rig.pool.data(), rig.b, rig.q.as<float>(), rig.out.as<float>(), n_head, 0.088f,
                      rig.ws.as<float>(), stream.get());
    };
    for (int depth : {0, 4096, 28672}) {
      const int nt = 4096;
      rig.set(nt, depth);
      const double ms = time_ms(stream.get(), 5, run);
      const double flops = 4.0 * n_head * 128 * (double(nt) * depth + double(nt) * nt / 2);  // causal
      std::printf("attention prefill %-4s 4096 tokens at depth %5d: %8.3f ms  %6.1f TFLOP/s\n", name, depth, ms, flops / ms / 1e9);
    }
    for (int depth : {4096, 32768}) {
      rig.set(1, depth);
      const double ms = time_ms(stream.get(), 50, run);
      const double bytes = double(depth + 1) * kv.token_bytes() * 2;
      std::printf("attention decode  %-4s 1 token at depth %5d: %8.4f ms  %7.1f GB/s of K/V\n", name, depth, ms, bytes / ms / 1e6);
    }
  }
}

// ---- a Qwen3-8B-shaped forward -----------------------------------------------------------------

struct Layer { cuda::DeviceBuffer wq, wk, wv, wo, wg, wu, wd; };

void bench_forward(const std::string& which) {
  const int n_layer = 36, d = 4096, n_head = 32, n_kv = 8, hd = 128, ff = 12288, vocab = 151936;
  const bool q4 = which == "q4_k";
  const Type t_main = q4 ? Type::Q4_K : Type::Q8_0, t_down = q4 ? Type::Q6_K : Type::Q8_0, t_out = q4 ? Type::Q6_K : Type::Q8_0;
  const int chunk = 4096, max_ctx = 32768 + chunk;
  cuda::Stream stream;
  cudaStream_t st = stream.get();
  std::printf("\n== Qwen3-8B-shaped forward, weights %s (attn/ffn_gate/up %s, ffn_down %s, output %s), KV f16 ==\n",
              which.c_str(), std::string(quant::type_name(t_main)).c_str(), std::string(quant::type_name(t_down)).c_str(),
              std::string(quant::type_name(t_out)).c_str());
  std::vector<Layer> layers(n_layer);
  uint64_t weight_bytes = 0;
  for (auto& L : layers) {
    L.wq = random_weight(t_main, d, n_head * hd); L.wk = random_weight(t_main, d, n_kv * hd);
    L.wv = random_weight(t_main, d, n_kv * hd); L.wo = random_weight(t_main, n_head * hd, d);
    L.wg = random_weight(t_main, d, ff); L.wu = random_weight(t_main, d, ff); L.wd = random_weight(t_down, ff, d);
    weight_bytes += L.wq.bytes() + L.wk.bytes() + L.wv.bytes() + L.wo.bytes() + L.wg.bytes() + L.wu.bytes() + L.wd.bytes();
  }
  auto w_out = random_weight(t_out, d, vocab);
  weight_bytes += w_out.bytes();
  std::vector<float> ones(size_t(ff), 1.0f);
  cuda::DeviceBuffer norm_w(size_t(ff) * 4);
  cuda::check(cudaMemcpy(norm_w.data(), ones.data(), ones.size() * 4, cudaMemcpyHostToDevice), "norm");
  const cuda::KvLayout kv{cuda::KvElem::f16, n_kv, hd, 256};
  const int n_pages = max_ctx / kv.page_tokens;
  std::vector<cuda::DeviceBuffer> pools;
  for (int il = 0; il < n_layer; ++il) {
    pools.emplace_back(size_t(n_pages) * kv.page_bytes());
    cuda::check(cudaMemset(pools.back().data(), 0, pools.back().bytes()), "memset");
  }
  auto f32 = [](int64_t n) { return cuda::DeviceBuffer(size_t(n) * 4); };
  auto hidden = f32(int64_t(chunk) * d), normed = f32(int64_t(chunk) * d), q = f32(int64_t(chunk) * n_head * hd),
       k = f32(int64_t(chunk) * n_kv * hd), v = f32(int64_t(chunk) * n_kv * hd), attn = f32(int64_t(chunk) * n_head * hd),
       proj = f32(int64_t(chunk) * d), gate = f32(int64_t(chunk) * ff), up = f32(int64_t(chunk) * ff), logits = f32(vocab),
       last = f32(d);
  cuda::check(cudaMemset(hidden.data(), 0, hidden.bytes()), "memset");
  size_t scratch_bytes = 0;
  for (auto [ni, no] : {std::pair<int64_t, int64_t>{d, ff}, {ff, d}, {d, n_head * hd}})
    scratch_bytes = std::max(scratch_bytes, cuda::matmul_scratch_bytes(t_main, ni, no, chunk));
  cuda::DeviceBuffer scratch(scratch_bytes), blas_ws(cuda::kBlasWorkspaceBytes),
      attn_ws(cuda::attention_workspace_bytes(kv, n_head, chunk)), meta_buf(size_t(3 * chunk + 8 + n_pages) * 4);
  cuda::Blas blas(blas_ws.data(), blas_ws.bytes(), st);
  auto* mb = meta_buf.as<int32_t>();
  Meta m{mb, mb + chunk, mb + 2 * chunk, mb + 2 * chunk + 4, n_pages};
  std::vector<int32_t> pages(static_cast<size_t>(n_pages));
  for (int i = 0; i < n_pages; ++i) pages[i] = i;
  cuda::check(cudaMemcpy(m.pages, pages.data(), pages.size() * 4, cudaMemcpyHostToDevice), "meta");
  cuda::DeviceBuffer last_row(4);
  const float eps = 1e-6f;

  auto forward = [&](int n) {
    cuda::AttentionBatch b;
    b.n_tokens = n; b.n_seqs = 1; b.seq = m.seq; b.pos = m.pos; b.q_start = m.q_start; b.pages = m.pages; b.max_pages_per_seq = n_pages;
    cuda::RopeArgs rope{cuda::RopeMode::neox, hd, 1000000.0f, 1.0f, nullptr};
    auto mm = [&](const cuda::DeviceBuffer& w, Type t, int64_t ni, int64_t no, const float* x, float* y) {
      cuda::matmul(blas, {t, w.data(), ni, no}, x, n, y, scratch.data());
    };
    for (int il = 0; il < n_layer; ++il) {
      const Layer& L = layers[il];
      cuda::rms_norm(hidden.as<float>(), norm_w.as<float>(), normed.as<float>(), n, d, eps, st);
      mm(L.wq, t_main, d, n_head * hd, normed.as<float>(), q.as<float>());
      mm(L.wk, t_main, d, n_kv * hd, normed.as<float>(), k.as<float>());
      mm(L.wv, t_main, d, n_kv * hd, normed.as<float>(), v.as<float>());
      cuda::rms_norm(q.as<float>(), norm_w.as<float>(), q.as<float>(), int64_t(n) * n_head, hd, eps, st);
      cuda::rms_norm(k.as<float>(), norm_w.as<float>(), k.as<float>(), int64_t(n) * n_kv, hd, eps, st);
      cuda::rope(q.as<float>(), n, n_head, hd, m.pos, rope, st);
      cuda::rope(k.as<float>(), n, n_kv, hd, m.pos, rope, st);
      cuda::kv_write(kv, pools[il].data(), b, k.as<float>(), v.as<float>(), st);
      cuda::attention(kv, pools[il].data(), b, q.as<float>(), attn.as<float>(), n_head, 0.088f, attn_ws.as<float>(), st);
      mm(L.wo, t_main, n_head * hd, d, attn.as<float>(), proj.as<float>());
      cuda::add_inplace(hidden.as<float>(), proj.as<float>(), int64_t(n) * d, st);
      cuda::rms_norm(hidden.as<float>(), norm_w.as<float>(), normed.as<float>(), n, d, eps, st);
      mm(L.wg, t_main, d, ff, normed.as<float>(), gate.as<float>());
      mm(L.wu, t_main, d, ff, normed.as<float>(), up.as<float>());
      cuda::silu_mul(gate.as<float>(), up.as<float>(), int64_t(n) * ff, st);
      mm(L.wd, t_down, ff, d, gate.as<float>(), proj.as<float>());
      cuda::add_inplace(hidden.as<float>(), proj.as<float>(), int64_t(n) * d, st);
    }
    cuda::rms_norm_rows(hidden.as<float>(), m.seq, norm_w.as<float>(), last.as<float>(), 1, d, eps, st);  // one row (row 0: m.seq holds zeros)
    cuda::gemv({t_out, w_out.data(), d, vocab}, last.as<float>(), 1, logits.as<float>(), st);
  };

  const double gflop_per_token = 2.0 * (double(weight_bytes) / quant::row_bytes(t_main, 256) * 256) / 1e9;  // ~2 x params
  // Prefill: pp4096 = one chunk from depth 0; pp32768 = 8 chunks of 4096.
  for (int total : {4096, 32768}) {
    set_meta(m, chunk, 0);
    forward(chunk);  // warm-up
    stream.synchronize();
    cuda::Event a, b;
    a.record(st);
    for (int p0 = 0; p0 < total; p0 += chunk) {
      set_meta(m, chunk, p0);
      forward(chunk);
    }
    b.record(st);
    b.synchronize();
    const double ms = b.ms_since(a);
    std::printf("prefill pp%-6d chunk %d: %9.1f ms  %8.0f tok/s  (~%.0f TFLOP/s in the matmuls' 2 x params count)\n", total,
                chunk, ms, total / ms * 1e3, gflop_per_token * total / ms / 1e3);
  }
  // Decode at depths: eager, and one CUDA graph replayed.
  for (int depth : {0, 4096, 32768}) {
    set_meta(m, 1, depth);
    const double ms = time_ms(st, 20, [&] { forward(1); });
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    cuda::check(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), "capture");
    forward(1);
    cuda::check(cudaStreamEndCapture(st, &graph), "capture");
    cuda::check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
    const double ms_graph = time_ms(st, 50, [&] { cuda::check(cudaGraphLaunch(exec, st), "graph launch"); });
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    const double kv_bytes = double(depth + 1) * kv.token_bytes() * 2 * n_layer;
    std::printf("decode at depth %5d: eager %7.3f ms (%6.1f tok/s), graph %7.3f ms (%6.1f tok/s, %6.0f GB/s weights+KV)\n",
                depth, ms, 1e3 / ms, ms_graph, 1e3 / ms_graph, (double(weight_bytes) + kv_bytes) / ms_graph / 1e6);
  }
  std::printf("weights %.2f GB\n", double(weight_bytes) / 1e9);
}

// Decode attention alone (one token, f16 and q8_0 KV) at the 8B shape (32 / 8 heads of 128) and the 27B
// one (24 / 4 heads of 256), for profilers: `keel_cuda_bench attn [DEPTH]`.
void bench_decode_attention(int depth_arg) {
  cuda::Stream stream;
  struct Shape { int n_head, n_kv, hd; };
  for (const auto elem : {cuda::KvElem::f16, cuda::KvElem::q8_0})
  for (const Shape sh : {Shape{32, 8, 128}, Shape{24, 4, 256}}) {
    const cuda::KvLayout kv{elem, sh.n_kv, sh.hd, 256};
    const char* name = elem == cuda::KvElem::f16 ? "f16" : "q8_0";
    const int max_ctx = depth_arg > 0 ? depth_arg + 256 : 32768 + 256;
    AttentionRig rig(kv, sh.n_head, max_ctx, 1);
    for (int depth : {4096, 32768, depth_arg}) {
      if (depth <= 0 || depth + 1 > max_ctx) continue;
      rig.set(1, depth);
      const double ms = time_ms(stream.get(), 50, [&] {
        cuda::attention(kv, rig.pool.data(), rig.b, rig.q.as<float>(), rig.out.as<float>(), sh.n_head, 0.088f,
                        rig.ws.as<float>(), stream.get());
      });
      const double bytes = double(depth + 1) * kv.token_bytes() * 2;
      std::printf("decode attention %-4s %d/%d heads of %d at depth %6d: %8.4f ms  %7.1f GB/s of K/V\n", name, sh.n_head,
                  sh.n_kv, sh.hd, depth, ms, bytes / ms / 1e6);
    }
  }
}

// Prefill attention alone: a chunk of nt tokens (4096 unless asked; the 27B's 173K prompt
// prefills in chunks of 16384) at depths 0, 28672 and depth_arg, random data, the 8B's and the
// 27B's head geometry, f16 and q8_0 pages of 256.
void bench_prefill_attention(int depth_arg, int nt) {
  cuda::Stream stream;
  struct Shape { int n_head, n_kv, hd; };
  for (const auto elem : {cuda::KvElem::f16, cuda::KvElem::q8_0})
  for (const Shape sh : {Shape{32, 8, 128}, Shape{24, 4, 256}}) {
    const char* name = elem == cuda::KvElem::f16 ? "f16" : "q8_0";
    const int max_ctx = std::max(28672, depth_arg) + nt;
    const cuda::KvLayout kv{elem, sh.n_kv, sh.hd, 256, (max_ctx + 255) / 256};
    AttentionRig rig(kv, sh.n_head, max_ctx, nt);
    std::vector<int> depths = {0, 28672};
    if (depth_arg > 0 && depth_arg != 28672) depths.push_back(depth_arg);
    for (int depth : depths) {
      rig.set(nt, depth);
      const double ms = time_ms(stream.get(), 5, [&] {
        cuda::attention(kv, rig.pool.data(), rig.b, rig.q.as<float>(), rig.out.as<float>(), sh.n_head,
                        1.0f / std::sqrt(float(sh.hd)), rig.ws.as<float>(), stream.get());
      });
      const double flops = 4.0 * sh.n_head * sh.hd * (double(nt) * depth + double(nt) * nt / 2);  // causal
      std::printf("prefill attention %-4s %d/%d heads of %d, %d tokens at depth %6d: %8.3f ms  %6.1f TFLOP/s\n", name,
                  sh.n_head, sh.n_kv, sh.hd, nt, depth, ms, flops / ms / 1e9);
    }
  }
}

// One 8-bit GEMV alone (the activations quantized once, outside the timing), for profilers:
// `keel_cuda_bench gemv q8_0 12288 4096` is the 4096 x 12288 (down projection) matrix.
void bench_gemv(const std::string& type_name, int64_t n_in, int64_t n_out) {
  const auto type = quant::type_from_name(type_name);
  if (!type) throw keel::Error("unknown type " + type_name);
  cuda::Stream stream;
  // Copies enough to fill several times the L2 cache, used in turn: each launch reads its weight
  // from memory, as a decode step does (one GEMV per layer's weight).
  std::vector<cuda::DeviceBuffer> ws;
  std::vector<cuda::DeviceWeight> dws;
  const size_t one = quant::row_bytes(*type, uint64_t(n_in)) * size_t(n_out);
  const size_t copies = std::max<size_t>(1, std::min<size_t>(64, (size_t(512) << 20) / one));
  for (size_t i = 0; i < copies; ++i) {
    ws.push_back(random_weight(*type, n_in, n_out));
    dws.push_back({*type, ws.back().data(), n_in, n_out});
  }
  if (!cuda::gemv_q8_supports(dws[0])) throw keel::Error("gemv_q8 does not take this weight");
  cuda::DeviceBuffer x(size_t(n_in) * 4), y(size_t(n_out) * 4), act(cuda::act_q8_bytes(n_in, 1));
  cuda::check(cudaMemset(x.data(), 0, x.bytes()), "memset");
  cuda::quantize_act_q8(x.as<float>(), 1, n_in, act.data(), stream.get());
  size_t next = 0;
  const double ms = time_ms(stream.get(), int(std::max<size_t>(50, 2 * copies)), [&] {
    cuda::gemv_q8(dws[next], act.data(), 1, y.as<float>(), stream.get());
    next = (next + 1) % copies;
  });
  std::printf("gemv_q8 %-5s %6lld x %6lld  token 1: %8.4f ms  %7.1f GB/s (%zu copies in turn)\n", type_name.c_str(),
              (long long)n_out, (long long)n_in, ms, double(one) / ms / 1e6, copies);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "kernels";
    cudaDeviceProp prop{};
    cuda::check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    std::printf("device: %s, %d SMs, %.0f MB L2\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6);
    if (mode == "kernels") bench_kernels();
    else if (mode == "forward") bench_forward(argc > 2 ? argv[2] : "q8_0");
    else if (mode == "attn") bench_decode_attention(argc > 2 ? std::atoi(argv[2]) : 0);
    else if (mode == "attnp") bench_prefill_attention(argc > 2 ? std::atoi(argv[2]) : 0, argc > 3 ? std::atoi(argv[3]) : 4096);
    else if (mode == "gemv" && argc == 5) bench_gemv(argv[2], std::atoll(argv[3]), std::atoll(argv[4]));
    else {
      std::fprintf(stderr, "usage: keel_cuda_bench kernels | forward q8_0|q4_k | gemv TYPE N_IN N_OUT | attn [DEPTH] | attnp [DEPTH [TOKENS]]\n");
      return 2;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
