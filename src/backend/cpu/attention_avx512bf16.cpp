// AVX512_BF16 twins of the bf16 row-block kernels (compiled with -mavx512f -mavx512bw -mavx512vl
// -mavx512bf16; reached only after the runtime check in attention_bf16_kernels_for(), for head
// sizes that are a multiple of 16). vdpbf16ps adds a lane's two bf16 products to an f32 sum:
// twice the products of an f32 FMA per instruction, on half the bytes.
#include <immintrin.h>

#include <cstring>

#include "backend/cpu/attention_kernels.h"

namespace keel::cpu {
namespace {

inline __m512bh as_bh(__m512i v) { return reinterpret_cast<__m512bh&>(v); }

// The pair at p (two bf16) in every 32-bit lane.
inline __m512bh broadcast_pair(const uint16_t* p) {
  int32_t pair;
  std::memcpy(&pair, p, sizeof pair);
  return as_bh(_mm512_set1_epi32(pair));
}

// 16 floats of a and 16 of b as 32 bf16, interleaved: a0 b0 a1 b1 ...
inline __m512i interleave_bf16(__m512 a, __m512 b) {
  const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                                       20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i ab = reinterpret_cast<const __m512i&>(static_cast<const __m512bh&>(_mm512_cvtne2ps_pbh(b, a)));
  return _mm512_permutexvar_epi16(idx, ab);
}

void pack_keys_avx512bf16(const float* keys, int64_t n, int hd, uint16_t* out) {
  for (int64_t i = 0; i < n * hd; i += 16) {
    const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(keys + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), reinterpret_cast<const __m256i&>(h));
  }
}

// Rows j and j + 1 of x (ld apart, width a multiple of 16) interleaved; a missing row j + 1 is zero.
void pack_pairs(const float* x, int64_t ld, int64_t n, int width, uint16_t* out) {
  for (int64_t j = 0; j < n; j += 2, out += 2 * width)
    for (int i = 0; i < width; i += 16) {
      const __m512 a = _mm512_loadu_ps(x + j * ld + i);
      const __m512 b = j + 1 < n ? _mm512_loadu_ps(x + (j + 1) * ld + i) : _mm512_setzero_ps();
      _mm512_storeu_si512(out + 2 * i, interleave_bf16(a, b));
    }
}

void pack_values_avx512bf16(const float* values, int64_t n, int hd, uint16_t* out) { pack_pairs(values, hd, n, hd, out); }

void pack_probabilities_avx512bf16(const float* st, int64_t lds, int n_rows, int64_t n_keys, uint16_t* pp) {
  pack_pairs(st, lds, n_keys, n_rows, pp);
}

// kKeys keys x 16*kVecs rows of scores: each query vector (16 rows x a pair of dimensions) feeds
// kKeys dot products, each key pair one broadcast feeding kVecs.
template <int kKeys, int kVecs>
inline void scores_tile(const uint16_t* qp, int n_rows, const uint16_t* keys, int hd, float* st, int64_t lds) {
  __m512 acc[kKeys][kVecs];
#pragma GCC unroll 16
  for (int k = 0; k < kKeys; ++k)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) acc[k][v] = _mm512_setzero_ps();
  for (int i = 0; i < hd; i += 2) {
    __m512bh q[kVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) q[v] = as_bh(_mm512_loadu_si512(qp + int64_t{i} * n_rows + 32 * v));
#pragma GCC unroll 16
    for (int k = 0; k < kKeys; ++k) {
      const __m512bh kb = broadcast_pair(keys + k * hd + i);
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) acc[k][v] = _mm512_dpbf16_ps(acc[k][v], kb, q[v]);
    }
  }
#pragma GCC unroll 16
  for (int k = 0; k < kKeys; ++k)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) _mm512_storeu_ps(st + k * lds + 16 * v, acc[k][v]);
}

// kKeys x kVecs accumulators of 24 or fewer (of the 32 registers).
template <int kKeys, int kVecs>
void scores_strip(const uint16_t* qp, int n_rows, const uint16_t* keys, int64_t n_keys, int hd, float* st,
                  int64_t lds) {
  int64_t j = 0;
  for (; j + kKeys <= n_keys; j += kKeys) scores_tile<kKeys, kVecs>(qp, n_rows, keys + j * hd, hd, st + j * lds, lds);
  for (; j + 4 <= n_keys; j += 4) scores_tile<4, kVecs>(qp, n_rows, keys + j * hd, hd, st + j * lds, lds);
  for (; j < n_keys; ++j) scores_tile<1, kVecs>(qp, n_rows, keys + j * hd, hd, st + j * lds, lds);
}

void scores_rows_avx512bf16(const uint16_t* qp, int n_rows, const uint16_t* keys, int64_t n_keys, int hd, float* st,
                            int64_t lds) {
  int r = 0;
  for (; r + 64 <= n_rows; r += 64) scores_strip<6, 4>(qp + 2 * r, n_rows, keys, n_keys, hd, st + r, lds);
  for (; r + 32 <= n_rows; r += 32) scores_strip<12, 2>(qp + 2 * r, n_rows, keys, n_keys, hd, st + r, lds);
  for (; r < n_rows; r += 16) scores_strip<12, 1>(qp + 2 * r, n_rows, keys, n_keys, hd, st + r, lds);
}

// kRows rows x 16*kVecs outputs: each value vector (16 outputs x a pair of keys) feeds kRows
// dot products.
template <int kRows, int kVecs>
inline void accumulate_tile(float* acc, int hd, const float* correction, const uint16_t* pp, int n_rows,
                            const uint16_t* values, int64_t n_pairs) {
  __m512 a[kRows][kVecs];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
    const __m512 c = _mm512_set1_ps(correction[r]);
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) a[r][v] = _mm512_mul_ps(_mm512_loadu_ps(acc + r * hd + 16 * v), c);
  }
  for (int64_t j = 0; j < n_pairs; ++j) {
    __m512bh x[kVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) x[v] = as_bh(_mm512_loadu_si512(values + j * 2 * hd + 32 * v));
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) {
      const __m512bh p = broadcast_pair(pp + j * 2 * n_rows + 2 * r);
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) a[r][v] = _mm512_dpbf16_ps(a[r][v], p, x[v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) _mm512_storeu_ps(acc + r * hd + 16 * v, a[r][v]);
}

void accumulate_rows_avx512bf16(float* acc, const float* correction, int n_rows, const uint16_t* pp,
                                const uint16_t* values, int64_t n_keys, int hd) {
  const int64_t n_pairs = (n_keys + 1) / 2;
  for (int r = 0; r < n_rows; r += 4) {
    float* a = acc + int64_t{r} * hd;
    int i = 0;
    for (; i + 64 <= hd; i += 64)
      accumulate_tile<4, 4>(a + i, hd, correction + r, pp + 2 * r, n_rows, values + 2 * i, n_pairs);
    for (; i < hd; i += 16)
      accumulate_tile<4, 1>(a + i, hd, correction + r, pp + 2 * r, n_rows, values + 2 * i, n_pairs);
  }
}

}  // namespace

const AttentionBf16Kernels& attention_bf16_kernels_avx512bf16() {
  static const AttentionBf16Kernels k{pack_keys_avx512bf16, pack_values_avx512bf16, scores_rows_avx512bf16,
                                      pack_probabilities_avx512bf16, accumulate_rows_avx512bf16};
  return k;
}

}  // namespace keel::cpu
