#include "backend/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

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

size_t per_thread_floats(const runtime::KvGeometry& kv, uint32_t n_head) {
  const size_t group = n_head / kv.n_kv_heads;
  const size_t rows = kAttentionQueryBlock * group;
  return 2 * size_t{kv.page_tokens} * kv.head_dim + kv.page_tokens + 2 * rows + rows * kv.head_dim + 16;
}

Workspace carve(float* base, const runtime::KvGeometry& kv, uint32_t n_head) {
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

inline float dot(const float* a, const float* b, int n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// One task: KV head g, query tokens [t0, t1).
void attend_block(const AttentionArgs& a, uint32_t g, int64_t t0, int64_t t1, const Workspace& w) {
  const runtime::KvGeometry& kv = a.kv->geometry();
  const int hd = static_cast<int>(kv.head_dim);
  const uint32_t group = a.n_head / kv.n_kv_heads;
  const size_t rb = kv.row_bytes();
  const quant::Type et = runtime::kv_element_type(kv.type);
  const int64_t n_rows = (t1 - t0) * group;
  std::fill(w.m, w.m + n_rows, -std::numeric_limits<float>::infinity());
  std::fill(w.l, w.l + n_rows, 0.0f);
  std::fill(w.acc, w.acc + n_rows * hd, 0.0f);

  const int64_t last_pos = a.pos0 + t1 - 1;
  const uint32_t n_pages = static_cast<uint32_t>(last_pos / kv.page_tokens + 1);
  for (uint32_t page = 0; page < n_pages; ++page) {
    const int64_t start = int64_t{page} * kv.page_tokens;
    const int64_t len = std::min<int64_t>(kv.page_tokens, last_pos + 1 - start);
    const uint8_t* kp = a.kv->k_page(a.layer, page);
    const uint8_t* vp = a.kv->v_page(a.layer, page);
    for (int64_t j = 0; j < len; ++j) {
      const size_t off = (static_cast<size_t>(j) * kv.n_kv_heads + g) * rb;
      quant::dequantize_row(et, kp + off, w.k_tile + j * hd, hd);
      quant::dequantize_row(et, vp + off, w.v_tile + j * hd, hd);
    }
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t limit = std::min<int64_t>(len, a.pos0 + t - start + 1);  // causal
      if (limit <= 0) continue;
      for (uint32_t hh = 0; hh < group; ++hh) {
        const uint32_t h = g * group + hh;
        const int64_t row = (t - t0) * group + hh;
        const float* q = a.q + (t * a.n_head + h) * hd;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < limit; ++j) {
          w.scores[j] = dot(q, w.k_tile + j * hd, hd) * a.scale;
          mx = std::max(mx, w.scores[j]);
        }
        const float m_new = std::max(w.m[row], mx);
        const float correction = std::exp(w.m[row] - m_new);
        float* acc = w.acc + row * hd;
        float l = w.l[row] * correction;
        for (int i = 0; i < hd; ++i) acc[i] *= correction;
        for (int64_t j = 0; j < limit; ++j) {
          const float e = std::exp(w.scores[j] - m_new);
          l += e;
          const float* v = w.v_tile + j * hd;
#pragma omp simd
          for (int i = 0; i < hd; ++i) acc[i] += e * v[i];
        }
        w.l[row] = l;
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

size_t attention_workspace_bytes(const runtime::KvGeometry& kv, uint32_t n_head, int n_threads) {
  return sizeof(float) * per_thread_floats(kv, n_head) * static_cast<size_t>(n_threads);
}

void flash_attention(const AttentionArgs& a, float* workspace, ThreadPool& pool) {
  const runtime::KvGeometry& kv = a.kv->geometry();
  const int64_t n_blocks = (a.n_tokens + kAttentionQueryBlock - 1) / kAttentionQueryBlock;
  const int64_t n_tasks = n_blocks * kv.n_kv_heads;
  const size_t stride = per_thread_floats(kv, a.n_head);
  pool.run([&](int ith, int nth) {
    Workspace w = carve(workspace + stride * static_cast<size_t>(ith), kv, a.n_head);
    // Later query blocks see more KV: deal tasks round-robin from the end for balance.
    for (int64_t task = ith; task < n_tasks; task += nth) {
      const int64_t block = n_blocks - 1 - task / kv.n_kv_heads;
      const uint32_t g = static_cast<uint32_t>(task % kv.n_kv_heads);
      const int64_t t0 = block * kAttentionQueryBlock;
      attend_block(a, g, t0, std::min(a.n_tokens, t0 + kAttentionQueryBlock), w);
    }
  });
}

}  // namespace keel::cpu
