#include "backend/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "backend/cpu/attention_kernels.h"
#include "backend/cpu/matmul.h"
#include "quant/blocks.h"
#include "quant/dequant.h"

namespace keel::cpu {
namespace {

struct Workspace {
  float* k_tile;   // [page_tokens, head_dim]
  float* v_tile;   // [page_tokens, head_dim]
  float* scores;   // [page_tokens]
  float* m;        // [query_block * group]  running max
  float* l;        // [query_block * group]  running sum
  float* acc;      // [query_block * group, head_dim]
};

size_t per_thread_floats(const backend::KvGeometry& kv, uint32_t n_head) {
  const size_t group = n_head / kv.n_kv_heads;
  const size_t rows = kAttentionQueryBlock * group;
  return 2 * size_t{kv.page_tokens} * kv.head_dim + kv.page_tokens + 2 * rows + rows * kv.head_dim + 16;
}

Workspace carve(float* base, const backend::KvGeometry& kv, uint32_t n_head) {
  const size_t group = n_head / kv.n_kv_heads;
  const size_t rows = kAttentionQueryBlock * group;
  Workspace w{};
  w.k_tile = base;
  w.v_tile = w.k_tile + size_t{kv.page_tokens} * kv.head_dim;
  w.scores = w.v_tile + size_t{kv.page_tokens} * kv.head_dim;
  w.m = w.scores + kv.page_tokens;
  w.l = w.m + rows;
  w.acc = w.l + rows;
  return w;
}

float scores_generic(const float* q, const float* keys, int64_t n_keys, int hd, float scale, float* out) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n_keys; ++j) {
    const float* k = keys + j * hd;
    float s = 0.0f;
    for (int i = 0; i < hd; ++i) s += q[i] * k[i];
    out[j] = s * scale;
    mx = std::max(mx, out[j]);
  }
  return mx;
}

float exp_sum_generic(float* s, int64_t n, float max) {
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) sum += s[j] = std::exp(s[j] - max);
  return sum;
}

void accumulate_generic(float* acc, float correction, const float* p, const float* values, int64_t n_keys, int hd) {
  for (int i = 0; i < hd; ++i) acc[i] *= correction;
  for (int64_t j = 0; j < n_keys; ++j)
    for (int i = 0; i < hd; ++i) acc[i] += p[j] * values[j * hd + i];
}

void f16_to_f32_generic(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = quant::f16_to_f32(src[i]);
}

void load_row(const AttentionKernels& k, quant::Type type, const uint8_t* src, float* dst, int hd) {
  switch (type) {
    case quant::Type::F32: std::memcpy(dst, src, sizeof(float) * static_cast<size_t>(hd)); return;
    case quant::Type::F16: k.f16_to_f32(reinterpret_cast<const uint16_t*>(src), dst, hd); return;
    default: quant::dequantize_row(type, src, dst, hd);
  }
}

// One task: KV head g, query tokens [t0, t1) of sequence `seq` (batch indices).
void attend_block(const AttentionKernels& kern, const AttentionArgs& a, const backend::SeqSlice& seq, uint32_t g,
                  int64_t t0, int64_t t1, const Workspace& w) {
  const backend::KvGeometry& kv = a.kv.geo;
  const int hd = static_cast<int>(kv.head_dim);
  const uint32_t group = a.n_head / kv.n_kv_heads;
  const size_t rb = kv.row_bytes();
  const quant::Type et = backend::kv_element_type(kv.type);
  const int64_t n_rows = (t1 - t0) * group;
  const int32_t* pages = a.page_table + int64_t{seq.slot} * a.max_pages_per_seq;
  const int64_t pos_of_first = seq.pos0 - seq.first;  // position of batch token t is pos_of_first + t
  std::fill(w.m, w.m + n_rows, -std::numeric_limits<float>::infinity());
  std::fill(w.l, w.l + n_rows, 0.0f);
  std::fill(w.acc, w.acc + n_rows * hd, 0.0f);

  const int64_t last_pos = pos_of_first + t1 - 1;
  const int64_t n_pages = last_pos / kv.page_tokens + 1;
  for (int64_t page = 0; page < n_pages; ++page) {
    const int64_t start = page * kv.page_tokens;
    const int64_t len = std::min<int64_t>(kv.page_tokens, last_pos + 1 - start);
    const uint8_t* kp = a.kv.k_page(pages[page]);
    const uint8_t* vp = a.kv.v_page(pages[page]);
    for (int64_t j = 0; j < len; ++j) {
      const size_t off = (static_cast<size_t>(j) * kv.n_kv_heads + g) * rb;
      load_row(kern, et, kp + off, w.k_tile + j * hd, hd);
      load_row(kern, et, vp + off, w.v_tile + j * hd, hd);
    }
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t limit = std::min<int64_t>(len, pos_of_first + t - start + 1);  // causal
      if (limit <= 0) continue;
      for (uint32_t hh = 0; hh < group; ++hh) {
        const uint32_t h = g * group + hh;
        const int64_t row = (t - t0) * group + hh;
        const float* q = a.q + (t * a.n_head + h) * hd;
        const float mx = kern.scores(q, w.k_tile, limit, hd, a.scale, w.scores);
        const float m_new = std::max(w.m[row], mx);
        const float correction = std::exp(w.m[row] - m_new);
        const float sum = kern.exp_sum(w.scores, limit, m_new);
        kern.accumulate(w.acc + row * hd, correction, w.scores, w.v_tile, limit, hd);
        w.l[row] = w.l[row] * correction + sum;
        w.m[row] = m_new;
      }
    }
  }
  for (int64_t t = t0; t < t1; ++t)
    for (uint32_t hh = 0; hh < group; ++hh) {
      const int64_t row = (t - t0) * group + hh;
      const float inv = 1.0f / w.l[row];
      float* out = a.out + (t * a.n_head + g * group + hh) * hd;
      for (int i = 0; i < hd; ++i) out[i] = w.acc[row * hd + i] * inv;
    }
}

}  // namespace

size_t attention_workspace_bytes(const backend::KvGeometry& kv, uint32_t n_head, int n_threads) {
  return sizeof(float) * per_thread_floats(kv, n_head) * static_cast<size_t>(n_threads);
}

const AttentionKernels& attention_kernels_generic() {
  static const AttentionKernels k{scores_generic, exp_sum_generic, accumulate_generic, f16_to_f32_generic};
  return k;
}

const AttentionKernels& attention_kernels_for(int head_dim) {
#if defined(__x86_64__)
  // best_isa() checks avx2, fma, f16c and bmi2: the flags every *_avx2.cpp file is compiled with.
  static const bool avx2 = isa_supported(Isa::avx2);
  static const bool avx512 = isa_supported(Isa::avx512);
  if (avx512 && head_dim % 16 == 0) return attention_kernels_avx512();
  if (avx2 && head_dim % 8 == 0) return attention_kernels_avx2();
#elif defined(__aarch64__)
  static const bool neon = isa_supported(Isa::neon);  // false only under KEEL_CPU_ISA=generic
  if (neon && head_dim % 4 == 0) return attention_kernels_neon();
#endif
  return attention_kernels_generic();
}

void flash_attention(const AttentionArgs& a, float* workspace, ThreadPool& pool) {
  flash_attention_with(attention_kernels_for(static_cast<int>(a.kv.geo.head_dim)), a, workspace, pool);
}

void flash_attention_with(const AttentionKernels& kern, const AttentionArgs& a, float* workspace, ThreadPool& pool) {
  const backend::KvGeometry& kv = a.kv.geo;
  // Tasks: (sequence, query block, KV head). Later query blocks see more KV: blocks are dealt
  // round-robin from the last block of the last sequence for balance.
  int64_t n_blocks = 0;
  for (int32_t s = 0; s < a.n_seqs; ++s) n_blocks += (a.seqs[s].n_tokens + kAttentionQueryBlock - 1) / kAttentionQueryBlock;
  const int64_t n_tasks = n_blocks * kv.n_kv_heads;
  const size_t stride = per_thread_floats(kv, a.n_head);
  pool.run([&](int ith, int nth) {
    Workspace w = carve(workspace + stride * static_cast<size_t>(ith), kv, a.n_head);
    int32_t s = a.n_seqs - 1;
    int64_t blocks_after = 0;  // blocks of sequences after s
    for (int64_t task = ith; task < n_tasks; task += nth) {
      const int64_t from_end = task / kv.n_kv_heads;  // 0 = the last block of the batch
      const uint32_t g = static_cast<uint32_t>(task % kv.n_kv_heads);
      int64_t seq_blocks = (a.seqs[s].n_tokens + kAttentionQueryBlock - 1) / kAttentionQueryBlock;
      while (from_end >= blocks_after + seq_blocks) {
        blocks_after += seq_blocks;
        --s;
        seq_blocks = (a.seqs[s].n_tokens + kAttentionQueryBlock - 1) / kAttentionQueryBlock;
      }
      const backend::SeqSlice& seq = a.seqs[s];
      const int64_t block = seq_blocks - 1 - (from_end - blocks_after);
      const int64_t t0 = seq.first + block * kAttentionQueryBlock;
      attend_block(kern, a, seq, g, t0, std::min(seq.first + seq.n_tokens, t0 + kAttentionQueryBlock), w);
    }
  });
}

}  // namespace keel::cpu
