// AMX-INT8 micro-kernel of the fast path (compiled with -mamx-tile -mamx-int8 and AVX-512 F/BW/VL;
// reached only after amx_int8_usable()). The panel's quants are already the tile unit's right
// operand: [input / 4][16 rows][4 inputs], 64 bytes a row of the tile. The activations are kept
// signed (Q8ActForm::signed_q), so tdpbssd multiplies a tile of 16 tokens x one group of inputs,
// loaded straight from their blocks, with one group of the panel into 16 x 16 exact int32 sums:
//   c[16 tokens][16 rows] = xq[16 tokens][group] x wq[group][16 rows]
// which are the VNNI kernel's sums after its −offset. The scales are per group, so each group's
// sums leave the tiles (tilestored) and are scaled and summed in float by AVX-512 in the VNNI
// kernel's order: the results are the VNNI kernel's, bit for bit.
//
// Measured (Sapphire Rapids VM, one thread, a panel times 256 tokens): 31-35 ns per 16 x 16 x 32
// products against VNNI's 45-50. The tiles themselves would take 5 ns (tdpbssd with 32 inputs is
// 16 cycles); the rest is the store of the sums, which holds up the loads after it, and scaling
// them. Batches of 4 groups between the stores did best of the orders tried (2 groups, 4, 4 with
// the next batch's products issued before this one's scaling).
//
// K-quants (Q4_K, Q5_K, Q6_K) have integer group scales, so their groups need not leave the
// tiles: q8_prepare_amx multiplies each quant by its group's scale once per panel, split into two
// int8 tiles (scale · q = 64 · hi + lo), and two tile sums run over the whole 256-input block:
// the block's sum Σ_g scale_g Σ_k x_k q_k = 64 · Σ x · hi + Σ x · lo, exact in int32, the AVX2
// kernel's integer sum. It is scaled as the AVX2 kernel scales it, so these results are the AVX2
// kernel's bit for bit (the VNNI kernel sums its groups in float, a different rounding).
// GCC 12 warns inside _mm512_cvtepi32_ps once it is inlined into these loops (GCC bug 105593); the
// warning is noise.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "backend/cpu/amx_tiles.h"
#include "backend/cpu/matmul_q8.h"
#include "backend/cpu/simd_avx512.h"

namespace keel::cpu {
namespace {

constexpr int kTok = kQ8AmxTokens;

// Tiles 0-3: sums, 16 tokens x 16 rows of int32; 4-5: activations, 16 tokens x kGroup bytes;
// 6-7: weights, kGroup / 4 quads x 16 rows x 4 bytes.
template <int kGroup>
const AmxTileConfig& int8_tiles() {
  static const AmxTileConfig config = [] {
    AmxTileConfig c;
    for (int t = 0; t < 8; ++t) {
      c.colsb[t] = t == 4 || t == 5 ? kGroup : 64;
      c.rows[t] = t >= 6 ? kGroup / 4 : 16;
    }
    return c;
  }();
  return config;
}

// The activations' tile rows (and their stride): the tokens' blocks themselves, or (fewer than
// 16 tokens) a copy in part with zero rows after them.
struct ActRows {
  const uint8_t* q;
  size_t stride;
};
inline ActRows activation_rows(const ActBlockQ8* x, int64_t ldx, int n_tok, int64_t kc, uint8_t (*part)[kQ8BlockK]) {
  if (n_tok == kTok) return {x->q, static_cast<size_t>(ldx) * sizeof(ActBlockQ8)};
  for (int t = 0; t < kTok; ++t) {
    if (t < n_tok) std::memcpy(part[t], x[t * ldx].q, static_cast<size_t>(kc));
    else std::memset(part[t], 0, static_cast<size_t>(kc));
  }
  return {part[0], kQ8BlockK};
}

// Up to 4 groups' integer sums into tiles 0-3 (operands alternating between tiles 4/6 and 5/7).
// GCC's tile intrinsics are macros that spell the tile number out, hence the literal branches.
inline void group_products(int n, const uint8_t* aq, size_t a_stride, int a_step, const int8_t* wq, int w_step) {
  _tile_loadd(4, aq, a_stride);
  _tile_loadd(6, wq, 64);
  _tile_zero(0);
  _tile_dpbssd(0, 4, 6);
  if (n > 1) {
    _tile_loadd(5, aq + a_step, a_stride);
    _tile_loadd(7, wq + w_step, 64);
    _tile_zero(1);
    _tile_dpbssd(1, 5, 7);
  }
  if (n > 2) {
    _tile_loadd(4, aq + 2 * a_step, a_stride);
    _tile_loadd(6, wq + 2 * w_step, 64);
    _tile_zero(2);
    _tile_dpbssd(2, 4, 6);
  }
  if (n > 3) {
    _tile_loadd(5, aq + 3 * a_step, a_stride);
    _tile_loadd(7, wq + 3 * w_step, 64);
    _tile_zero(3);
    _tile_dpbssd(3, 5, 7);
  }
}

// Tiles 0 .. n - 1 out to c.
inline void store_sums(int n, int32_t (*c)[kQ8AmxTokens][kQ8Rows]) {
  _tile_stored(0, c[0], 64);
  if (n > 1) _tile_stored(1, c[1], 64);
  if (n > 2) _tile_stored(2, c[2], 64);
  if (n > 3) _tile_stored(3, c[3], 64);
}

// A Q4_0 or Q8_0 panel against up to 16 tokens, one group of 32 inputs a tile product.
void micro_amx_groups(const PanelQ8& p, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok, float* y,
                      int64_t ldy, int n_rows, bool accumulate) {
  constexpr int kGroup = 32;
  amx_configure(int8_tiles<kGroup>());
  const int n_groups = static_cast<int>(kc / kGroup);
  // Missing tokens' scales are read from token 0 and not stored.
  alignas(64) uint8_t part[kTok][kQ8BlockK];
  const auto [aq, a_stride] = activation_rows(x, ldx, n_tok, kc, part);
  const ActBlockQ8* a[kTok];
  for (int t = 0; t < kTok; ++t) a[t] = t < n_tok ? x + t * ldx : x;
  alignas(64) float d[kQ8MaxGroups][kTok];  // [group][token] the tokens' scales
  for (int g = 0; g < n_groups; ++g)
    for (int t = 0; t < kTok; ++t) d[g][t] = a[t]->d[g];

  // Groups go through the tiles 4 at a time, their sums stored together (a tile store holds up
  // every load after it until it is done).
  alignas(64) int32_t c[4][kTok][kQ8Rows];
  __m512 s[kTok];
  for (int t = 0; t < kTok; ++t) s[t] = _mm512_setzero_ps();
  for (int g0 = 0; g0 < n_groups; g0 += 4) {
    const int n = std::min(4, n_groups - g0);
    group_products(n, aq + g0 * kGroup, a_stride, kGroup, &p.q[g0 * (kGroup / 4)][0][0], kGroup * kQ8Rows);
    store_sums(n, c);
    for (int h = 0; h < n; ++h) {  // group g0 + h's sums, scaled into s
      const int g = g0 + h;
      const __m512 sc = _mm512_load_ps(p.scale[g]);
#pragma GCC unroll 16
      for (int t = 0; t < kTok; ++t) {
        const __m512 v = _mm512_cvtepi32_ps(_mm512_load_si512(c[h][t]));
        s[t] = _mm512_fmadd_ps(_mm512_set1_ps(d[g][t]), _mm512_mul_ps(sc, v), s[t]);
      }
    }
  }
  // Every token's sums stay in registers: the loop runs over all 16 (unrolled), storing n_tok.
#pragma GCC unroll 16
  for (int t = 0; t < kTok; ++t)
    if (t < n_tok) store_lanes(y + t * ldy, s[t], n_rows, accumulate);
}

// A K-quant panel (prepared by prepare_amx) against up to 16 tokens: tiles 0 and 1 sum the
// activations times scaled_hi and scaled_lo over the whole block (operands alternate between
// tiles 4/6/7 and 5/2/3), then y = d_x · (d_w · (64 · hi + lo)) − Σ_g dsum_g · min_g.
template <bool kMin>
void micro_amx_scaled(const PanelQ8& p, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok, float* y,
                      int64_t ldy, int n_rows, bool accumulate) {
  amx_configure(int8_tiles<64>());
  alignas(64) uint8_t part[kTok][kQ8BlockK];
  const auto [aq, a_stride] = activation_rows(x, ldx, n_tok, kc, part);
  _tile_zero(0);
  _tile_zero(1);
  for (int64_t k = 0; k < kc; k += 128) {  // kc: 256
    _tile_loadd(4, aq + k, a_stride);
    _tile_loadd(6, &p.scaled_hi[k / 4][0][0], 64);
    _tile_loadd(7, &p.scaled_lo[k / 4][0][0], 64);
    _tile_dpbssd(0, 4, 6);
    _tile_dpbssd(1, 4, 7);
    _tile_loadd(5, aq + k + 64, a_stride);
    _tile_loadd(2, &p.scaled_hi[k / 4 + 16][0][0], 64);
    _tile_loadd(3, &p.scaled_lo[k / 4 + 16][0][0], 64);
    _tile_dpbssd(0, 5, 2);
    _tile_dpbssd(1, 5, 3);
  }
  // The min terms while the tiles multiply (the stores below wait for them). Missing tokens read
  // token 0 and are not stored.
  const ActBlockQ8* a[kTok];
  for (int t = 0; t < kTok; ++t) a[t] = t < n_tok ? x + t * ldx : x;
  __m512 m[kTok];
#pragma GCC unroll 16
  for (int t = 0; t < kTok; ++t) m[t] = _mm512_setzero_ps();
  if constexpr (kMin)
    for (int g = 0; g < static_cast<int>(kc / p.group); ++g) {
      const __m512 mn = _mm512_load_ps(p.min[g]);
#pragma GCC unroll 16
      for (int t = 0; t < kTok; ++t) m[t] = _mm512_fmadd_ps(_mm512_set1_ps(a[t]->dsum[g]), mn, m[t]);
    }
  alignas(64) int32_t c[2][kTok][kQ8Rows];
  _tile_stored(0, c[0], 64);
  _tile_stored(1, c[1], 64);
  const __m512 dw = _mm512_load_ps(p.block_d);
#pragma GCC unroll 16
  for (int t = 0; t < kTok; ++t) {
    if (t >= n_tok) continue;
    const __m512i sum = _mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(c[0][t]), 6), _mm512_load_si512(c[1][t]));
    store_lanes(y + t * ldy, _mm512_fmsub_ps(_mm512_set1_ps(a[t]->d[0]), _mm512_mul_ps(dw, _mm512_cvtepi32_ps(sum)), m[t]),
                n_rows, accumulate);
  }
}

void micro_amx(const PanelQ8& p, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
               int n_rows, bool accumulate) {
  static_assert(kQ8Rows == 16, "the kernel is written for 16 rows");
  if (!p.block_scale)  // Q4_0, Q8_0
    micro_amx_groups(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
  else if (p.has_min)  // Q4_K, Q5_K
    micro_amx_scaled<true>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
  else  // Q6_K
    micro_amx_scaled<false>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
}

// 0, 1, ..., 31 in 16-bit lanes.
inline __m512i lane_index16() {
  return _mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9,
                          8, 7, 6, 5, 4, 3, 2, 1, 0);
}

// scaled_hi / scaled_lo of a K-quant panel: per quad of inputs, the 16 rows' 4 quants (64 bytes)
// widened to 16 bits, times their rows' group scales (|scale · q| <= 128 · 32), split by an
// arithmetic shift and a mask. Q4_0 and Q8_0 panels do not use them.
void prepare_amx(PanelQ8& p, int64_t kc) {
  if (!p.block_scale) return;
  // Lane i of the first 32 values belongs to row i / 4, of the second to row 8 + i / 4.
  const __m512i rows_lo = _mm512_srli_epi16(lane_index16(), 2), rows_hi = _mm512_add_epi16(rows_lo, _mm512_set1_epi16(8));
  const int quads = p.group / 4;
  for (int g = 0; g < static_cast<int>(kc / p.group); ++g) {
    const __m512i scales = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.group_scale[g])));
    const __m512i s0 = _mm512_permutexvar_epi16(rows_lo, scales), s1 = _mm512_permutexvar_epi16(rows_hi, scales);
    for (int quad = g * quads; quad < (g + 1) * quads; ++quad) {
      const __m512i q = _mm512_load_si512(p.q[quad]);
      const __m512i w0 = _mm512_mullo_epi16(_mm512_cvtepi8_epi16(_mm512_castsi512_si256(q)), s0);
      const __m512i w1 = _mm512_mullo_epi16(_mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64(q, 1)), s1);
      const auto bytes = [](__m512i lo_rows, __m512i hi_rows) {
        return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi16_epi8(lo_rows)), _mm512_cvtepi16_epi8(hi_rows), 1);
      };
      const __m512i mask = _mm512_set1_epi16(63);
      _mm512_store_si512(p.scaled_hi[quad], bytes(_mm512_srai_epi16(w0, 6), _mm512_srai_epi16(w1, 6)));
      _mm512_store_si512(p.scaled_lo[quad], bytes(_mm512_and_si512(w0, mask), _mm512_and_si512(w1, mask)));
    }
  }
}

}  // namespace

Q8MicroFn q8_micro_amx() { return micro_amx; }
Q8PrepareFn q8_prepare_amx() { return prepare_amx; }

}  // namespace keel::cpu
