// AMX twins of the bf16 row-block products (compiled with -mamx-tile -mamx-bf16 and AVX-512 F/BW/
// VL/BF16; reached only after amx_bf16_usable() in attention_bf16_kernels_for(), for head sizes
// that are a multiple of 32). The packers and the softmax are attention_avx512bf16.cpp's: the
// operands stay in the layouts of attention_kernels.h, which are the tile unit's own. tdpbf16ps
// multiplies a tile of 16 rows x 32 bf16 by one of 16 pairs x 16 columns into 16 x 16 f32 sums:
// 16 x 16 x 32 products an instruction, against vdpbf16ps's 32.
//   scores_rows:     st[16 keys][16 rows] += keys[16 keys][32 dims] x qp[16 dim pairs][16 rows]
//   accumulate_rows: acc[16 dims][16 rows] += V^T[16 dims][32 keys] x pp[16 key pairs][16 rows]
// V^T is V's pairs transposed (16 x 16 words at a time) into a stack tile per call.
// GCC 12 warns inside its own unmasked AVX-512 intrinsics once inlined into loops (GCC bug
// 105593, as in attention_avx512bf16.cpp); the warning is noise.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "backend/cpu/amx_tiles.h"
#include "backend/cpu/attention_kernels.h"

namespace keel::cpu {
namespace {

// The tile registers' shapes: tiles 0-7 all 16 rows of 64 bytes. Tiles 0-3 hold sums, 4-5 the
// left operands, 6-7 the right ones.
void configure_tiles() {
  static const AmxTileConfig config = [] {
    AmxTileConfig c;
    for (int t = 0; t < 8; ++t) {
      c.colsb[t] = 64;
      c.rows[t] = 16;
    }
    return c;
  }();
  amx_configure(config);
}

// C += A x B on the tiles, both products' one loop: MB x NB blocks of 16 x 16 f32 sums (MB, NB in 1,
// 2) at c (rows c_ld floats apart; zeroed first unless `load`), A's rows (16 per block, a_ld bf16
// apart) 32 bf16 a step, B's columns (16 per block, 32 bf16 apart) in pairs of rows b_ld bf16
// apart, 16 pairs a step; k_steps steps.
template <int MB, int NB>
void tile_product(float* c, int64_t c_ld, bool load, const uint16_t* a, int64_t a_ld, const uint16_t* b, int64_t b_ld,
                  int64_t k_steps) {
  const size_t c_row = 4 * static_cast<size_t>(c_ld), a_row = 2 * static_cast<size_t>(a_ld);
  const size_t b_row = 2 * static_cast<size_t>(b_ld);
  if (load) {
    _tile_loadd(0, c, c_row);
    if constexpr (NB > 1) _tile_loadd(1, c + 16, c_row);
    if constexpr (MB > 1) _tile_loadd(2, c + 16 * c_ld, c_row);
    if constexpr (MB > 1 && NB > 1) _tile_loadd(3, c + 16 * c_ld + 16, c_row);
  } else {
    _tile_zero(0);
    if constexpr (NB > 1) _tile_zero(1);
    if constexpr (MB > 1) _tile_zero(2);
    if constexpr (MB > 1 && NB > 1) _tile_zero(3);
  }
  for (int64_t k = 0; k < k_steps; ++k, a += 32, b += 16 * b_ld) {
    _tile_loadd(4, a, a_row);
    _tile_loadd(6, b, b_row);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (NB > 1) {
      _tile_loadd(7, b + 32, b_row);
      _tile_dpbf16ps(1, 4, 7);
    }
    if constexpr (MB > 1) {
      _tile_loadd(5, a + 16 * a_ld, a_row);
      _tile_dpbf16ps(2, 5, 6);
      if constexpr (NB > 1) _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, c, c_row);
  if constexpr (NB > 1) _tile_stored(1, c + 16, c_row);
  if constexpr (MB > 1) _tile_stored(2, c + 16 * c_ld, c_row);
  if constexpr (MB > 1 && NB > 1) _tile_stored(3, c + 16 * c_ld + 16, c_row);
}

// st[keys from j0 (KB blocks of 16)][rows (all n_rows)] = keys x queries.
template <int KB>
void scores_keys(const uint16_t* qp, int n_rows, const uint16_t* keys, int hd, float* st, int64_t lds, int64_t j0) {
  int r = 0;
  for (; r + 32 <= n_rows; r += 32)
    tile_product<KB, 2>(st + j0 * lds + r, lds, false, keys + j0 * hd, hd, qp + 2 * r, 2 * n_rows, hd / 32);
  if (r < n_rows) tile_product<KB, 1>(st + j0 * lds + r, lds, false, keys + j0 * hd, hd, qp + 2 * r, 2 * n_rows, hd / 32);
}

void scores_rows_amx(const uint16_t* qp, int n_rows, const uint16_t* keys, int64_t n_keys, int hd, float* st,
                     int64_t lds) {
  configure_tiles();
  int64_t j = 0;
  for (; j + 32 <= n_keys; j += 32) scores_keys<2>(qp, n_rows, keys, hd, st, lds, j);
  for (; j + 16 <= n_keys; j += 16) scores_keys<1>(qp, n_rows, keys, hd, st, lds, j);
  if (j < n_keys)  // the last keys (fewer than a tile's 16 rows)
    attention_bf16_kernels_avx512bf16().scores_rows(qp, n_rows, keys + j * hd, n_keys - j, hd, st + j * lds, lds);
}

// A 16 x 16 matrix of 32-bit words transposed in registers.
inline void transpose16(__m512i (&r)[16]) {
  __m512i t[16];
  for (int k = 0; k < 8; ++k) {  // within 128-bit lanes: rows 2k, 2k + 1 interleaved
    t[2 * k] = _mm512_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
  }
  for (int k = 0; k < 4; ++k) {  // lane L of r[4k + b]: rows 4k .. 4k + 3 of column 4L + b
    r[4 * k] = _mm512_unpacklo_epi64(t[4 * k], t[4 * k + 2]);
    r[4 * k + 1] = _mm512_unpackhi_epi64(t[4 * k], t[4 * k + 2]);
    r[4 * k + 2] = _mm512_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
    r[4 * k + 3] = _mm512_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
  }
  for (int b = 0; b < 4; ++b) {  // the 4 x 4 lanes of r[b], r[4 + b], r[8 + b], r[12 + b] transposed
    const __m512i v0 = _mm512_shuffle_i32x4(r[b], r[4 + b], 0x44), v1 = _mm512_shuffle_i32x4(r[b], r[4 + b], 0xEE);
    const __m512i v2 = _mm512_shuffle_i32x4(r[8 + b], r[12 + b], 0x44), v3 = _mm512_shuffle_i32x4(r[8 + b], r[12 + b], 0xEE);
    t[b] = _mm512_shuffle_i32x4(v0, v2, 0x88);
    t[4 + b] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
    t[8 + b] = _mm512_shuffle_i32x4(v1, v3, 0x88);
    t[12 + b] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
  }
  for (int k = 0; k < 16; ++k) r[k] = t[k];
}

// Keys a call's V^T holds at once (its stack tile: kAmxMaxHeadDim x 256 keys, 128 KiB).
constexpr int64_t kKeysAtOnce = 256;

// vt[i][j] (row i: n_keys keys, n_keys / 2 words) from values' pairs (word [j / 2][i]); n_keys a
// multiple of 32, hd of 16.
void transpose_values(const uint16_t* values, int64_t n_keys, int hd, uint16_t* vt) {
  const auto* w = reinterpret_cast<const int32_t*>(values);
  auto* out = reinterpret_cast<int32_t*>(vt);
  const int64_t pairs = n_keys / 2;
  for (int64_t q = 0; q < pairs; q += 16)
    for (int i = 0; i < hd; i += 16) {
      __m512i r[16];
      for (int k = 0; k < 16; ++k) r[k] = _mm512_loadu_si512(w + (q + k) * hd + i);
      transpose16(r);
      for (int k = 0; k < 16; ++k) _mm512_storeu_si512(out + (i + k) * pairs + q, r[k]);
    }
}

void accumulate_rows_amx(float* acc, const float* correction, int n_rows, const uint16_t* pp, const uint16_t* values,
                         int64_t n_keys, int hd) {
  configure_tiles();
  const int64_t whole = n_keys / 32 * 32;  // keys the tiles take
  if (whole < n_keys) {  // the last keys first, by the AVX-512 kernel, which also applies the factors
    attention_bf16_kernels_avx512bf16().accumulate_rows(acc, correction, n_rows, pp + whole * n_rows,
                                                        values + whole * hd, n_keys - whole, hd);
  } else {  // the sums moved onto the new maxima (the tiles only add)
    for (int i = 0; i < hd; ++i)
      for (int r = 0; r < n_rows; r += 16) {
        float* a = acc + static_cast<int64_t>(i) * n_rows + r;
        _mm512_storeu_ps(a, _mm512_mul_ps(_mm512_loadu_ps(a), _mm512_loadu_ps(correction + r)));
      }
  }
  alignas(64) uint16_t vt[kAmxMaxHeadDim * kKeysAtOnce];
  for (int64_t j = 0; j < whole; j += kKeysAtOnce) {
    const int64_t n = std::min(kKeysAtOnce, whole - j);
    transpose_values(values + j * hd, n, hd, vt);
    const uint16_t* p = pp + j * n_rows;  // key pair j / 2
    for (int i = 0; i < hd; i += 32) {  // acc[dims i .. i + 31][rows] += V^T x P
      float* c = acc + static_cast<int64_t>(i) * n_rows;
      int r = 0;
      for (; r + 32 <= n_rows; r += 32) tile_product<2, 2>(c + r, n_rows, true, vt + i * n, n, p + 2 * r, 2 * n_rows, n / 32);
      if (r < n_rows) tile_product<2, 1>(c + r, n_rows, true, vt + i * n, n, p + 2 * r, 2 * n_rows, n / 32);
    }
  }
}

}  // namespace

const AttentionBf16Kernels& attention_bf16_kernels_amx() {
  static const AttentionBf16Kernels k = [] {
    AttentionBf16Kernels t = attention_bf16_kernels_avx512bf16();
    t.scores_rows = scores_rows_amx;
    t.accumulate_rows = accumulate_rows_amx;
    return t;
  }();
  return k;
}

}  // namespace keel::cpu
