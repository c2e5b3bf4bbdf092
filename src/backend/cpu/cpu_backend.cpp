#include "backend/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "backend/cpu/attention.h"
#include "backend/cpu/attention_kernels.h"
#include "backend/host_memory.h"
#include "backend/cpu/gated_delta.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/matmul_q8.h"
#include "backend/cpu/ops.h"
#include "keel/error.h"
#include "quant/blocks.h"
#include "quant/dequant.h"

namespace keel::cpu {
namespace {

// Runs fn(begin, end) over n_rows rows of `width` floats, in ranges of at least ~16K floats per
// thread (row-wise ops are cheap: small batches stay on the calling thread).
template <typename F>
void for_rows(ThreadPool& pool, int64_t n_rows, int64_t width, F&& fn) {
  pool.parallel_for(n_rows, std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(1, width)), fn);
}

float* as_floats(const backend::Memory& m) { return reinterpret_cast<float*>(m.get()); }

// Attention may round to bf16 only where the matmuls already round activations to 8 bits: a
// model of float weights stays float throughout in either mode (matmul.h).
bool fast_attention(const backend::WorkloadShape& s) {
  return !s.exact && std::any_of(s.matrices.begin(), s.matrices.end(), [](const auto& m) { return q8_supported(m.type); });
}

}  // namespace

std::vector<backend::BufferSpec> workspace_buffers(const backend::WorkloadShape& s) {
  uint64_t matmul_bytes = 0;
  for (const auto& m : s.matrices)
    matmul_bytes = std::max<uint64_t>(
        matmul_bytes, matmul_scratch_bytes(m.type, m.n_in, s.max_tokens, s.n_threads,
                                           s.exact ? MatmulMode::exact : MatmulMode::fast));
  std::vector<backend::BufferSpec> out = {{"matmul", matmul_bytes}};
  if (s.kv.n_layers > 0)
    out.push_back({"attention", attention_workspace_bytes(s.kv, s.n_head, s.n_threads,
                                                          attention_takes_bf16(s.kv, fast_attention(s)), s.n_seqs,
                                                          s.max_tokens)});
  if (s.gdn_d_k > 0) out.push_back({"gdn_work", gated_delta_workspace_bytes(s.gdn_d_k, s.gdn_d_v, s.n_threads)});
  return out;
}

CpuBackend::CpuBackend(int n_threads) : pool_(n_threads) {}

backend::Memory CpuBackend::allocate(std::string_view name, size_t bytes) {
  if (frozen_) throw Error("internal: allocation of '" + std::string(name) + "' after the session started");
  return backend::allocate_host(name, bytes);
}

void CpuBackend::reserve(const backend::WorkloadShape& shape) {
  matmul_mode_ = shape.exact ? MatmulMode::exact : MatmulMode::fast;
  fast_attention_ = fast_attention(shape);
  for (const backend::BufferSpec& b : workspace_buffers(shape)) {
    backend::Memory m = allocate(b.name, b.bytes);
    if (b.name == "matmul") matmul_ws_ = std::move(m);
    else if (b.name == "attention") {
      attention_ws_ = std::move(m);
      attention_ws_floats_ = b.bytes / sizeof(float);
    }
    else gdn_ws_ = std::move(m);
  }
}

void CpuBackend::create_kv(const backend::KvGeometry& geometry) {
  if (geometry.type == backend::KvType::q8_0 && geometry.head_dim % 32 != 0)
    throw Error("q8_0 KV cache needs a head size that is a multiple of 32, the model has " +
                std::to_string(geometry.head_dim));
  kv_ = geometry;
  const size_t n = size_t{kv_.n_layers} * kv_.n_pages;
  pages_.clear();
  pages_.reserve(n);
  page_ptrs_.clear();
  page_ptrs_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    pages_.push_back(allocate("kv pages", kv_.page_bytes()));
    page_ptrs_.push_back(pages_.back().get());
  }
}

void CpuBackend::download(const void* src, void* host_dst, size_t bytes) {
  if (src != host_dst) std::memcpy(host_dst, src, bytes);
}

void CpuBackend::zero(void* dst, size_t bytes) { std::memset(dst, 0, bytes); }

void CpuBackend::read_kv_page(uint32_t layer, int32_t page, void* host_dst) {
  std::memcpy(host_dst, kv_pages(layer)[page], kv_.page_bytes());
}

void CpuBackend::write_kv_page(uint32_t layer, int32_t page, const void* host_src) {
  std::memcpy(page_ptrs_[size_t{layer} * kv_.n_pages + static_cast<size_t>(page)], host_src, kv_.page_bytes());
}

void CpuBackend::embed(const backend::WeightView& table, float* out) {
  const int64_t d = table.n_in, n = batch_.n_tokens;
  const size_t row = quant::row_bytes(table.type, static_cast<uint64_t>(d));
  for (int64_t t = 0; t < n; ++t)
    if (batch_.tokens[t] < 0 || batch_.tokens[t] >= table.n_out)
      throw Error("token id " + std::to_string(batch_.tokens[t]) + " is outside the vocabulary (" +
                  std::to_string(table.n_out) + " tokens)");
  const auto* base = static_cast<const uint8_t*>(table.data);
  for (int64_t t = 0; t < n; ++t)
    quant::dequantize_row(table.type, base + row * static_cast<size_t>(batch_.tokens[t]), out + t * d, d);
}

void CpuBackend::rms_norm(const float* x, const float* w, float* out, int64_t n_rows, int64_t dim, float eps) {
  for_rows(pool_, n_rows, dim, [&](int64_t b, int64_t e) { cpu::rms_norm(x + b * dim, w, out + b * dim, e - b, dim, eps); });
}

void CpuBackend::gated_rms_norm(float* o, const float* z, const float* w, int64_t n_rows, int64_t dim, float eps) {
  for_rows(pool_, n_rows, dim,
           [&](int64_t b, int64_t e) { cpu::gated_rms_norm(o + b * dim, z + b * dim, w, e - b, dim, eps); });
}

// Element-wise: split as rows of one (ranges of 16K floats: multiples of any SIMD width, so each
// element takes the same instructions whatever the split).
void CpuBackend::add(float* y, const float* x, int64_t n) {
  for_rows(pool_, n, 1, [&](int64_t b, int64_t e) { add_inplace(y + b, x + b, e - b); });
}

void CpuBackend::add_bias(float* x, const float* bias, int64_t n_rows, int64_t dim) {
  cpu::add_bias(x, bias, n_rows, dim);
}

void CpuBackend::silu_mul(float* gate, const float* up, int64_t n) {
  for_rows(pool_, n, 1, [&](int64_t b, int64_t e) { cpu::silu_mul(gate + b, up + b, e - b); });
}

void CpuBackend::sigmoid_gate(float* x, const float* gate, int64_t gate_stride, int64_t n_rows, int64_t dim) {
  for_rows(pool_, n_rows, dim, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      float* xr = x + r * dim;
      const float* gr = gate + r * gate_stride;
      for (int64_t i = 0; i < dim; ++i) xr[i] /= 1.0f + std::exp(-gr[i]);
    }
  });
}

void CpuBackend::copy_rows(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t n_rows,
                           int64_t width) {
  for_rows(pool_, n_rows, width, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) std::copy_n(src + r * src_stride, width, dst + r * dst_stride);
  });
}

// Batch invariance: a token's result must not depend on which other sequences share its call, so
// a batch is multiplied per sequence (a prefill chunk takes the path its length takes alone) and
// single-token decodes in groups small enough for the GEMV path, whose per-token arithmetic does
// not depend on the token count (matmul.h). Decodes batched together thus give exactly the logits
// each gives alone; the weights are streamed once per group of kGemmMinTokens - 1 decodes.
// multiply(first, count) multiplies tokens [first, first + count) of the call.
template <class Multiply>
void CpuBackend::for_each_token_run(int64_t n_tokens, Multiply&& multiply) const {
  if (n_tokens < kGemmMinTokens || n_tokens != batch_.n_tokens || batch_.n_seqs <= 1) {
    multiply(int64_t{0}, n_tokens);
    return;
  }
  int64_t run_first = 0, run_len = 0;  // pending single-token sequences, consecutive in the batch
  auto flush = [&] {
    if (run_len > 0) multiply(run_first, run_len);
    run_len = 0;
  };
  for (int32_t s = 0; s < batch_.n_seqs; ++s) {
    const backend::SeqSlice& seq = batch_.seqs[s];
    if (seq.n_tokens == 1) {
      if (run_len == 0) run_first = seq.first;
      if (++run_len == kGemmMinTokens - 1) flush();
      continue;
    }
    flush();
    multiply(seq.first, seq.n_tokens);
  }
  flush();
}

void CpuBackend::matmul(const backend::WeightView& w, const float* x, int64_t n_tokens, float* y) {
  for_each_token_run(n_tokens, [&](int64_t first, int64_t count) {
    cpu::matmul(w, x + first * w.n_in, count, y + first * w.n_out, matmul_ws_.get(), pool_, matmul_mode_);
  });
}

// The weights share each quantization of x (cpu::matmuls), in runs of up to kMaxShared weights.
void CpuBackend::matmuls(const float* x, int64_t n_tokens, std::initializer_list<Product> products) {
  constexpr size_t kMaxShared = 8;
  for (auto next = products.begin(); next != products.end();) {
    const auto end = products.end() - next > static_cast<std::ptrdiff_t>(kMaxShared) ? next + kMaxShared : products.end();
    for_each_token_run(n_tokens, [&](int64_t first, int64_t count) {
      cpu::MatmulProduct run[kMaxShared];
      size_t n = 0;
      for (auto p = next; p != end; ++p) run[n++] = {&p->w, p->y + first * p->w.n_out};
      cpu::matmuls(x + first * next->w.n_in, count, {run, n}, matmul_ws_.get(), pool_, matmul_mode_);
    });
    next = end;
  }
}

void CpuBackend::rope(float* x, int64_t n_heads, int64_t head_dim, const backend::RopeParams& p) {
  const int64_t width = n_heads * head_dim;
  for_rows(pool_, batch_.n_tokens, width, [&](int64_t b, int64_t e) {
    cpu::rope(x + b * width, e - b, n_heads, head_dim, batch_.pos + b, p);
  });
}

// One pass over the tokens instead of four (the two norms and the two rotations).
void CpuBackend::norm_rope_qk(float* q, int64_t n_q_heads, float* k, int64_t n_kv_heads, int64_t n_tokens,
                              int64_t head_dim, const float* q_norm, const float* k_norm, float eps,
                              const backend::RopeParams& p) {
  if (n_tokens != batch_.n_tokens)
    return Backend::norm_rope_qk(q, n_q_heads, k, n_kv_heads, n_tokens, head_dim, q_norm, k_norm, eps, p);
  for_rows(pool_, n_tokens, (n_q_heads + n_kv_heads) * head_dim, [&](int64_t b, int64_t e) {
    cpu::norm_rope_qk(q + b * n_q_heads * head_dim, n_q_heads, k + b * n_kv_heads * head_dim, n_kv_heads, e - b, head_dim,
                      q_norm, k_norm, eps, batch_.pos + b, p);
  });
}

void CpuBackend::kv_write(uint32_t layer, const float* k, const float* v) {
  const int64_t width = int64_t{kv_.n_kv_heads} * kv_.head_dim;
  const size_t tb = kv_.token_bytes();
  const AttentionKernels& kern = attention_kernels_for(static_cast<int>(kv_.head_dim));  // once, not per token
  const uint8_t* const* pages = kv_pages(layer);
  for (int32_t s = 0; s < batch_.n_seqs; ++s) {
    const backend::SeqSlice& seq = batch_.seqs[s];
    const int32_t* table = batch_.page_table + int64_t{seq.slot} * batch_.max_pages_per_seq;
    if ((seq.pos0 + seq.n_tokens + kv_.page_tokens - 1) / kv_.page_tokens > batch_.max_pages_per_seq)
      throw Error("context full: position " + std::to_string(seq.pos0 + seq.n_tokens) +
                  " exceeds the KV cache capacity of a sequence");
    for_rows(pool_, seq.n_tokens, 2 * width, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t t = seq.first + i, pos = seq.pos0 + i;
        uint8_t* kdst = const_cast<uint8_t*>(pages[table[pos / kv_.page_tokens]]) +
                        static_cast<size_t>(pos % kv_.page_tokens) * tb;
        uint8_t* vdst = kdst + size_t{kv_.page_tokens} * tb;
        const float* ksrc = k + t * width;
        const float* vsrc = v + t * width;
        switch (kv_.type) {
          case backend::KvType::f32:
            std::memcpy(kdst, ksrc, sizeof(float) * width);
            std::memcpy(vdst, vsrc, sizeof(float) * width);
            break;
          case backend::KvType::f16:
            kern.f32_to_f16(ksrc, reinterpret_cast<quant::f16_bits*>(kdst), width);
            kern.f32_to_f16(vsrc, reinterpret_cast<quant::f16_bits*>(vdst), width);
            break;
          case backend::KvType::q8_0:  // a token's heads' rows are whole blocks, one after the other
            kern.f32_to_q8_0(ksrc, kdst, width);
            kern.f32_to_q8_0(vsrc, vdst, width);
            break;
        }
      }
    });
  }
}

void CpuBackend::attention(uint32_t layer, const float* q, float* out, uint32_t n_head, float scale) {
  AttentionArgs a;
  a.q = q;
  a.out = out;
  a.n_head = n_head;
  a.scale = scale;
  a.kv = {kv_, kv_pages(layer)};
  a.seqs = batch_.seqs;
  a.n_seqs = batch_.n_seqs;
  a.page_table = batch_.page_table;
  a.max_pages_per_seq = batch_.max_pages_per_seq;
  a.fast = fast_attention_;
  a.workspace_floats = attention_ws_floats_;
  flash_attention(a, as_floats(attention_ws_), pool_);
}

void CpuBackend::conv1d_silu(const float* x, int64_t channels, const float* w, int kernel, float* state, float* out) {
  const int64_t state_floats = int64_t{kernel - 1} * channels;
  for (int32_t s = 0; s < batch_.n_seqs; ++s) {
    const backend::SeqSlice& seq = batch_.seqs[s];
    causal_conv1d_silu(x + seq.first * channels, seq.n_tokens, channels, w, kernel, state + seq.slot * state_floats,
                       out + seq.first * channels, pool_);
  }
}

void CpuBackend::l2_norm_heads(float* x, int64_t n_rows, int64_t row_stride, int64_t n_heads, int64_t dim, float eps,
                               float scale) {
  for_rows(pool_, n_rows, n_heads * dim, [&](int64_t b, int64_t e) {
    cpu::l2_norm_heads(x + b * row_stride, e - b, row_stride, n_heads, dim, eps, scale);
  });
}

void CpuBackend::gdn_gates(float* beta, float* alpha, const float* ssm_a, const float* dt_bias, int64_t n_heads) {
  cpu::gdn_gates(beta, alpha, ssm_a, dt_bias, batch_.n_tokens, n_heads);
}

void CpuBackend::gated_delta(const backend::GatedDeltaArgs& g) {
  const int64_t state_floats = g.n_v_heads * g.d_k * g.d_v;
  for (int32_t s = 0; s < batch_.n_seqs; ++s) {
    const backend::SeqSlice& seq = batch_.seqs[s];
    GatedDeltaArgs a;
    a.q = g.q + seq.first * g.qk_stride;
    a.k = g.k + seq.first * g.qk_stride;
    a.v = g.v + seq.first * g.v_stride;
    a.qk_stride = g.qk_stride;
    a.v_stride = g.v_stride;
    a.g = g.g + seq.first * g.n_v_heads;
    a.beta = g.beta + seq.first * g.n_v_heads;
    a.state = g.state + seq.slot * state_floats;
    a.out = g.out + seq.first * g.n_v_heads * g.d_v;
    a.n_tokens = seq.n_tokens;
    a.n_k_heads = g.n_k_heads;
    a.n_v_heads = g.n_v_heads;
    a.d_k = g.d_k;
    a.d_v = g.d_v;
    if (seq.n_tokens == 1) gated_delta_recurrent(a, as_floats(gdn_ws_), pool_);
    else gated_delta_chunked(a, as_floats(gdn_ws_), pool_);
  }
}

void CpuBackend::logits(const float* hidden, const float* norm_w, float eps, const backend::WeightView& w_out,
                        float* rows, float* logits) {
  const int64_t d = w_out.n_in, n = batch_.n_logit_rows;
  if (n == 0) return;
  for (int64_t r = 0; r < n; ++r) cpu::rms_norm(hidden + int64_t{batch_.logit_rows[r]} * d, norm_w, rows + r * d, 1, d, eps);
  // One row per sequence (generation): rows in GEMV-sized groups, as each would be alone.
  const int64_t group = n <= batch_.n_seqs ? kGemmMinTokens - 1 : n;
  for (int64_t r = 0; r < n; r += group)
    cpu::matmul(w_out, rows + r * d, std::min(group, n - r), logits + r * w_out.n_out, matmul_ws_.get(), pool_, matmul_mode_);
}

}  // namespace keel::cpu
