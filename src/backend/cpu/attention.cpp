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

// The K tile is stored transposed, [head_dim][k_stride], so the score kernel runs over 16 (or 8)
// keys per vector with no horizontal sums; k_stride is page_tokens rounded up to 16.
int64_t k_stride(const backend::KvGeometry& kv) { return (int64_t{kv.page_tokens} + 15) / 16 * 16; }

struct Workspace {
  float* k_tile;   // [head_dim, k_stride]  (transposed)
  float* v_tile;   // [page_tokens, head_dim]
  float* row;      // [head_dim]  one K row before the transpose
  float* scores;   // [kAttentionRows, k_stride]
  float* m;        // [query_block * group]  running max
  float* l;        // [query_block * group]  running sum
  float* acc;      // [query_block * group, head_dim]
};

size_t per_thread_floats(const backend::KvGeometry& kv, uint32_t n_head) {
  const size_t group = n_head / kv.n_kv_heads;
  const size_t rows = kAttentionQueryBlock * group;
  const size_t ks = static_cast<size_t>(k_stride(kv));
  return ks * kv.head_dim + size_t{kv.page_tokens} * kv.head_dim + kv.head_dim + kAttentionRows * ks + 2 * rows +
         rows * kv.head_dim + 16;
}

Workspace carve(float* base, const backend::KvGeometry& kv, uint32_t n_head) {
  const size_t group = n_head / kv.n_kv_heads;
  const size_t rows = kAttentionQueryBlock * group;
  Workspace w{};
  const size_t ks = static_cast<size_t>(k_stride(kv));
  w.k_tile = base;
  w.v_tile = w.k_tile + ks * kv.head_dim;
  w.row = w.v_tile + size_t{kv.page_tokens} * kv.head_dim;
  w.scores = w.row + kv.head_dim;
  w.m = w.scores + kAttentionRows * ks;
  w.l = w.m + rows;
  w.acc = w.l + rows;
  return w;
}

void scores_generic(const float* const* q, int n_q, const float* kt, int64_t ldk, int64_t n_keys, int hd,
                    float scale, float* out, int64_t lds) {
  for (int r = 0; r < n_q; ++r)
    for (int64_t j = 0; j < n_keys; ++j) {
      float s = 0.0f;
      for (int i = 0; i < hd; ++i) s += q[r][i] * kt[i * ldk + j];
      out[r * lds + j] = s * scale;
    }
}

float exp_sum_generic(float* s, int64_t n, float max) {
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) sum += s[j] = std::exp(s[j] - max);
  return sum;
}

void accumulate_generic(float* acc, const float* correction, const float* p, int64_t ldp, int n_q,
                        const float* values, int64_t n_keys, int hd) {
  for (int r = 0; r < n_q; ++r) {
    float* a = acc + r * hd;
    for (int i = 0; i < hd; ++i) a[i] *= correction[r];
    for (int64_t j = 0; j < n_keys; ++j)
      for (int i = 0; i < hd; ++i) a[i] += p[r * ldp + j] * values[j * hd + i];
  }
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
  const int32_t* pages = a.page_table + int64_t{seq.slot} * a.max_pages_per_seq;
  const int64_t pos_of_first = seq.pos0 - seq.first;  // position of batch token t is pos_of_first + t
  const int hd = static_cast<int>(kv.head_dim);
  const uint32_t group = a.n_head / kv.n_kv_heads;
  const size_t rb = kv.row_bytes();
  const quant::Type et = backend::kv_element_type(kv.type);
  const int64_t n_rows = (t1 - t0) * group;
  const int64_t ks = k_stride(kv);
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
      load_row(kern, et, kp + off, w.row, hd);
      for (int i = 0; i < hd; ++i) w.k_tile[i * ks + j] = w.row[i];
      load_row(kern, et, vp + off, w.v_tile + j * hd, hd);
    }
    // Rows (token t, head hh) in groups of kAttentionRows share each K and V load. A row whose
    // causal limit is below the group's n_keys gets -inf scores (weight 0) past its limit; a row
    // that sees none of this page keeps its state (weight 0, correction 1).
    for (int64_t row0 = 0; row0 < n_rows; row0 += kAttentionRows) {
      const int n_q = static_cast<int>(std::min<int64_t>(kAttentionRows, n_rows - row0));
      const float* q[kAttentionRows];
      int64_t limit[kAttentionRows];
      int64_t n_keys = 0;
      for (int r = 0; r < n_q; ++r) {
        const int64_t t = t0 + (row0 + r) / group;
        const uint32_t h = g * group + static_cast<uint32_t>((row0 + r) % group);
        q[r] = a.q + (t * a.n_head + h) * hd;
        limit[r] = std::clamp<int64_t>(pos_of_first + t - start + 1, 0, len);  // causal
        n_keys = std::max(n_keys, limit[r]);
      }
      if (n_keys == 0) continue;
      kern.scores(q, n_q, w.k_tile, ks, n_keys, hd, a.scale, w.scores, ks);
      float correction[kAttentionRows];
      for (int r = 0; r < n_q; ++r) {
        float* s = w.scores + r * ks;
        const int64_t row = row0 + r;
        if (limit[r] == 0) {
          std::fill(s, s + n_keys, 0.0f);
          correction[r] = 1.0f;
          continue;
        }
        float mx = s[0];
        for (int64_t j = 1; j < limit[r]; ++j) mx = std::max(mx, s[j]);
        const float m_new = std::max(w.m[row], mx);
        correction[r] = std::exp(w.m[row] - m_new);
        const float sum = kern.exp_sum(s, limit[r], m_new);
        std::fill(s + limit[r], s + n_keys, 0.0f);
        w.l[row] = w.l[row] * correction[r] + sum;
        w.m[row] = m_new;
      }
      kern.accumulate(w.acc + row0 * hd, correction, w.scores, ks, n_q, w.v_tile, n_keys, hd);
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
  // The matmul's choice (its AVX2 test also covers F16C), so KEEL_CPU_ISA caps attention too.
  static const bool avx2 = best_isa() != Isa::generic;
  static const bool avx512 = best_isa() == Isa::avx512;
  if (avx512 && head_dim % 16 == 0) return attention_kernels_avx512();
  if (avx2 && head_dim % 8 == 0) return attention_kernels_avx2();
  return attention_kernels_generic();
}

void flash_attention(const AttentionArgs& a, float* workspace, ThreadPool& pool) {
  flash_attention_with(attention_kernels_for(static_cast<int>(a.kv.geo.head_dim)), a, workspace, pool);
}

void flash_attention_with(const AttentionKernels& kern, const AttentionArgs& a, float* workspace, ThreadPool& pool) {
  const backend::KvGeometry& kv = a.kv.geo;
  // Tasks: (sequence, query block, KV head). Later query blocks see more KV: blocks are dealt
  // round-robin from the last block of the last sequence for balance.
  auto blocks_of = [](const backend::SeqSlice& s) { return (s.n_tokens + kAttentionQueryBlock - 1) / kAttentionQueryBlock; };
  int64_t n_blocks = 0;
  for (int32_t s = 0; s < a.n_seqs; ++s) n_blocks += blocks_of(a.seqs[s]);
  const int64_t n_tasks = n_blocks * kv.n_kv_heads;
  const size_t stride = per_thread_floats(kv, a.n_head);
  pool.run([&](int ith, int nth) {
    Workspace w = carve(workspace + stride * static_cast<size_t>(ith), kv, a.n_head);
    int32_t s = a.n_seqs - 1;
    int64_t blocks_after = 0;  // blocks of the sequences after s
    for (int64_t task = ith; task < n_tasks; task += nth) {
      const int64_t from_end = task / kv.n_kv_heads;  // 0 = the last block of the batch
      const uint32_t g = static_cast<uint32_t>(task % kv.n_kv_heads);
      while (from_end >= blocks_after + blocks_of(a.seqs[s])) blocks_after += blocks_of(a.seqs[s--]);
      const backend::SeqSlice& seq = a.seqs[s];
      const int64_t block = blocks_of(seq) - 1 - (from_end - blocks_after);
      const int64_t t0 = seq.first + block * kAttentionQueryBlock;
      attend_block(kern, a, seq, g, t0, std::min(seq.first + seq.n_tokens, t0 + kAttentionQueryBlock), w);
    }
  });
}

}  // namespace keel::cpu
