// AVX512_BF16 twins of the bf16 row-block kernels (compiled with -mavx512f -mavx512bw -mavx512vl
// -mavx512bf16; reached only after the runtime check in attention_bf16_kernels_for(), for head
// sizes that are a multiple of 16). vdpbf16ps adds a lane's two bf16 products to an f32 sum:
// twice the products of an f32 FMA per instruction, on half the bytes.
// GCC 12 warns inside its own unmasked AVX-512 intrinsics (_mm512_cvtph_ps's `__Y = __Y`, GCC
// bug 105593) once they are inlined into loops; the warning is noise.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "backend/cpu/attention_kernels.h"
#include "backend/cpu/attention_simd.h"
#include "backend/cpu/simd_avx512.h"

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

// bf16 pairs for the tile templates (attention_simd.h): f32 vectors of 16 lanes as F32x16, and
// operand vectors of 32 bf16 whose lanes vdpbf16ps sums a pair of products into.
struct Bf16x32 : F32x16 {
  using Element = uint16_t;
  using Operands = __m512bh;
  static constexpr int kPack = 2;
  static Operands load_operands(const uint16_t* p) { return as_bh(_mm512_loadu_si512(p)); }
  static Operands broadcast(const uint16_t* p) { return broadcast_pair(p); }
  static Vec dot(Vec acc, Operands a, Operands b) { return _mm512_dpbf16_ps(acc, a, b); }
};

// 16 floats as 16 bf16.
inline __m256i to_bf16(__m512 x) {
  const __m256bh h = _mm512_cvtneps_pbh(x);
  return reinterpret_cast<const __m256i&>(h);
}

void pack_keys_avx512bf16(const float* keys, int64_t n, int hd, uint16_t* out) {
  for (int64_t i = 0; i < n * hd; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), to_bf16(_mm512_loadu_ps(keys + i)));
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

// Rows ahead that pack_rows prefetches: a cache's rows of one head are n_kv_heads rows apart
// (2 KiB at Qwen3-0.6B in f16), past the hardware prefetchers at every 4 KiB page.
constexpr int64_t kAheadRows = 8;

// pack_keys and pack_values of a cache's rows read in place (Rows: F16Rows, Q8Rows of
// attention_simd.h), each element converted to f32 as the per-row kernels load it.
template <class Rows>
void pack_rows(const Rows& k, const Rows& v, int64_t n, int hd, uint16_t* kb, uint16_t* vb) {
  for (int64_t j = 0; j < n; j += 2, kb += 2 * hd, vb += 2 * hd) {
    for (int64_t a = j; a < std::min(j + 2, n - kAheadRows); ++a) {
      k.prefetch(a, hd, kAheadRows);
      v.prefetch(a, hd, kAheadRows);
    }
    const bool pair = j + 1 < n;
    for (int i = 0; i < hd; i += 16) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(kb + i), to_bf16(k.load(j, i)));
      if (pair) _mm256_storeu_si256(reinterpret_cast<__m256i*>(kb + hd + i), to_bf16(k.load(j + 1, i)));
      const __m512 second = pair ? v.load(j + 1, i) : _mm512_setzero_ps();
      _mm512_storeu_si512(vb + 2 * i, interleave_bf16(v.load(j, i), second));
    }
  }
}

void pack_f16_avx512bf16(const uint16_t* k, const uint16_t* v, int64_t stride, int64_t n, int hd, uint16_t* kb,
                         uint16_t* vb) {
  pack_rows(F16Rows<F32x16>{k, stride}, F16Rows<F32x16>{v, stride}, n, hd, kb, vb);
}

void pack_q8_avx512bf16(const uint8_t* k, const uint8_t* v, int64_t stride, int64_t n, int hd, uint16_t* kb,
                        uint16_t* vb) {
  pack_rows(Q8Rows<F32x16>{k, stride}, Q8Rows<F32x16>{v, stride}, n, hd, kb, vb);
}

// softmax_rows_simd (attention_simd.h), each pair of keys' probabilities out as one vector of pairs.
void softmax_pack_avx512bf16(const float* st, int64_t lds, int n_rows, int64_t n_keys, int64_t first_visible, int group,
                             float* m, float* l, float* correction, uint16_t* pp) {
  softmax_rows_with<F32x16>(st, lds, n_rows, n_keys, first_visible, group, m, l, correction,
                            [&](int r0, int64_t j, __m512 p0, __m512 p1) {
                              _mm512_storeu_si512(pp + j * n_rows + 2 * r0, interleave_bf16(p0, p1));
                            });
}

// Strips of 64, 32 and 16 rows: 24 accumulators or fewer of the 32 registers.
void scores_rows_avx512bf16(const uint16_t* qp, int n_rows, const uint16_t* keys, int64_t n_keys, int hd, float* st,
                            int64_t lds) {
  int r = 0;
  for (; r + 64 <= n_rows; r += 64) scores_strip<Bf16x32, 6, 4>(qp + 2 * r, n_rows, keys, n_keys, hd, st + r, lds);
  for (; r + 32 <= n_rows; r += 32) scores_strip<Bf16x32, 12, 2>(qp + 2 * r, n_rows, keys, n_keys, hd, st + r, lds);
  for (; r < n_rows; r += 16) scores_strip<Bf16x32, 12, 1>(qp + 2 * r, n_rows, keys, n_keys, hd, st + r, lds);
}

void accumulate_rows_avx512bf16(float* acc, const float* correction, int n_rows, const uint16_t* pp,
                                const uint16_t* values, int64_t n_keys, int hd) {
  accumulate_row_tiles<Bf16x32, 6, 4>(acc, correction, n_rows, pp, n_rows, values, n_keys, hd);
}

}  // namespace

const AttentionBf16Kernels& attention_bf16_kernels_avx512bf16() {
  static const AttentionBf16Kernels k{pack_keys_avx512bf16,          pack_values_avx512bf16,
                                      scores_rows_avx512bf16,        pack_probabilities_avx512bf16,
                                      pack_f16_avx512bf16,           pack_q8_avx512bf16,
                                      softmax_pack_avx512bf16,
                                      accumulate_rows_avx512bf16};
  return k;
}

}  // namespace keel::cpu
