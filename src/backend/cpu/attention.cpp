#include "backend/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "backend/cpu/attention_kernels.h"
#include "backend/cpu/matmul.h"
#include "quant/blocks.h"
#include "quant/dequant.h"
#include "quant/quantize_q8_0.h"

namespace keel::cpu {
namespace {

struct Workspace {
  float* k_tile;   // [page_tokens, head_dim]
  float* v_tile;   // [page_tokens, head_dim]
  float* scores;   // [group, page_tokens]           per-row path
  float* m;        // [padded_rows]  running max
  float* l;        // [padded_rows]  running sum
  float* acc;      // [padded_rows, head_dim]        per-row path; row-block path: [head_dim, padded_rows]
  float* qt;       // [head_dim, padded sub-block rows] row-block path: a sub-block's queries transposed, scaled
  float* st;       // [page_tokens, padded_rows]     row-block path: scores/probabilities transposed
  float* correction;  // [padded_rows]               row-block path
  uint16_t* kb;    // [page_tokens, head_dim]        bf16 row-block path: keys
  uint16_t* vb;    // [page_tokens + 1, head_dim]    values in key pairs
  uint16_t* qp;    // [head_dim, padded_rows]        queries in pairs, scaled
  uint16_t* pp;    // [page_tokens + 1, padded_rows] probabilities in key pairs
};

// Query tokens per task: the block grows with the page (so does the workspace, which the planner
// shrinks pages to fit).
int64_t query_block(const backend::KvGeometry& kv, bool bf16) {
  return bf16 ? std::clamp<int64_t>(kv.page_tokens, kAttentionQueryBlock, 2 * kAttentionQueryBlockBf16)
              : std::clamp<int64_t>(kv.page_tokens / 4, kAttentionQueryBlock, kAttentionQueryBlockF32);
}

// Query tokens the row-block kernels take at once within a task's block: the bf16 ones take a
// block in two halves over each packed page (the packing shared, the scores and sums of a half
// in L2).
int64_t sub_block(const backend::KvGeometry& kv, bool bf16) {
  const int64_t block = query_block(kv, bf16);
  return bf16 ? std::max<int64_t>(block / 2, kAttentionQueryBlock) : block;
}

size_t round_to_pad(size_t rows) { return (rows + kAttentionRowPad - 1) / kAttentionRowPad * kAttentionRowPad; }

// The rows of a full sub-block, rounded up to the block kernels' lane multiple.
size_t padded_sub_rows(const backend::KvGeometry& kv, uint32_t n_head, bool bf16) {
  return round_to_pad(static_cast<size_t>(sub_block(kv, bf16)) * (n_head / kv.n_kv_heads));
}

// The rows of a full query block: its sub-blocks' padded rows.
size_t padded_rows(const backend::KvGeometry& kv, uint32_t n_head, bool bf16) {
  const int64_t subs = (query_block(kv, bf16) + sub_block(kv, bf16) - 1) / sub_block(kv, bf16);
  return static_cast<size_t>(subs) * padded_sub_rows(kv, n_head, bf16);
}

size_t per_thread_floats(const backend::KvGeometry& kv, uint32_t n_head, bool bf16) {
  const size_t rows = padded_rows(kv, n_head, bf16), sub = padded_sub_rows(kv, n_head, bf16);
  const size_t pt = kv.page_tokens, hd = kv.head_dim;
  // The bf16 tiles (halves of floats). The f32 tiles stay whole: decode tasks of the same call use them.
  const size_t bf16_tiles = bf16 ? (pt * hd + (pt + 1) * hd + hd * rows + (pt + 1) * sub + 1) / 2 : 0;
  const size_t group = n_head / kv.n_kv_heads;
  return 2 * pt * hd + group * pt + 3 * rows + rows * hd + sub * hd + pt * sub + bf16_tiles + 16;
}

Workspace carve(float* base, const backend::KvGeometry& kv, uint32_t n_head, bool bf16) {
  const size_t rows = padded_rows(kv, n_head, bf16), sub = padded_sub_rows(kv, n_head, bf16);
  const size_t pt = kv.page_tokens, hd = kv.head_dim;
  Workspace w{};
  w.k_tile = base;
  w.v_tile = w.k_tile + pt * hd;
  w.acc = w.v_tile + pt * hd;
  w.qt = w.acc + rows * hd;
  w.st = w.qt + sub * hd;
  w.scores = w.st + pt * sub;
  w.m = w.scores + static_cast<size_t>(n_head / kv.n_kv_heads) * pt;
  w.l = w.m + rows;
  w.correction = w.l + rows;
  w.kb = reinterpret_cast<uint16_t*>(w.correction + rows);
  w.vb = w.kb + pt * hd;
  w.qp = w.vb + (pt + 1) * hd;
  w.pp = w.qp + hd * rows;
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

// scores_generic and accumulate_generic over a cache's rows in place (f16, q8_0): each row is
// converted (convert(j, row)), then goes through the f32 twin itself, so the two give the same
// bits whatever the compiler contracts or unrolls.
constexpr int kMaxGenericRow = 1024;  // the largest head size a model may have (hparams.cpp)

template <class Convert>
void scores_converted(const float* q, int n_q, int64_t n_keys, int hd, float scale, float* out, float* maxima,
                      Convert convert) {
  float row[kMaxGenericRow];
  for (int r = 0; r < n_q; ++r) maxima[r] = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n_keys; ++j) {
    convert(j, row);
    for (int r = 0; r < n_q; ++r)
      maxima[r] = std::max(maxima[r], scores_generic(q + r * hd, row, 1, hd, scale, out + r * n_keys + j));
  }
}

template <class Convert>
void accumulate_converted(float* acc, const float* correction, int n_q, const float* p, int64_t ldp, int64_t n_keys,
                          int hd, Convert convert) {
  float row[kMaxGenericRow];
  for (int r = 0; r < n_q; ++r)
    for (int i = 0; i < hd; ++i) acc[r * hd + i] *= correction[r];
  for (int64_t j = 0; j < n_keys; ++j) {
    convert(j, row);
    for (int r = 0; r < n_q; ++r)  // acc * 1 is exact: the f32 twin's sums, in its order
      accumulate_generic(acc + r * hd, 1.0f, p + r * ldp + j, row, 1, hd);
  }
}

void scores_f16_generic(const float* q, int n_q, const uint16_t* keys, int64_t stride, int64_t n_keys, int hd,
                        float scale, float* out, float* maxima) {
  scores_converted(q, n_q, n_keys, hd, scale, out, maxima, [&](int64_t j, float* row) {
    for (int i = 0; i < hd; ++i) row[i] = quant::f16_to_f32(keys[j * stride + i]);
  });
}

void accumulate_f16_generic(float* acc, const float* correction, int n_q, const float* p, int64_t ldp,
                            const uint16_t* values, int64_t stride, int64_t n_keys, int hd) {
  accumulate_converted(acc, correction, n_q, p, ldp, n_keys, hd, [&](int64_t j, float* row) {
    for (int i = 0; i < hd; ++i) row[i] = quant::f16_to_f32(values[j * stride + i]);
  });
}

void scores_q8_generic(const float* q, int n_q, const uint8_t* keys, int64_t stride, int64_t n_keys, int hd,
                       float scale, float* out, float* maxima) {
  scores_converted(q, n_q, n_keys, hd, scale, out, maxima, [&](int64_t j, float* row) {
    quant::dequantize_row(quant::Type::Q8_0, keys + j * stride, row, hd);
  });
}

void accumulate_q8_generic(float* acc, const float* correction, int n_q, const float* p, int64_t ldp,
                           const uint8_t* values, int64_t stride, int64_t n_keys, int hd) {
  accumulate_converted(acc, correction, n_q, p, ldp, n_keys, hd, [&](int64_t j, float* row) {
    quant::dequantize_row(quant::Type::Q8_0, values + j * stride, row, hd);
  });
}

void f16_to_f32_generic(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = quant::f16_to_f32(src[i]);
}

void f32_to_f16_generic(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = quant::f32_to_f16(src[i]);
}

void scores_rows_generic(const float* qt, int64_t ldq, int n_rows, const float* keys, int64_t n_keys, int hd, float* st,
                         int64_t lds) {
  for (int64_t j = 0; j < n_keys; ++j)
    for (int r = 0; r < n_rows; ++r) {
      float s = 0.0f;
      for (int i = 0; i < hd; ++i) s += keys[j * hd + i] * qt[i * ldq + r];
      st[j * lds + r] = s;
    }
}

// softmax_rows of attention_kernels.h, a row at a time; each probability p of key j < n_keys goes
// to put(r, j, p) (softmax_rows_generic stores it in place, softmax_pack_generic packs it).
template <class Put>
void softmax_rows_generic_with(const float* st, int64_t lds, int n_rows, int64_t n_keys, int64_t first_visible,
                               int group, float* m, float* l, float* correction, Put put) {
  for (int r = 0; r < n_rows; ++r) {
    const int64_t visible = std::clamp<int64_t>(first_visible + r / group, 0, n_keys);
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < visible; ++j) mx = std::max(mx, st[j * lds + r]);
    const float m_new = std::max(m[r], mx);
    correction[r] = std::exp(m[r] - m_new);
    float sum = 0.0f;
    for (int64_t j = 0; j < n_keys; ++j) {
      const float p = j < visible ? std::exp(st[j * lds + r] - m_new) : 0.0f;
      sum += p;
      put(r, j, p);
    }
    l[r] = l[r] * correction[r] + sum;
    m[r] = m_new;
  }
}

void softmax_rows_generic(float* st, int64_t lds, int n_rows, int64_t n_keys, int64_t first_visible, int group,
                          float* m, float* l, float* correction) {
  softmax_rows_generic_with(st, lds, n_rows, n_keys, first_visible, group, m, l, correction,
                            [&](int r, int64_t j, float p) { st[j * lds + r] = p; });
}

void accumulate_rows_generic(float* acc, const float* correction, int n_rows, const float* pt, int64_t ldp,
                             const float* values, int64_t n_keys, int hd) {
  for (int i = 0; i < hd; ++i) {
    float* a = acc + int64_t{i} * n_rows;
    for (int r = 0; r < n_rows; ++r) a[r] *= correction[r];
    for (int64_t j = 0; j < n_keys; ++j)
      for (int r = 0; r < n_rows; ++r) a[r] += pt[j * ldp + r] * values[j * hd + i];
  }
}

// ---- the bf16 row-block twins (fast mode) ----

float bf16(uint16_t b) { return quant::bf16_to_f32(b); }

void pack_keys_generic(const float* keys, int64_t n, int hd, uint16_t* out) {
  for (int64_t i = 0; i < n * hd; ++i) out[i] = quant::f32_to_bf16(keys[i]);
}

// out[(j/2)*2*width + 2*i + j%2] = bf16(x[j*ld + i]) for i < width, j < n rounded up to even
// (zeros past n): rows j and j + 1 interleaved.
void pack_pairs(const float* x, int64_t ld, int64_t n, int width, uint16_t* out) {
  for (int64_t j = 0; j < (n + 1) / 2 * 2; ++j)
    for (int i = 0; i < width; ++i)
      out[(j / 2) * 2 * width + 2 * i + j % 2] = j < n ? quant::f32_to_bf16(x[j * ld + i]) : 0;
}

void pack_values_generic(const float* values, int64_t n, int hd, uint16_t* out) { pack_pairs(values, hd, n, hd, out); }

void scores_rows_bf16_generic(const uint16_t* qp, int n_rows, const uint16_t* keys, int64_t n_keys, int hd, float* st,
                              int64_t lds) {
  for (int64_t j = 0; j < n_keys; ++j)
    for (int r = 0; r < n_rows; ++r) {
      float s = 0.0f;
      for (int i = 0; i < hd; ++i) s += bf16(keys[j * hd + i]) * bf16(qp[(i / 2) * 2 * n_rows + 2 * r + i % 2]);
      st[j * lds + r] = s;
    }
}

void pack_probabilities_generic(const float* st, int64_t lds, int n_rows, int64_t n_keys, uint16_t* pp) {
  pack_pairs(st, lds, n_keys, n_rows, pp);
}

void pack_f16_generic(const uint16_t* k, const uint16_t* v, int64_t stride, int64_t n, int hd, uint16_t* kb,
                      uint16_t* vb) {
  for (int64_t j = 0; j < (n + 1) / 2 * 2; ++j)
    for (int i = 0; i < hd; ++i) {
      if (j < n) kb[j * hd + i] = quant::f32_to_bf16(quant::f16_to_f32(k[j * stride + i]));
      vb[(j / 2) * 2 * hd + 2 * i + j % 2] = j < n ? quant::f32_to_bf16(quant::f16_to_f32(v[j * stride + i])) : 0;
    }
}

// Element i of a q8_0 row, d * q as quant::dequantize_row makes it.
float q8_0_at(const uint8_t* row, int i) {
  const auto& block = reinterpret_cast<const quant::BlockQ8_0*>(row)[i / quant::QK8_0];
  return quant::f16_to_f32(block.d) * static_cast<float>(block.qs[i % quant::QK8_0]);
}

void pack_q8_generic(const uint8_t* k, const uint8_t* v, int64_t stride, int64_t n, int hd, uint16_t* kb,
                     uint16_t* vb) {
  for (int64_t j = 0; j < (n + 1) / 2 * 2; ++j)
    for (int i = 0; i < hd; ++i) {
      if (j < n) kb[j * hd + i] = quant::f32_to_bf16(q8_0_at(k + j * stride, i));
      vb[(j / 2) * 2 * hd + 2 * i + j % 2] = j < n ? quant::f32_to_bf16(q8_0_at(v + j * stride, i)) : 0;
    }
}

// softmax_rows_generic, each probability packed into pp (pack_pairs' layout; an odd n_keys' last
// pair completed with zeros).
void softmax_pack_generic(const float* st, int64_t lds, int n_rows, int64_t n_keys, int64_t first_visible, int group,
                          float* m, float* l, float* correction, uint16_t* pp) {
  auto at = [&](int r, int64_t j) -> uint16_t& { return pp[(j / 2) * 2 * n_rows + 2 * r + j % 2]; };
  softmax_rows_generic_with(st, lds, n_rows, n_keys, first_visible, group, m, l, correction,
                            [&](int r, int64_t j, float p) { at(r, j) = quant::f32_to_bf16(p); });
  if (n_keys % 2 != 0)
    for (int r = 0; r < n_rows; ++r) at(r, n_keys) = 0;
}

void accumulate_rows_bf16_generic(float* acc, const float* correction, int n_rows, const uint16_t* pp,
                                  const uint16_t* values, int64_t n_keys, int hd) {
  for (int i = 0; i < hd; ++i) {
    float* a = acc + int64_t{i} * n_rows;
    for (int r = 0; r < n_rows; ++r) a[r] *= correction[r];
    for (int64_t j = 0; j < n_keys; ++j) {
      const float v = bf16(values[(j / 2) * 2 * hd + 2 * i + j % 2]);
      for (int r = 0; r < n_rows; ++r) a[r] += bf16(pp[(j / 2) * 2 * n_rows + 2 * r + j % 2]) * v;
    }
  }
}

void load_row(const AttentionKernels& k, quant::Type type, const uint8_t* src, float* dst, int hd) {
  switch (type) {
    case quant::Type::F32: std::memcpy(dst, src, sizeof(float) * static_cast<size_t>(hd)); return;
    case quant::Type::F16: k.f16_to_f32(reinterpret_cast<const uint16_t*>(src), dst, hd); return;
    default: quant::dequantize_row(type, src, dst, hd);
  }
}

// Rows ahead that load_tiles prefetches.
constexpr int64_t kPrefetchRows = 8;

// The task's K and V rows of one page, head g, positions [start, start + len), as f32 tiles; or,
// with bf16 set, packed into its tiles (w.kb, w.vb): an f16 or q8_0 cache's rows straight from the
// cache (pack_f16, pack_q8); an f32 cache's (which fast mode leaves to the f32 kernels,
// attention_takes_bf16; the bf16 tests take it) a pair of rows at a time, the f32 tiles' first two
// rows serving as the pair's scratch.
void load_tiles(const AttentionKernels& kern, const AttentionBf16Kernels* bf16, const AttentionArgs& a, int32_t page,
                uint32_t g, int64_t len, const Workspace& w) {
  const backend::KvGeometry& kv = a.kv.geo;
  const int hd = static_cast<int>(kv.head_dim);
  const size_t rb = kv.row_bytes();
  const quant::Type et = backend::kv_element_type(kv.type);
  const uint8_t* kp = a.kv.k_page(page);
  const uint8_t* vp = a.kv.v_page(page);
  const size_t stride = kv.n_kv_heads * rb;  // one head's rows are a token apart (2 KiB at Qwen3-0.6B)
  if (bf16 && et == quant::Type::F16) {  // straight to the packed tiles
    bf16->pack_f16(reinterpret_cast<const uint16_t*>(kp + g * rb), reinterpret_cast<const uint16_t*>(vp + g * rb),
                   static_cast<int64_t>(stride / sizeof(uint16_t)), len, hd, w.kb, w.vb);
    return;
  }
  if (bf16 && et == quant::Type::Q8_0) {
    bf16->pack_q8(kp + g * rb, vp + g * rb, static_cast<int64_t>(stride), len, hd, w.kb, w.vb);
    return;
  }
  for (int64_t j = 0; j < len; ++j) {
    const size_t off = (static_cast<size_t>(j) * kv.n_kv_heads + g) * rb;
    // A stride of a few KiB crosses a 4 KiB page every row or two, where the hardware prefetchers
    // stop: without this every such row is a demand miss to L3 or memory (a third of a long
    // prefill's attention time went to these loads).
    if (j + kPrefetchRows < len)
      for (size_t b = 0; b < rb; b += 64) {
        __builtin_prefetch(kp + off + kPrefetchRows * stride + b);
        __builtin_prefetch(vp + off + kPrefetchRows * stride + b);
      }
    const int64_t row = bf16 ? j % 2 : j;
    load_row(kern, et, kp + off, w.k_tile + row * hd, hd);
    load_row(kern, et, vp + off, w.v_tile + row * hd, hd);
    if (bf16 && (row == 1 || j + 1 == len)) {
      bf16->pack_keys(w.k_tile, row + 1, hd, w.kb + (j - row) * hd);
      bf16->pack_values(w.v_tile, row + 1, hd, w.vb + (j - row) * hd);
    }
  }
}

// Asks for the task's K and V rows of a page into L2 while the kernels work on the page before.
void prefetch_tiles(const AttentionArgs& a, int32_t page, uint32_t g, int64_t len) {
  const backend::KvGeometry& kv = a.kv.geo;
  const size_t rb = kv.row_bytes();
  const uint8_t* kp = a.kv.k_page(page);
  const uint8_t* vp = a.kv.v_page(page);
  for (int64_t j = 0; j < len; ++j) {
    const size_t off = (static_cast<size_t>(j) * kv.n_kv_heads + g) * rb;
    for (size_t b = 0; b < rb; b += 64) {
      __builtin_prefetch(kp + off + b, 0, 2);
      __builtin_prefetch(vp + off + b, 0, 2);
    }
  }
}

// Keys a per-row task takes at a time from a cache read in place, for each of its KV heads in
// turn: a head's rows are a few hundred bytes of each token's 2 KiB or so (f16 at Qwen3-0.6B), so
// walking one head over a page reads memory in strides the prefetchers follow poorly, while a few
// tokens' rows for all the task's heads are read nearly in order. 16 tokens keep one head's keys
// and values in L1. (The SIMD kernels prefetch as many rows ahead: kCacheAheadRows in
// attention_simd.h; change the two together.)
constexpr int64_t kInPlaceKeys = 16;

// Whether a kernel table reads a cache's rows in place (f16 and q8_0 caches, where it has those
// kernels): a decode uses each row for only its GQA group's rows, and converting a tile first
// cost more than the products.
bool reads_in_place(const AttentionKernels& kern, backend::KvType type) {
  if (type == backend::KvType::f16) return kern.scores_f16 && kern.accumulate_f16;
  if (type == backend::KvType::q8_0) return kern.scores_q8 && kern.accumulate_q8;
  return false;
}

// The per-row kernels' online-softmax step for one KV head over keys [j0, j0 + n) of a page
// (rows of an f16 or q8_0 cache at k, v, `stride` bytes apart): each of the task's query tokens
// sees its causal share, its group's rows together (each cache row converted once for all).
void attend_in_place_step(const AttentionKernels& kern, const AttentionArgs& a, const uint8_t* k, const uint8_t* v,
                          int64_t stride, int64_t first_key, int64_t n, int64_t pos_of_first, uint32_t g, int64_t t0,
                          int64_t t1, float* m, float* l, float* acc, const Workspace& w) {
  const int hd = static_cast<int>(a.kv.geo.head_dim);
  const uint32_t group = a.n_head / a.kv.geo.n_kv_heads;
  const bool q8 = a.kv.geo.type == backend::KvType::q8_0;
  const int64_t halves = stride / static_cast<int64_t>(sizeof(uint16_t));
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t limit = std::min<int64_t>(n, pos_of_first + t - first_key + 1);  // causal
    if (limit <= 0) continue;
    const int64_t row0 = (t - t0) * group;
    const float* q0 = a.q + (t * a.n_head + g * group) * hd;
    float* c = w.correction;  // the rows' maxima, then their corrections
    if (q8)
      kern.scores_q8(q0, static_cast<int>(group), k, stride, limit, hd, a.scale, w.scores, c);
    else
      kern.scores_f16(q0, static_cast<int>(group), reinterpret_cast<const uint16_t*>(k), halves, limit, hd, a.scale,
                      w.scores, c);
    for (uint32_t hh = 0; hh < group; ++hh) {
      const int64_t row = row0 + hh;
      const float m_new = std::max(m[row], c[hh]);
      c[hh] = std::exp(m[row] - m_new);
      l[row] = l[row] * c[hh] + kern.exp_sum(w.scores + hh * limit, limit, m_new);
      m[row] = m_new;
    }
    if (q8)
      kern.accumulate_q8(acc + row0 * hd, c, static_cast<int>(group), w.scores, limit, v, stride, limit, hd);
    else
      kern.accumulate_f16(acc + row0 * hd, c, static_cast<int>(group), w.scores, limit,
                          reinterpret_cast<const uint16_t*>(v), halves, limit, hd);
  }
}

// The online-softmax state of a per-row task's query rows: for KV heads [g0, g1) and tokens
// [t0, t1), row (g - g0) * head_rows + (t - t0) * group + hh holds its running maximum m, sum l
// and unnormalised sums acc[row * head_dim ...].
struct RowStates {
  float* m;
  float* l;
  float* acc;
  void clear(int64_t rows, int hd) const {
    std::fill(m, m + rows, -std::numeric_limits<float>::infinity());
    std::fill(l, l + rows, 0.0f);
    std::fill(acc, acc + rows * hd, 0.0f);
  }
};

// One task, per-row kernels over a cache read in place (reads_in_place): KV heads [g0, g1), query tokens
// [t0, t1) of sequence `seq`, keys [key0, key1) (key0 a page's first), from empty states.
// kInPlaceKeys keys at a time, every head of the task over them before the next keys; a row's
// sums depend on neither the heads nor the threads.
void attend_in_place(const AttentionKernels& kern, const AttentionArgs& a, const backend::SeqSlice& seq, uint32_t g0,
                     uint32_t g1, int64_t t0, int64_t t1, int64_t key0, int64_t key1, RowStates st,
                     const Workspace& w) {
  const backend::KvGeometry& kv = a.kv.geo;
  const int hd = static_cast<int>(kv.head_dim);
  const int64_t head_rows = (t1 - t0) * (a.n_head / kv.n_kv_heads);  // one KV head's query rows
  const int64_t n_rows = head_rows * (g1 - g0);
  const int32_t* pages = a.page_table + int64_t{seq.slot} * a.max_pages_per_seq;
  const int64_t pos_of_first = seq.pos0 - seq.first;  // position of batch token t is pos_of_first + t
  st.clear(n_rows, hd);
  const int64_t head_bytes = static_cast<int64_t>(kv.row_bytes());
  const int64_t stride = kv.n_kv_heads * head_bytes;
  const int64_t end = std::min(key1, pos_of_first + t1);
  for (int64_t start = key0; start < end; start += kv.page_tokens) {
    const int32_t page = pages[start / kv.page_tokens];
    const int64_t len = std::min<int64_t>(kv.page_tokens, end - start);
    const uint8_t* k = a.kv.k_page(page);
    const uint8_t* v = a.kv.v_page(page);
    for (int64_t j0 = 0; j0 < len; j0 += kInPlaceKeys)
      for (uint32_t g = g0; g < g1; ++g) {
        const int64_t r = (g - g0) * head_rows;
        const int64_t off = j0 * stride + g * head_bytes;
        attend_in_place_step(kern, a, k + off, v + off, stride, start + j0, std::min(kInPlaceKeys, len - j0),
                             pos_of_first, g, t0, t1, st.m + r, st.l + r, st.acc + r * hd, w);
      }
  }
}

// The output rows of KV heads [g0, g1), tokens [t0, t1) from their states over all their keys.
void write_rows(const AttentionArgs& a, uint32_t g0, uint32_t g1, int64_t t0, int64_t t1, RowStates st) {
  const int hd = static_cast<int>(a.kv.geo.head_dim);
  const uint32_t group = a.n_head / a.kv.geo.n_kv_heads;
  for (uint32_t g = g0; g < g1; ++g)
    for (int64_t t = t0; t < t1; ++t)
      for (uint32_t hh = 0; hh < group; ++hh) {
        const int64_t row = ((g - g0) * (t1 - t0) + (t - t0)) * group + hh;
        const float inv = 1.0f / st.l[row];
        float* out = a.out + (t * a.n_head + g * group + hh) * hd;
        for (int i = 0; i < hd; ++i) out[i] = st.acc[row * hd + i] * inv;
      }
}

// Decode parts. A per-row block's keys are cut into at most kDecodeMaxParts parts of whole
// pages, at positions that depend only on how many keys its last token sees; one task takes a
// part for all KV heads (or several heads, where there are fewer parts than threads), reading
// (from a cache read in place) each token's K and V rows nearly whole and in order: two threads reading
// the two halves of each row, or each its own heads, read memory at about half the rate of two
// reading their own runs of rows (Zen 5 VM). The parts' states are then summed in part order:
// a row's result depends on neither the threads nor the other sequences of the call.
constexpr int64_t kDecodeMaxParts = 16;

struct DecodeBlock {
  const backend::SeqSlice* seq;
  int64_t t0, t1;
  int64_t part_keys, n_parts;
  size_t slot;  // floats before its first part's states in the parts area
};

// The states of part p of block b: rows x head_dim sums, then rows maxima, then rows sums.
RowStates part_states(const AttentionArgs& a, float* parts, const DecodeBlock& b, int64_t p) {
  const size_t rows = static_cast<size_t>((b.t1 - b.t0) * a.n_head), hd = a.kv.geo.head_dim;
  float* base = parts + b.slot + static_cast<size_t>(p) * rows * (hd + 2);
  return {base + rows * hd, base + rows * hd + rows, base};
}

// Calls f(block) for each sequence whose last query block takes the per-row kernels, in order,
// and returns the floats their parts' states take.
template <class F>
size_t for_decode_blocks(const AttentionArgs& a, int64_t block_tokens, AttentionPath path, F f) {
  const bool all_per_row = path == AttentionPath::per_row;
  if (path == AttentionPath::row_blocks) return 0;
  const backend::KvGeometry& kv = a.kv.geo;
  const int64_t group = a.n_head / kv.n_kv_heads;
  size_t slot = 0;
  for (int32_t s = 0; s < a.n_seqs; ++s) {
    const backend::SeqSlice& seq = a.seqs[s];
    const int64_t n_blocks = (seq.n_tokens + block_tokens - 1) / block_tokens;
    for (int64_t blk = all_per_row ? 0 : n_blocks - 1; blk < n_blocks; ++blk) {
      DecodeBlock b{&seq, seq.first + blk * block_tokens, 0, 0, 0, slot};
      b.t1 = std::min(seq.first + seq.n_tokens, b.t0 + block_tokens);
      if (!all_per_row && (b.t1 - b.t0) * group >= kAttentionMinBlockRows) continue;
      const int64_t keys = seq.pos0 - seq.first + b.t1;  // seen by the block's last token
      const int64_t pages = (keys + kv.page_tokens - 1) / kv.page_tokens;
      b.part_keys = (pages + kDecodeMaxParts - 1) / kDecodeMaxParts * kv.page_tokens;
      b.n_parts = (keys + b.part_keys - 1) / b.part_keys;
      slot += static_cast<size_t>(b.n_parts * (b.t1 - b.t0) * a.n_head) * (kv.head_dim + 2);
      f(b);
    }
  }
  return slot;
}

// Each row of block b, KV head g: its parts' states summed in part order, out normalised.
void sum_parts(const AttentionArgs& a, float* parts, const DecodeBlock& b, uint32_t g) {
  const int hd = static_cast<int>(a.kv.geo.head_dim);
  const uint32_t group = a.n_head / a.kv.geo.n_kv_heads;
  const int64_t head_rows = (b.t1 - b.t0) * group;
  for (int64_t r = g * head_rows; r < (g + 1) * head_rows; ++r) {
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t p = 0; p < b.n_parts; ++p) mx = std::max(mx, part_states(a, parts, b, p).m[r]);
    const int64_t t = b.t0 + (r / group) % (b.t1 - b.t0);
    float* out = a.out + (t * a.n_head + g * group + r % group) * hd;
    std::fill(out, out + hd, 0.0f);
    float l = 0.0f;
    for (int64_t p = 0; p < b.n_parts; ++p) {
      const RowStates st = part_states(a, parts, b, p);
      if (st.m[r] == -std::numeric_limits<float>::infinity()) continue;  // keys after the row's token
      const float e = std::exp(st.m[r] - mx);
      l += st.l[r] * e;
      for (int i = 0; i < hd; ++i) out[i] += st.acc[r * hd + i] * e;
    }
    const float inv = 1.0f / l;
    for (int i = 0; i < hd; ++i) out[i] *= inv;
  }
}

// One task, per-row kernels, the cache's rows converted a page at a time first (an f32 cache, or
// one the kernel table cannot read in place): KV heads [g0, g1) one after the
// other, query tokens [t0, t1) of sequence `seq`, keys [key0, key1) (key0 a page's first), from
// empty states (RowStates' rows).
void attend_per_row(const AttentionKernels& kern, const AttentionArgs& a, const backend::SeqSlice& seq, uint32_t g0,
                    uint32_t g1, int64_t t0, int64_t t1, int64_t key0, int64_t key1, RowStates st,
                    const Workspace& w) {
  const backend::KvGeometry& kv = a.kv.geo;
  const int hd = static_cast<int>(kv.head_dim);
  const uint32_t group = a.n_head / kv.n_kv_heads;
  const int64_t head_rows = (t1 - t0) * group;
  const int64_t n_rows = head_rows * (g1 - g0);
  const int32_t* pages = a.page_table + int64_t{seq.slot} * a.max_pages_per_seq;
  const int64_t pos_of_first = seq.pos0 - seq.first;  // position of batch token t is pos_of_first + t
  st.clear(n_rows, hd);
  const int64_t end = std::min(key1, pos_of_first + t1);
  for (uint32_t g = g0; g < g1; ++g)
    for (int64_t start = key0; start < end; start += kv.page_tokens) {
      const int64_t len = std::min<int64_t>(kv.page_tokens, end - start);
      load_tiles(kern, nullptr, a, pages[start / kv.page_tokens], g, len, w);
      if (start + kv.page_tokens < end)
        prefetch_tiles(a, pages[start / kv.page_tokens + 1], g,
                       std::min<int64_t>(kv.page_tokens, end - start - kv.page_tokens));
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t limit = std::min<int64_t>(len, pos_of_first + t - start + 1);  // causal
        if (limit <= 0) continue;
        const int64_t row0 = (g - g0) * head_rows + (t - t0) * group;
        const float* q0 = a.q + (t * a.n_head + g * group) * hd;
        for (uint32_t hh = 0; hh < group; ++hh) {
          const int64_t row = row0 + hh;
          const float mx = kern.scores(q0 + hh * hd, w.k_tile, limit, hd, a.scale, w.scores);
          const float m_new = std::max(st.m[row], mx);
          const float correction = std::exp(st.m[row] - m_new);
          const float sum = kern.exp_sum(w.scores, limit, m_new);
          kern.accumulate(st.acc + row * hd, correction, w.scores, w.v_tile, limit, hd);
          st.l[row] = st.l[row] * correction + sum;
          st.m[row] = m_new;
        }
      }
    }
}

// One sub-block of a row-block task: query tokens [t0, t1), its rows (row (t - t0) * group + hh is
// token t, head g * group + hh) padded to `padded`, and its own part of the workspace's per-row
// arrays (paired queries, sums, online-softmax state). qt, the queries transposed, is one
// sub-block's, shared: the bf16 kernels read each sub-block's qp, and the f32 kernels, which read
// qt, take a task as a single sub-block.
struct SubBlock {
  int64_t t0, t1, n_rows, padded;
  float *qt, *acc, *m, *l, *correction;
  uint16_t* qp;
};

// The queries of a sub-block transposed and scaled into qt (and paired into qp for the bf16
// kernels), its state reset.
void start_sub_block(const AttentionArgs& a, const AttentionBf16Kernels* bf16, uint32_t g, const SubBlock& b) {
  const int hd = static_cast<int>(a.kv.geo.head_dim);
  const uint32_t group = a.n_head / a.kv.geo.n_kv_heads;
  auto query = [&](int64_t row) {
    const int64_t t = b.t0 + row / group;
    return a.q + (t * a.n_head + g * group + row % group) * hd;
  };
  // Transposed in squares of kTransposeSide: a square's stores fill whole lines of qt while
  // they are in L1 (a row at a time, each store went to its own line of a tile larger than L1,
  // 3% of a 4096-token prefill's time). A token's queries are n_head * hd floats from the next's
  // (8 KiB at Qwen3-0.6B), too far for the hardware prefetchers: the next square's rows are
  // prefetched.
  constexpr int64_t kTransposeSide = 16;
  for (int64_t r0 = 0; r0 < b.n_rows; r0 += kTransposeSide) {
    const int64_t r1 = std::min(b.n_rows, r0 + kTransposeSide);
    for (int64_t row = r1; row < std::min(b.n_rows, r1 + kTransposeSide); ++row)
      for (int i = 0; i < hd; i += 16) __builtin_prefetch(query(row) + i);
    for (int i0 = 0; i0 < hd; i0 += kTransposeSide)
      for (int64_t row = r0; row < r1; ++row) {
        const float* q = query(row);
        for (int i = i0; i < std::min<int>(hd, i0 + kTransposeSide); ++i) b.qt[i * b.padded + row] = q[i] * a.scale;
      }
  }
  for (int i = 0; i < hd; ++i) std::fill(b.qt + i * b.padded + b.n_rows, b.qt + (i + 1) * b.padded, 0.0f);
  if (bf16)  // the same pairs, over dims
    bf16->pack_probabilities(b.qt, b.padded, static_cast<int>(b.padded), hd, b.qp);
  std::fill(b.m, b.m + b.padded, -std::numeric_limits<float>::infinity());
  std::fill(b.l, b.l + b.padded, 0.0f);
  std::fill(b.acc, b.acc + b.padded * hd, 0.0f);
}

// One task, row-block kernels: query tokens [t0, t1) of KV head g, in sub-blocks (sub_block())
// that each take every K/V tile of the pages they see, the tiles loaded (and packed) once for all
// of them. Padding rows have zero queries and the last real row's causal limit or more, so their
// state stays finite; they are never written out. With bf16 set, its kernels take the products
// and the softmax (the tiles packed as they load).
void attend_row_blocks(const AttentionKernels& kern, const AttentionBf16Kernels* bf16, const AttentionArgs& a,
                       const backend::SeqSlice& seq, uint32_t g, int64_t t0, int64_t t1, const Workspace& w) {
  const backend::KvGeometry& kv = a.kv.geo;
  const int hd = static_cast<int>(kv.head_dim);
  const uint32_t group = a.n_head / kv.n_kv_heads;
  const int32_t* pages = a.page_table + int64_t{seq.slot} * a.max_pages_per_seq;
  const int64_t pos_of_first = seq.pos0 - seq.first;
  const int64_t sub_tokens = sub_block(kv, bf16 != nullptr);
  const int64_t sub_padded = static_cast<int64_t>(padded_sub_rows(kv, a.n_head, bf16 != nullptr));
  constexpr int kMaxSubBlocks = 2;  // sub_block() is at least half a query block
  SubBlock subs[kMaxSubBlocks];
  int n_subs = 0;
  for (int64_t s0 = t0; s0 < t1; s0 += sub_tokens, ++n_subs) {
    SubBlock& b = subs[n_subs];
    b.t0 = s0;
    b.t1 = std::min(t1, s0 + sub_tokens);
    b.n_rows = (b.t1 - b.t0) * group;
    b.padded = static_cast<int64_t>(round_to_pad(static_cast<size_t>(b.n_rows)));
    const int64_t rows_before = n_subs * sub_padded;
    b.qt = w.qt;
    b.acc = w.acc + rows_before * hd;
    b.qp = w.qp + rows_before * hd;
    b.m = w.m + rows_before;
    b.l = w.l + rows_before;
    b.correction = w.correction + rows_before;
    start_sub_block(a, bf16, g, b);
  }

  const int64_t last_pos = pos_of_first + t1 - 1;
  const int64_t n_pages = last_pos / kv.page_tokens + 1;
  for (int64_t page = 0; page < n_pages; ++page) {
    const int64_t start = page * kv.page_tokens;
    const int64_t len = std::min<int64_t>(kv.page_tokens, last_pos + 1 - start);
    load_tiles(kern, bf16, a, pages[page], g, len, w);
    // The bf16 kernels' pages pass quickly and pack_f16 fetches its rows ahead: the whole next
    // page asked for here cost more in prefetch instructions than it saved (Sapphire Rapids VM,
    // Qwen3-0.6B-shaped Q8_0 pp4096, two rounds: 432 / 428 tok/s with it, 434 / 436 without).
    if (!bf16 && page + 1 < n_pages)
      prefetch_tiles(a, pages[page + 1], g, std::min<int64_t>(kv.page_tokens, last_pos - start - kv.page_tokens + 1));
    for (int s = 0; s < n_subs; ++s) {
      const SubBlock& b = subs[s];
      const int64_t seen = std::min<int64_t>(len, pos_of_first + b.t1 - start);  // keys its last row sees
      if (seen <= 0) continue;  // none of the page (never its first: every row sees key 0)
      const int64_t first_visible = pos_of_first + b.t0 - start + 1;
      const int n = static_cast<int>(b.padded);
      if (bf16) {
        bf16->scores_rows(b.qp, n, w.kb, seen, hd, w.st, b.padded);
        bf16->softmax_pack(w.st, b.padded, n, seen, first_visible, static_cast<int>(group), b.m, b.l, b.correction,
                           w.pp);
        bf16->accumulate_rows(b.acc, b.correction, n, w.pp, w.vb, seen, hd);
      } else {
        kern.scores_rows(b.qt, b.padded, n, w.k_tile, seen, hd, w.st, b.padded);
        kern.softmax_rows(w.st, b.padded, n, seen, first_visible, static_cast<int>(group), b.m, b.l, b.correction);
        kern.accumulate_rows(b.acc, b.correction, n, w.st, b.padded, w.v_tile, seen, hd);
      }
    }
  }
  for (int s = 0; s < n_subs; ++s) {
    const SubBlock& b = subs[s];
    for (int64_t row = 0; row < b.n_rows; ++row) b.correction[row] = 1.0f / b.l[row];  // done with the corrections
    for (int64_t row = 0; row < b.n_rows; ++row) {  // the sums come transposed: [hd][padded]
      const int64_t t = b.t0 + row / group;
      float* out = a.out + (t * a.n_head + g * group + row % group) * hd;
      for (int i = 0; i < hd; ++i) out[i] = b.acc[i * b.padded + row] * b.correction[row];
    }
  }
}

}  // namespace

size_t attention_workspace_bytes(const backend::KvGeometry& kv, uint32_t n_head, int n_threads, bool bf16,
                                 int32_t n_seqs, int64_t max_tokens) {
  // The decode parts: each sequence's per-row block (its last, of fewer than
  // kAttentionMinBlockRows rows per KV head), kDecodeMaxParts states of each of its rows.
  const int64_t group = n_head / kv.n_kv_heads;
  const int64_t decode_tokens = std::min<int64_t>(int64_t{n_seqs} * ((kAttentionMinBlockRows - 1) / group), max_tokens);
  const size_t parts = static_cast<size_t>(decode_tokens * n_head * kDecodeMaxParts) * (kv.head_dim + 2);
  return sizeof(float) * (per_thread_floats(kv, n_head, bf16) * static_cast<size_t>(n_threads) + parts);
}

bool attention_takes_bf16(const backend::KvGeometry& kv, bool fast) {
  // An f32 cache asks for f32 keys and values: only a rounded one (f16, q8_0) takes bf16 products.
  return fast && kv.type != backend::KvType::f32 && attention_bf16_kernels_for(static_cast<int>(kv.head_dim)) != nullptr;
}

const AttentionKernels& attention_kernels_generic() {
  static const AttentionKernels k{scores_generic,        exp_sum_generic,        accumulate_generic,
                                  f16_to_f32_generic,    scores_f16_generic,     accumulate_f16_generic,
                                  scores_q8_generic,     accumulate_q8_generic,
                                  f32_to_f16_generic,    quant::quantize_row_q8_0, scores_rows_generic,    softmax_rows_generic,
                                  accumulate_rows_generic};
  return k;
}

const AttentionBf16Kernels& attention_bf16_kernels_generic() {
  static const AttentionBf16Kernels k{pack_keys_generic,          pack_values_generic,  scores_rows_bf16_generic,
                                      pack_probabilities_generic, pack_f16_generic,     pack_q8_generic,
                                      softmax_pack_generic,       accumulate_rows_bf16_generic};
  return k;
}

const AttentionBf16Kernels* attention_bf16_kernels_for(int head_dim) {
#if defined(__x86_64__)
  // attention_avx512bf16.cpp is compiled for AVX-512 F/BW/VL/BF16; KEEL_CPU_ISA=avx2 turns it off.
  static const bool bf16 = isa_supported(Isa::avx512) && [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bf16");
  }();
  if (bf16 && head_dim % 32 == 0 && head_dim <= kAmxMaxHeadDim && amx_bf16_usable()) return &attention_bf16_kernels_amx();
  if (bf16 && head_dim % 16 == 0) return &attention_bf16_kernels_avx512bf16();
#endif
  (void)head_dim;
  return nullptr;
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
  const int hd = static_cast<int>(a.kv.geo.head_dim);
  flash_attention_with(attention_kernels_for(hd), a, workspace, pool, AttentionPath::automatic,
                       attention_takes_bf16(a.kv.geo, a.fast) ? attention_bf16_kernels_for(hd) : nullptr);
}

void flash_attention_with(const AttentionKernels& kern, const AttentionArgs& a, float* workspace, ThreadPool& pool,
                          AttentionPath path, const AttentionBf16Kernels* bf16) {
  const backend::KvGeometry& kv = a.kv.geo;
  const int64_t block_tokens = query_block(kv, bf16 != nullptr);
  const int64_t group = a.n_head / kv.n_kv_heads;
  auto takes_blocks = [&](int64_t tokens) {
    return path == AttentionPath::row_blocks ||
           (path == AttentionPath::automatic && tokens * group >= kAttentionMinBlockRows);
  };
  int64_t n_blocks = 0, max_block = 0;
  for (int32_t s = 0; s < a.n_seqs; ++s) {
    n_blocks += (a.seqs[s].n_tokens + block_tokens - 1) / block_tokens;
    max_block = std::max(max_block, std::min(a.seqs[s].n_tokens, block_tokens));
  }
  const size_t stride = per_thread_floats(kv, a.n_head, bf16 != nullptr);
  const size_t threads_floats = stride * static_cast<size_t>(pool.size());

  // Decode rows: a cache's rows are read in place where the table can (reads_in_place), others
  // converted a page and a head at a time; in decode parts where the workspace has room for them
  // (the plan's always has), else a task per KV heads over all the keys.
  const bool in_place = reads_in_place(kern, kv.type);
  auto attend_rows = [&](const backend::SeqSlice& seq, uint32_t g0, uint32_t g1, int64_t t0, int64_t t1, int64_t key0,
                         int64_t key1, RowStates st, const Workspace& w) {
    if (in_place)
      attend_in_place(kern, a, seq, g0, g1, t0, t1, key0, key1, st, w);
    else
      attend_per_row(kern, a, seq, g0, g1, t0, t1, key0, key1, st, w);
  };
  int64_t n_units = 0;  // (per-row block, part) pairs
  const size_t parts_floats =
      for_decode_blocks(a, block_tokens, path, [&](const DecodeBlock& b) { n_units += b.n_parts; });
  const bool parts = n_units > 0 && threads_floats + parts_floats <= a.workspace_floats;
  float* parts_area = workspace + threads_floats;
  // KV heads per task: as many as keep the threads busy (the more of each token's row one thread
  // reads, the nearer in order its reads); row-block tasks take one.
  auto heads_per_task = [&](int64_t units, size_t rows) {
    for (uint32_t h = kv.n_kv_heads; h > 1; --h)
      if (kv.n_kv_heads % h == 0 && units * (kv.n_kv_heads / h) >= pool.size() &&
          h * rows <= padded_rows(kv, a.n_head, bf16 != nullptr))
        return h;
    return 1u;
  };
  const uint32_t block_heads =
      !parts && !takes_blocks(max_block) ? heads_per_task(n_blocks, static_cast<size_t>(max_block * group)) : 1;
  const uint32_t part_heads = parts ? heads_per_task(n_units, 0) : 1;
  const int64_t block_head_tasks = kv.n_kv_heads / block_heads, part_head_tasks = kv.n_kv_heads / part_heads;
  const int64_t n_block_tasks = n_blocks * block_head_tasks;
  const int64_t n_tasks = n_block_tasks + (parts ? n_units * part_head_tasks : 0);

  // Tasks: (sequence, query block, KV heads), then (per-row block, part, KV heads). Later query
  // blocks see more KV: blocks are dealt round-robin from the last block of the last sequence
  // for balance.
  pool.run([&](int ith, int nth) {
    Workspace w = carve(workspace + stride * static_cast<size_t>(ith), kv, a.n_head, bf16 != nullptr);
    int32_t s = a.n_seqs - 1;
    int64_t blocks_after = 0;  // blocks of sequences after s
    for (int64_t task = ith; task < n_tasks; task += nth) {
      if (task >= n_block_tasks) {  // a decode part
        const int64_t unit = (task - n_block_tasks) / part_head_tasks;
        const uint32_t g0 = static_cast<uint32_t>((task - n_block_tasks) % part_head_tasks) * part_heads;
        int64_t before = 0;
        for_decode_blocks(a, block_tokens, path, [&](const DecodeBlock& b) {
          const int64_t p = unit - before;
          before += b.n_parts;
          if (p < 0 || p >= b.n_parts) return;
          RowStates st = part_states(a, parts_area, b, p);
          const int64_t rows = g0 * (b.t1 - b.t0) * group;
          st = {st.m + rows, st.l + rows, st.acc + rows * static_cast<int64_t>(kv.head_dim)};
          attend_rows(*b.seq, g0, g0 + part_heads, b.t0, b.t1, p * b.part_keys, (p + 1) * b.part_keys, st, w);
        });
        continue;
      }
      const int64_t from_end = task / block_head_tasks;  // 0 = the last block of the batch
      const uint32_t g0 = static_cast<uint32_t>(task % block_head_tasks) * block_heads;
      const uint32_t g1 = g0 + block_heads;
      int64_t seq_blocks = (a.seqs[s].n_tokens + block_tokens - 1) / block_tokens;
      while (from_end >= blocks_after + seq_blocks) {
        blocks_after += seq_blocks;
        --s;
        seq_blocks = (a.seqs[s].n_tokens + block_tokens - 1) / block_tokens;
      }
      const backend::SeqSlice& seq = a.seqs[s];
      const int64_t block = seq_blocks - 1 - (from_end - blocks_after);
      const int64_t t0 = seq.first + block * block_tokens;
      const int64_t t1 = std::min(seq.first + seq.n_tokens, t0 + block_tokens);
      if (takes_blocks(t1 - t0)) {
        for (uint32_t g = g0; g < g1; ++g) attend_row_blocks(kern, bf16, a, seq, g, t0, t1, w);
      } else if (parts) {
        continue;  // its parts are tasks of their own
      } else {
        const RowStates st{w.m, w.l, w.acc};
        attend_rows(seq, g0, g1, t0, t1, 0, seq.pos0 - seq.first + t1, st, w);
        write_rows(a, g0, g1, t0, t1, st);
      }
    }
  });
  if (!parts) return;
  int64_t n_decode_blocks = 0;
  for_decode_blocks(a, block_tokens, path, [&](const DecodeBlock&) { ++n_decode_blocks; });
  pool.run([&](int ith, int nth) {
    for (int64_t task = ith; task < n_decode_blocks * kv.n_kv_heads; task += nth) {
      int64_t index = 0;
      for_decode_blocks(a, block_tokens, path, [&](const DecodeBlock& b) {
        if (index++ == task / kv.n_kv_heads) sum_parts(a, parts_area, b, static_cast<uint32_t>(task % kv.n_kv_heads));
      });
    }
  });
}

}  // namespace keel::cpu
