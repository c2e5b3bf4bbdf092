// The SIMD attention kernels (attention_kernels.h) of attention_avx2.cpp, attention_avx512.cpp,
// attention_avx512bf16.cpp and attention_neon.cpp, written once over a
// vector-traits type V (F32x8 in simd_avx2.h, F32x16 in simd_avx512.h, Bf16x32 in
// attention_avx512bf16.cpp, F32x4 in simd_neon.h). Include it only in those files: its code takes
// each file's ISA flags, and the anonymous namespace keeps each file's copies its own.
//
// V gives f32 vectors of V::kLanes sums (Vec: zero, load, store, splat, mul) and operand vectors
// (Operands, stored as Element) whose lanes hold V::kPack consecutive operands along the summed
// index: dot(acc, a, b) adds a lane's kPack products to acc (an f32 FMA: kPack 1; vdpbf16ps: 2).
// Operand matrices x[j][c] (j the summed index) are packed to match, with a leading dimension ld:
// x[j][c] at x[(j - j % kPack) * ld + kPack * c + j % kPack]. kPack 1 is plain row-major; kPack 2
// the pairs of attention_kernels.h.
//
// The f32 kernels (kPack 1, Operands = Vec) also take add, sub, max, reduce_add (the sum of the
// lanes), exp_nonpositive (exp(x) for x <= 0) and lane masks: Ints (load_ints, aligned), Mask
// (greater(ints, b): lanes where ints > b), max_where (max(a, b) in the mask's lanes, a elsewhere)
// and zero_unless (a in the mask's lanes, 0 elsewhere).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace keel::cpu {
namespace {

// ---- row blocks (prefill): query rows along the lanes ----

// kKeys keys x kLanes*kVecs rows of scores: st[k*lds + r] = sum_i keys[k*hd + i] * q[i][r], with q
// packed in qt (leading dimension ldq). Each query vector loaded feeds kKeys dot steps, each key
// broadcast kVecs.
template <class V, int kKeys, int kVecs>
inline void scores_tile(const typename V::Element* qt, int64_t ldq, const typename V::Element* keys, int hd, float* st,
                        int64_t lds) {
  typename V::Vec acc[kKeys][kVecs];
#pragma GCC unroll 16
  for (int k = 0; k < kKeys; ++k)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) acc[k][v] = V::zero();
  for (int i = 0; i < hd; i += V::kPack) {
    typename V::Operands q[kVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) q[v] = V::load_operands(qt + i * ldq + V::kPack * V::kLanes * v);
#pragma GCC unroll 16
    for (int k = 0; k < kKeys; ++k) {
      const typename V::Operands kb = V::broadcast(keys + (k * hd + i));
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) acc[k][v] = V::dot(acc[k][v], kb, q[v]);
    }
  }
#pragma GCC unroll 16
  for (int k = 0; k < kKeys; ++k)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) V::store(st + k * lds + V::kLanes * v, acc[k][v]);
}

// kLanes*kVecs rows against every key: kKeys keys a tile (its accumulators fill the registers),
// then 4, then 1.
template <class V, int kKeys, int kVecs>
void scores_strip(const typename V::Element* qt, int64_t ldq, const typename V::Element* keys, int64_t n_keys, int hd,
                  float* st, int64_t lds) {
  int64_t j = 0;
  for (; j + kKeys <= n_keys; j += kKeys) scores_tile<V, kKeys, kVecs>(qt, ldq, keys + j * hd, hd, st + j * lds, lds);
  for (; j + 4 <= n_keys; j += 4) scores_tile<V, 4, kVecs>(qt, ldq, keys + j * hd, hd, st + j * lds, lds);
  for (; j < n_keys; ++j) scores_tile<V, 1, kVecs>(qt, ldq, keys + j * hd, hd, st + j * lds, lds);
}

// softmax_rows of attention_kernels.h, kLanes rows at a time (kPack 1), the probabilities handed
// on in pairs of keys: put(r0, j, p_j, p_j+1) for even j (p_j+1 zero past n_keys). A lane's row
// sees no fewer keys than the lane before, so keys below the first lane's limit are seen by every
// lane and keys from the last lane's limit on by none: only the keys between take the masks (a
// long prefill's pages but the last are seen whole; the unmasked max and exponentials are the
// masked ones' bits, and an unseen key's probability is the same +0).
template <class V, class Put>
void softmax_rows_with(const float* st, int64_t lds, int n_rows, int64_t n_keys, int64_t first_visible, int group,
                       float* m, float* l, float* correction, Put put) {
  for (int r0 = 0; r0 < n_rows; r0 += V::kLanes) {
    alignas(64) int32_t visible[V::kLanes];  // keys j < visible[lane] are seen by row r0 + lane
    for (int i = 0; i < V::kLanes; ++i)
      visible[i] = static_cast<int32_t>(std::clamp<int64_t>(first_visible + (r0 + i) / group, 0, n_keys));
    const int64_t seen_by_all = visible[0], seen_by_any = visible[V::kLanes - 1];
    const typename V::Ints vis = V::load_ints(visible);
    typename V::Vec mx = V::splat(-INFINITY);
    int64_t j = 0;
    for (; j < seen_by_all; ++j) mx = V::max(mx, V::load(st + j * lds + r0));
    for (; j < seen_by_any; ++j)
      mx = V::max_where(V::greater(vis, static_cast<int32_t>(j)), mx, V::load(st + j * lds + r0));
    const typename V::Vec m_old = V::load(m + r0);
    const typename V::Vec m_new = V::max(m_old, mx);
    const typename V::Vec c = V::exp_nonpositive(V::sub(m_old, m_new));
    auto exp_of = [&](int64_t k) { return V::exp_nonpositive(V::sub(V::load(st + k * lds + r0), m_new)); };
    auto probability = [&](int64_t k) {
      if (k < seen_by_all) return exp_of(k);
      if (k >= seen_by_any) return V::zero();
      return V::zero_unless(V::greater(vis, static_cast<int32_t>(k)), exp_of(k));
    };
    typename V::Vec sum = V::zero();
    for (j = 0; j + 2 <= seen_by_all; j += 2) {  // pairs every lane sees
      const typename V::Vec p0 = exp_of(j), p1 = exp_of(j + 1);
      sum = V::add(sum, p0);
      sum = V::add(sum, p1);
      put(r0, j, p0, p1);
    }
    for (; j < n_keys; j += 2) {
      const typename V::Vec p0 = probability(j);
      sum = V::add(sum, p0);
      typename V::Vec p1 = V::zero();
      if (j + 1 < n_keys) {
        p1 = probability(j + 1);
        sum = V::add(sum, p1);
      }
      put(r0, j, p0, p1);
    }
    V::store(l + r0, V::dot(sum, V::load(l + r0), c));
    V::store(m + r0, m_new);
    V::store(correction + r0, c);
  }
}

// softmax_rows itself: the probabilities in place.
template <class V>
void softmax_rows_simd(float* st, int64_t lds, int n_rows, int64_t n_keys, int64_t first_visible, int group, float* m,
                       float* l, float* correction) {
  softmax_rows_with<V>(st, lds, n_rows, n_keys, first_visible, group, m, l, correction,
                       [&](int r0, int64_t j, typename V::Vec p0, typename V::Vec p1) {
                         V::store(st + j * lds + r0, p0);
                         if (j + 1 < n_keys) V::store(st + (j + 1) * lds + r0, p1);
                       });
}

// kDims dims x kLanes*kVecs rows of the sums, kept transposed (rows along the lanes, as the
// probabilities come): acc[k*lda + r] = acc[k*lda + r] * correction[r] + sum_j p[j][r] * v[j][k]
// over n_steps steps of kPack keys, with p packed in pt (leading dimension ldp) and v in values
// (leading dimension hd). scores_tile's shape: each probability vector loaded feeds kDims dot
// steps, each value broadcast kVecs. (With rows along the broadcasts instead, each value vector
// fed 4 rows: this tile took 33% more time than scores_tile on the same products; see
// accumulate_rows in attention_kernels.h.)
template <class V, int kDims, int kVecs>
inline void accumulate_tile(float* acc, int64_t lda, const float* correction, const typename V::Element* pt,
                            int64_t ldp, const typename V::Element* values, int hd, int64_t n_steps) {
  typename V::Vec a[kDims][kVecs];
  typename V::Vec c[kVecs];
#pragma GCC unroll 4
  for (int v = 0; v < kVecs; ++v) c[v] = V::load(correction + V::kLanes * v);
#pragma GCC unroll 16
  for (int k = 0; k < kDims; ++k)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) a[k][v] = V::mul(V::load(acc + k * lda + V::kLanes * v), c[v]);
  for (int64_t j = 0; j < n_steps; ++j) {
    typename V::Operands p[kVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) p[v] = V::load_operands(pt + j * V::kPack * ldp + V::kPack * V::kLanes * v);
#pragma GCC unroll 16
    for (int k = 0; k < kDims; ++k) {
      const typename V::Operands x = V::broadcast(values + (j * V::kPack * hd + V::kPack * k));
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) a[k][v] = V::dot(a[k][v], x, p[v]);
    }
  }
#pragma GCC unroll 16
  for (int k = 0; k < kDims; ++k)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) V::store(acc + k * lda + V::kLanes * v, a[k][v]);
}

// kLanes*kVecs rows of accumulate_rows: kDims dims a tile, then 4, then 2 (hd is a multiple of 4:
// the tables with row blocks are taken only for such head sizes; kDims is even, so no dim is left).
template <class V, int kDims, int kVecs>
void accumulate_strip(float* acc, int64_t lda, const float* correction, const typename V::Element* pt, int64_t ldp,
                      const typename V::Element* values, int64_t n_steps, int hd) {
  static_assert(kDims % 2 == 0, "even tiles leave no single dim of an even head size");
  int i = 0;
  for (; i + kDims <= hd; i += kDims)
    accumulate_tile<V, kDims, kVecs>(acc + i * lda, lda, correction, pt, ldp, values + V::kPack * i, hd, n_steps);
  for (; i + 4 <= hd; i += 4)
    accumulate_tile<V, 4, kVecs>(acc + i * lda, lda, correction, pt, ldp, values + V::kPack * i, hd, n_steps);
  for (; i + 2 <= hd; i += 2)
    accumulate_tile<V, 2, kVecs>(acc + i * lda, lda, correction, pt, ldp, values + V::kPack * i, hd, n_steps);
}

// accumulate_rows of attention_kernels.h with operands packed (p in pt, leading dimension ldp; v in
// values, leading dimension hd; the sums transposed, leading dimension n_rows): strips of
// kLanes*kVecs rows, then of kLanes*kVecs/2 and kLanes (n_rows is a multiple of kAttentionRowPad,
// itself a multiple of kLanes).
template <class V, int kDims, int kVecs>
void accumulate_row_tiles(float* acc, const float* correction, int n_rows, const typename V::Element* pt, int64_t ldp,
                          const typename V::Element* values, int64_t n_keys, int hd) {
  const int64_t n_steps = (n_keys + V::kPack - 1) / V::kPack;
  auto strip = [&](auto tile, int r) {  // tile: accumulate_strip<V, ...> for the rows from r
    tile(acc + r, n_rows, correction + r, pt + V::kPack * r, ldp, values, n_steps, hd);
  };
  int r = 0;
  for (; r + V::kLanes * kVecs <= n_rows; r += V::kLanes * kVecs) strip(accumulate_strip<V, kDims, kVecs>, r);
  if constexpr (kVecs >= 2)
    for (; r + V::kLanes * (kVecs / 2) <= n_rows; r += V::kLanes * (kVecs / 2))
      strip(accumulate_strip<V, kDims * 2 <= 16 ? kDims * 2 : kDims, kVecs / 2>, r);
  for (; r < n_rows; r += V::kLanes) strip(accumulate_strip<V, 12, 1>, r);
}

// ---- per row (decode): the head dimension along the lanes ----

// Scores are finite: plain comparisons (std::fmax is an out-of-line libm call here).
inline float max4(float a, float b, float c, float d) { return std::max(std::max(a, b), std::max(c, d)); }

// The rows the per-row kernels read: an f32 tile (row j at p + j*ld), or a cache's rows in place
// (f16: V::load_f16 converts as it loads; q8_0: Q8Rows below). The cache's rows are a few KiB apart, so each crosses
// a 4 KiB page every row or two, where the hardware prefetchers stop: those rows are prefetched
// kCacheAheadRows ahead, the keys a decode task takes of one head at a time (kInPlaceKeys in
// attention.cpp): each window of keys asks for the next. Measured (Zen 5 VM, 2 threads,
// Attention/tokens:1/depth:4096/layers:28, three rounds, 8 rows ahead -> 16): f16 15.0 / 14.9 /
// 14.9 -> 14.2 / 14.0 / 14.2 ms; q8_0 17.0 / 18.5 / 17.7 -> 15.7 / 14.9 / 15.0 (32 rows: 16.7 /
// 12.7, 64: 17.6 / 14.1 against 16's 13.9 / 11.6 in one more pair of rounds; none: 30-31).
constexpr int64_t kCacheAheadRows = 16;

template <class V>
struct F32Rows {
  const float* p;
  int64_t ld;
  typename V::Vec load(int64_t j, int i) const { return V::load(p + j * ld + i); }
  void prefetch(int64_t, int) const {}
};
template <class V>
struct F16Rows {
  const uint16_t* p;
  int64_t ld;
  typename V::Vec load(int64_t j, int i) const { return V::load_f16(p + j * ld + i); }
  void prefetch(int64_t j, int hd, int64_t ahead = kCacheAheadRows) const {
    const char* row = reinterpret_cast<const char*>(p + (j + ahead) * ld);
    for (int b = 0; b < 2 * hd; b += 64) __builtin_prefetch(row + b);
  }
};

// A q8_0 cache's rows (row j at p + j*ld bytes: blocks of an f16 scale d and 32 signed quants q),
// each element d * q, the product quant::dequantize_row makes (a vector never spans two blocks:
// kLanes divides 32).
template <class V>
struct Q8Rows {
  static constexpr int kBlock = 32, kBlockBytes = 2 + kBlock;
  static_assert(kBlock % V::kLanes == 0, "a vector within one block");
  const uint8_t* p;
  int64_t ld;
  typename V::Vec load(int64_t j, int i) const {
    const uint8_t* block = p + j * ld + (i / kBlock) * kBlockBytes;
    uint16_t d;
    std::memcpy(&d, block, sizeof d);
    return V::mul(V::load_i8(reinterpret_cast<const int8_t*>(block + 2 + i % kBlock)), V::splat(V::f16_scalar(d)));
  }
  void prefetch(int64_t j, int hd, int64_t ahead = kCacheAheadRows) const {
    const uint8_t* row = p + (j + ahead) * ld;
    for (int b = 0; b < hd / kBlock * kBlockBytes; b += 64) __builtin_prefetch(row + b);
  }
};

// scores of attention_kernels.h for kRows query rows (row r at q + r*hd, its scores at out + r*ldo,
// its maximum into mx[r]) over the same rows of keys (hd a multiple of kLanes, kPack 1): each key
// element loaded once for all the rows (a GQA group's heads share their KV head), each row's sums
// in the order of one row alone, so its bits.
template <class V, int kRows, class Rows>
void group_scores(const float* q, const Rows& keys, int64_t n_keys, int hd, float scale, float* out, int64_t ldo,
                  float* mx) {
  for (int r = 0; r < kRows; ++r) mx[r] = -INFINITY;
  int64_t j = 0;
  for (; j + 4 <= n_keys; j += 4) {  // four keys share each load of q
    for (int u = 0; u < 4; ++u) keys.prefetch(j + u, hd);
    typename V::Vec a[kRows][4];
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) a[r][u] = V::zero();
    for (int i = 0; i < hd; i += V::kLanes) {
      typename V::Vec k[4];
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) k[u] = keys.load(j + u, i);
#pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r) {
        const typename V::Vec qv = V::load(q + r * hd + i);
#pragma GCC unroll 4
        for (int u = 0; u < 4; ++u) a[r][u] = V::dot(a[r][u], qv, k[u]);
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) {
      float* o = out + r * ldo + j;
      for (int u = 0; u < 4; ++u) o[u] = V::reduce_add(a[r][u]) * scale;
      mx[r] = max4(mx[r], o[0], o[1], std::max(o[2], o[3]));
    }
  }
  for (; j < n_keys; ++j)
    for (int r = 0; r < kRows; ++r) {
      typename V::Vec a = V::zero();
      for (int i = 0; i < hd; i += V::kLanes) a = V::dot(a, V::load(q + r * hd + i), keys.load(j, i));
      out[r * ldo + j] = V::reduce_add(a) * scale;
      mx[r] = std::max(mx[r], out[r * ldo + j]);
    }
}

// Query rows a group kernel takes at once: their accumulators (4 keys or vectors each) and the
// operands they share fit the registers (32 with 16 lanes, 16 with 8).
template <class V>
constexpr int kGroupRows = V::kLanes >= 16 ? 4 : 2;

// Each of n_q rows in pieces of up to kGroupRows<V> (f(piece's first row, rows) with the piece's
// row count as a template argument).
template <class V, class F>
void in_row_groups(int n_q, F f) {
  int r = 0;
  for (; r + kGroupRows<V> <= n_q; r += kGroupRows<V>) f(r, std::integral_constant<int, kGroupRows<V>>{});
  if constexpr (kGroupRows<V> >= 4)
    for (; r + 2 <= n_q; r += 2) f(r, std::integral_constant<int, 2>{});
  for (; r < n_q; ++r) f(r, std::integral_constant<int, 1>{});
}

template <class V>
float scores_simd(const float* q, const float* keys, int64_t n_keys, int hd, float scale, float* out) {
  float mx;
  group_scores<V, 1>(q, F32Rows<V>{keys, hd}, n_keys, hd, scale, out, n_keys, &mx);
  return mx;
}

// scores of a cache's rows read in place (Rows: F16Rows, Q8Rows) for n_q rows, kGroupRows<V> at a time.
template <class V, class Rows>
void scores_in_place(const float* q, int n_q, const Rows& keys, int64_t n_keys, int hd, float scale, float* out,
                     float* mx) {
  in_row_groups<V>(n_q, [&](int r, auto rows) {
    group_scores<V, decltype(rows)::value>(q + r * hd, keys, n_keys, hd, scale, out + r * n_keys, n_keys, mx + r);
  });
}

template <class V>
void scores_f16_simd(const float* q, int n_q, const uint16_t* keys, int64_t stride, int64_t n_keys, int hd,
                     float scale, float* out, float* mx) {
  scores_in_place<V>(q, n_q, F16Rows<V>{keys, stride}, n_keys, hd, scale, out, mx);
}

template <class V>
void scores_q8_simd(const float* q, int n_q, const uint8_t* keys, int64_t stride, int64_t n_keys, int hd, float scale,
                    float* out, float* mx) {
  scores_in_place<V>(q, n_q, Q8Rows<V>{keys, stride}, n_keys, hd, scale, out, mx);
}

// exp_sum of attention_kernels.h.
template <class V>
float exp_sum_simd(float* s, int64_t n, float max) {
  const typename V::Vec m = V::splat(max);
  typename V::Vec sum = V::zero();
  int64_t j = 0;
  for (; j + V::kLanes <= n; j += V::kLanes) {
    const typename V::Vec e = V::exp_nonpositive(V::sub(V::load(s + j), m));
    V::store(s + j, e);
    sum = V::add(sum, e);
  }
  float total = V::reduce_add(sum);
  for (; j < n; ++j) {
    s[j] = std::exp(s[j] - max);
    total += s[j];
  }
  return total;
}

// accumulate of attention_kernels.h for kRows rows (row r: acc + r*hd, correction[r], p + r*ldp)
// over the same value rows: kVecs vectors of each row's sums from dim i0 stay in registers over
// all keys, each value vector loaded once for all the rows; each sum key by key (the order of
// accumulate_row_tiles and of one row alone).
template <class V, int kRows, int kVecs, class Rows>
inline void group_accumulate_tile(float* acc, const float* correction, const float* p, int64_t ldp, const Rows& values,
                                  int i0, int64_t n_keys, int hd) {
  typename V::Vec a[kRows][kVecs];
#pragma GCC unroll 4
  for (int r = 0; r < kRows; ++r) {
    const typename V::Vec c = V::splat(correction[r]);
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) a[r][v] = V::mul(V::load(acc + r * hd + V::kLanes * v), c);
  }
  for (int64_t j = 0; j < n_keys; ++j) {
    if (i0 == 0) values.prefetch(j, hd);
    typename V::Vec x[kVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) x[v] = values.load(j, i0 + V::kLanes * v);
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) {
      const typename V::Vec pj = V::splat(p[r * ldp + j]);
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) a[r][v] = V::dot(a[r][v], pj, x[v]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) V::store(acc + r * hd + V::kLanes * v, a[r][v]);
}

template <class V, int kRows, class Rows>
void group_accumulate(float* acc, const float* correction, const float* p, int64_t ldp, const Rows& values,
                      int64_t n_keys, int hd) {
  int i = 0;
  for (; i + 4 * V::kLanes <= hd; i += 4 * V::kLanes)
    group_accumulate_tile<V, kRows, 4>(acc + i, correction, p, ldp, values, i, n_keys, hd);
  for (; i < hd; i += V::kLanes) group_accumulate_tile<V, kRows, 1>(acc + i, correction, p, ldp, values, i, n_keys, hd);
}

template <class V>
void accumulate_simd(float* acc, float correction, const float* p, const float* values, int64_t n_keys, int hd) {
  group_accumulate<V, 1>(acc, &correction, p, n_keys, F32Rows<V>{values, hd}, n_keys, hd);
}

// accumulate over a cache's rows read in place (Rows: F16Rows, Q8Rows) for n_q rows.
template <class V, class Rows>
void accumulate_in_place(float* acc, const float* correction, int n_q, const float* p, int64_t ldp, const Rows& values,
                         int64_t n_keys, int hd) {
  in_row_groups<V>(n_q, [&](int r, auto rows) {
    group_accumulate<V, decltype(rows)::value>(acc + r * hd, correction + r, p + r * ldp, ldp, values, n_keys, hd);
  });
}

template <class V>
void accumulate_f16_simd(float* acc, const float* correction, int n_q, const float* p, int64_t ldp,
                         const uint16_t* values, int64_t stride, int64_t n_keys, int hd) {
  accumulate_in_place<V>(acc, correction, n_q, p, ldp, F16Rows<V>{values, stride}, n_keys, hd);
}

template <class V>
void accumulate_q8_simd(float* acc, const float* correction, int n_q, const float* p, int64_t ldp,
                        const uint8_t* values, int64_t stride, int64_t n_keys, int hd) {
  accumulate_in_place<V>(acc, correction, n_q, p, ldp, Q8Rows<V>{values, stride}, n_keys, hd);
}

}  // namespace
}  // namespace keel::cpu
