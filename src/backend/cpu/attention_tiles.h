// The register tiles of the x86 row-block attention kernels (attention_avx2.cpp,
// attention_avx512.cpp, attention_avx512bf16.cpp), written once over a vector-traits type V
// (F32x8 in simd_avx2.h, F32x16 in simd_avx512.h, Bf16x32 in attention_avx512bf16.cpp). Include it
// only in those files: its code takes each file's ISA flags, and the anonymous namespace keeps
// each file's copies its own.
//
// V gives f32 vectors of V::kLanes sums (Vec: zero, load, store, splat, mul) and operand vectors
// (Operands, stored as Element) whose lanes hold V::kPack consecutive operands along the summed
// index: dot(acc, a, b) adds a lane's kPack products to acc (an f32 FMA: kPack 1; vdpbf16ps: 2).
// Operand matrices x[j][c] (j the summed index) are packed to match, with a leading dimension ld:
// x[j][c] at x[(j - j % kPack) * ld + kPack * c + j % kPack]. kPack 1 is plain row-major; kPack 2
// the pairs of attention_kernels.h.
#pragma once
#include <cstdint>

namespace keel::cpu {
namespace {

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

// kRows rows x kLanes*kVecs outputs: acc[r*hd + i] = acc[r*hd + i] * correction[r] +
// sum_j p[j][r] * v[j][i] over n_steps steps of kPack keys, with p packed in pt (leading dimension
// ldp) and v in values (leading dimension hd). Each value vector loaded feeds kRows dot steps.
template <class V, int kRows, int kVecs>
inline void accumulate_tile(float* acc, int hd, const float* correction, const typename V::Element* pt, int64_t ldp,
                            const typename V::Element* values, int64_t n_steps) {
  typename V::Vec a[kRows][kVecs];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
    const typename V::Vec c = V::splat(correction[r]);
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) a[r][v] = V::mul(V::load(acc + r * hd + V::kLanes * v), c);
  }
  for (int64_t j = 0; j < n_steps; ++j) {
    typename V::Operands x[kVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) x[v] = V::load_operands(values + j * V::kPack * hd + V::kPack * V::kLanes * v);
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) {
      const typename V::Operands p = V::broadcast(pt + (j * V::kPack * ldp + V::kPack * r));
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) a[r][v] = V::dot(a[r][v], p, x[v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) V::store(acc + r * hd + V::kLanes * v, a[r][v]);
}

// accumulate_rows of attention_kernels.h with operands packed (p in pt, leading dimension ldp; v in
// values, leading dimension hd), for n_rows a multiple of kRows: kRows rows x kVecs vectors a
// tile, then a vector at a time.
template <class V, int kRows, int kVecs>
void accumulate_row_tiles(float* acc, const float* correction, int n_rows, const typename V::Element* pt, int64_t ldp,
                          const typename V::Element* values, int64_t n_keys, int hd) {
  const int64_t n_steps = (n_keys + V::kPack - 1) / V::kPack;
  for (int r = 0; r < n_rows; r += kRows) {
    float* a = acc + int64_t{r} * hd;
    const typename V::Element* p = pt + V::kPack * r;
    int i = 0;
    for (; i + V::kLanes * kVecs <= hd; i += V::kLanes * kVecs)
      accumulate_tile<V, kRows, kVecs>(a + i, hd, correction + r, p, ldp, values + V::kPack * i, n_steps);
    for (; i < hd; i += V::kLanes)
      accumulate_tile<V, kRows, 1>(a + i, hd, correction + r, p, ldp, values + V::kPack * i, n_steps);
  }
}

}  // namespace
}  // namespace keel::cpu
