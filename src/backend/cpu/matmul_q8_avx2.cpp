// AVX2 micro-kernel of the fast path (compiled with -mavx2 -mfma; reached only after best_isa()
// saw AVX2). The panel's 16 rows are done as two halves of 8: one ymm holds 4 inputs of 8 rows.
// vpmaddubsw multiplies it with 4 broadcast activation bytes (unsigned, quant + 128) into 16-bit
// pair sums; two of them are added in 16 bits (|sum| <= 2·2·255·32 < 2^15 for every weight type
// but Q8_0) and vpmaddwd widens to int32. Q8_0's full-range quants would saturate that; its
// panels are multiplied in 16 bits instead: q8_prepare_avx2 widens the panel's quants once
// (q16, 2 inputs of 8 rows per ymm), and vpmaddwd multiplies them with 2 broadcast 16-bit
// activations (the signed quants, no offset). That is as many multiplies per input as the sign
// trick (|w| × (x with w's sign) through vpmaddubsw, then vpmaddwd), without the vpsignb; on the
// Zen 4 this was measured on, vpmaddwd runs at twice the rate of vpmaddubsw and of vpsignb.
// K-quant panels apply their rows' integer group scales in the vpmaddwd that widens the pair
// sums (it multiplies by the scale where Q4_0 multiplies by 1), so a block of 256 inputs sums
// exactly in int32 and the float work (scales, conversion) is done once per block, not per group.
// (Q8_0's 16-bit path was tried for K-quant panels and ran ~20% slower on the same Zen 4: their
// narrow quants let two or four vpmaddubsw share one vpmaddwd, 2.25-2.5 instructions per 32
// products where 16-bit products take 4.)
#include <immintrin.h>

#include <cstring>

#include "backend/cpu/matmul_q8.h"

namespace keel::cpu {
namespace {

// 4 bytes at p in every 32-bit lane (vbroadcastss: measured at 2.5 times the rate of vpbroadcastd
// from memory on Zen 4).
inline __m256i bcast4(const void* p) {
  float v;
  std::memcpy(&v, p, 4);
  return _mm256_castps_si256(_mm256_set1_ps(v));
}

// An empty asm that keeps v's sum chain a chain: without it GCC reassociates the unrolled
// accumulations of a group into trees over all their products, which spill.
inline void keep_chain(__m256i& v) { asm("" : "+x"(v)); }

inline void store_half(float* y, __m256 v, int n, bool accumulate) {
  if (n >= 8) {
    if (accumulate) v = _mm256_add_ps(v, _mm256_loadu_ps(y));
    _mm256_storeu_ps(y, v);
    return;
  }
  alignas(32) float tmp[8];
  _mm256_store_ps(tmp, v);
  for (int j = 0; j < n; ++j) y[j] = (accumulate ? y[j] : 0.0f) + tmp[j];
}

// Rows [8·half, 8·half + 8) of a Q4_0 panel against 4 tokens, through vpmaddubsw.
void half_avx2(const PanelQ8& p, int half, int64_t kc, const ActBlockQ8* const (&a)[4], int n_tok,
               float* y, int64_t ldy, int n_rows, bool accumulate) {
  constexpr int kGroup = 32, kQuads = kGroup / 4;
  const int n_groups = static_cast<int>(kc / kGroup);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 s[4];
  for (int t = 0; t < 4; ++t) s[t] = _mm256_setzero_ps();
  for (int g = 0; g < n_groups; ++g) {
    const int8_t* wq = &p.q[g * kQuads][8 * half][0];
    const int k = g * kGroup;
    // The sums start from −offset, so they come out offset-free.
    const __m256i off = _mm256_load_si256(reinterpret_cast<const __m256i*>(&p.offset[g][8 * half]));
    const __m256i start = _mm256_sub_epi32(_mm256_setzero_si256(), off);
    __m256i c[4] = {start, start, start, start};
    for (int i = 0; i < kQuads; i += 2) {
      const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(wq + 64 * i));
      const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(wq + 64 * (i + 1)));
      for (int t = 0; t < 4; ++t) {
        const __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(bcast4(a[t]->q + k + 4 * i), w0),
                                               _mm256_maddubs_epi16(bcast4(a[t]->q + k + 4 * i + 4), w1));
        c[t] = _mm256_add_epi32(c[t], _mm256_madd_epi16(pairs, ones));
        keep_chain(c[t]);
      }
    }
    const __m256 sc = _mm256_load_ps(&p.scale[g][8 * half]);
    for (int t = 0; t < 4; ++t)
      s[t] = _mm256_fmadd_ps(_mm256_set1_ps(a[t]->d[g]), _mm256_mul_ps(sc, _mm256_cvtepi32_ps(c[t])), s[t]);
  }
  const int n = n_rows - 8 * half;
  for (int t = 0; t < n_tok; ++t) store_half(y + t * ldy + 8 * half, s[t], n, accumulate);
}

// Rows [8·half, 8·half + 8) of a K-quant panel (quants below 2^5 in magnitude) against 4 tokens:
// vpmaddwd multiplies the pair sums by the rows' group scales, into one int32 sum per row and
// token over the block (|Σ| <= 16 · 16 · 255 · 32 · 128 < 2^31 for Q6_K, less for Q4_K/Q5_K),
// started from −block_offset; then y = d_x · (d_w · Σ) − Σ_g dsum_g · min_g. kQuadsPer16 quads'
// vpmaddubsw pair sums are added in 16 bits before each vpmaddwd: 2 (|sum| <= 2·2·255·32 < 2^15),
// or 4 for quants in [0, 15] (4·2·255·15 < 2^15).
template <int kGroup, bool kMin, int kQuadsPer16>
void scaled_half_avx2(const PanelQ8& p, int half, int64_t kc, const ActBlockQ8* const (&a)[4], int n_tok,
                      float* y, int64_t ldy, int n_rows, bool accumulate) {
  constexpr int kQuads = kGroup / 4;
  const int n_groups = static_cast<int>(kc / kGroup);
  const __m256i start = _mm256_sub_epi32(
      _mm256_setzero_si256(), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&p.block_offset[8 * half])));
  __m256i c[4] = {start, start, start, start};
  __m256 m[4];
  for (int t = 0; t < 4; ++t) m[t] = _mm256_setzero_ps();
  for (int g = 0; g < n_groups; ++g) {
    const int8_t* wq = &p.q[g * kQuads][8 * half][0];
    const int k = g * kGroup;
    // Each row's scale in both 16-bit halves of its 32-bit lane (the row's two pair sums).
    const __m256i sc16 = _mm256_cvtepu16_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(&p.group_scale[g][8 * half])));
    const __m256i sc = _mm256_or_si256(sc16, _mm256_slli_epi32(sc16, 16));
    for (int i = 0; i < kQuads; i += kQuadsPer16) {
      __m256i w[kQuadsPer16];
      for (int j = 0; j < kQuadsPer16; ++j) w[j] = _mm256_load_si256(reinterpret_cast<const __m256i*>(wq + 64 * (i + j)));
      for (int t = 0; t < 4; ++t) {
        __m256i pairs = _mm256_maddubs_epi16(bcast4(a[t]->q + k + 4 * i), w[0]);
        for (int j = 1; j < kQuadsPer16; ++j)
          pairs = _mm256_add_epi16(pairs, _mm256_maddubs_epi16(bcast4(a[t]->q + k + 4 * (i + j)), w[j]));
        c[t] = _mm256_add_epi32(c[t], _mm256_madd_epi16(pairs, sc));
        keep_chain(c[t]);
      }
    }
    if constexpr (kMin) {
      const __m256 mn = _mm256_load_ps(&p.min[g][8 * half]);
      for (int t = 0; t < 4; ++t) m[t] = _mm256_fmadd_ps(_mm256_set1_ps(a[t]->dsum[g]), mn, m[t]);
    }
  }
  const __m256 dw = _mm256_loadu_ps(&p.block_d[8 * half]);
  const int n = n_rows - 8 * half;
  for (int t = 0; t < n_tok; ++t) {
    const __m256 v = _mm256_fmsub_ps(_mm256_set1_ps(a[t]->d[0]), _mm256_mul_ps(dw, _mm256_cvtepi32_ps(c[t])), m[t]);
    store_half(y + t * ldy + 8 * half, v, n, accumulate);
  }
}

// A Q8_0 panel (its q16) against 4 tokens: both halves at once, so that each broadcast pair of
// activations feeds two vpmaddwd (the loop is bound by loads: 0.75 per vpmaddwd, where a half at
// a time takes 1.25). The float sums wait in memory while a group's integer sums take the
// registers.
void wide_avx2(const PanelQ8& p, int64_t kc, const ActBlockQ8* const (&a)[4], int n_tok, float* y,
               int64_t ldy, int n_rows, bool accumulate) {
  constexpr int kGroup = 32;
  const int n_groups = static_cast<int>(kc / kGroup);
  __m256 s[4][2];
  for (int t = 0; t < 4; ++t) s[t][0] = s[t][1] = _mm256_setzero_ps();
  for (int g = 0; g < n_groups; ++g) {
    const int16_t* w16 = &p.q16[g * kGroup / 2][0][0];
    const int k = g * kGroup;
    __m256i c[4][2];
    for (int t = 0; t < 4; ++t) c[t][0] = c[t][1] = _mm256_setzero_si256();
#pragma GCC unroll 16
    for (int i = 0; i < kGroup / 2; ++i) {
      const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w16 + 2 * kQ8Rows * i));
      const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w16 + 2 * kQ8Rows * i + 16));
      for (int t = 0; t < 4; ++t) {
        const __m256i x = bcast4(a[t]->q16 + k + 2 * i);
        c[t][0] = _mm256_add_epi32(c[t][0], _mm256_madd_epi16(w0, x));
        c[t][1] = _mm256_add_epi32(c[t][1], _mm256_madd_epi16(w1, x));
        keep_chain(c[t][0]);
        keep_chain(c[t][1]);
      }
    }
    for (int h = 0; h < 2; ++h) {
      const __m256 sc = _mm256_load_ps(&p.scale[g][8 * h]);
      for (int t = 0; t < 4; ++t)
        s[t][h] = _mm256_fmadd_ps(_mm256_set1_ps(a[t]->d[g]), _mm256_mul_ps(sc, _mm256_cvtepi32_ps(c[t][h])), s[t][h]);
    }
  }
  for (int h = 0; h < 2 && 8 * h < n_rows; ++h)
    for (int t = 0; t < n_tok; ++t) store_half(y + t * ldy + 8 * h, s[t][h], n_rows - 8 * h, accumulate);
}

void micro_avx2(const PanelQ8& p, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok, float* y,
                int64_t ldy, int n_rows, bool accumulate) {
  static_assert(kQ8Rows == 16 && kQ8Tokens == 4, "the kernel is written for 16 rows x 4 tokens");
  // Missing tokens of a partial tile read token 0 and are not stored.
  const ActBlockQ8* const a[4] = {x, n_tok > 1 ? x + ldx : x, n_tok > 2 ? x + 2 * ldx : x,
                                  n_tok > 3 ? x + 3 * ldx : x};
  const auto halves = [&](auto half) {
    half(0);
    if (n_rows > 8) half(1);
  };
  if (p.wide)  // Q8_0
    wide_avx2(p, kc, a, n_tok, y, ldy, n_rows, accumulate);
  else if (!p.block_scale)  // Q4_0
    halves([&](int h) { half_avx2(p, h, kc, a, n_tok, y, ldy, n_rows, accumulate); });
  else if (p.group == 16)  // Q6_K
    halves([&](int h) { scaled_half_avx2<16, false, 2>(p, h, kc, a, n_tok, y, ldy, n_rows, accumulate); });
  else if (p.nibbles)  // Q4_K
    halves([&](int h) { scaled_half_avx2<32, true, 4>(p, h, kc, a, n_tok, y, ldy, n_rows, accumulate); });
  else  // Q5_K
    halves([&](int h) { scaled_half_avx2<32, true, 2>(p, h, kc, a, n_tok, y, ldy, n_rows, accumulate); });
}

// q [input / 4][row][4] -> q16 [input / 2][row][2] for Q8_0 panels (the others do not use it).
void prepare_avx2(PanelQ8& p, int64_t kc) {
  if (!p.wide) return;
  // 4 rows × 4 inputs widened are the 32-bit pairs r0p0 r0p1 r1p0 r1p1 ... r3p1; even pairs first.
  const __m256i pairs_by_parity = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  for (int64_t quad = 0; quad < kc / 4; ++quad)
    for (int r = 0; r < kQ8Rows; r += 4) {
      const __m128i q = _mm_load_si128(reinterpret_cast<const __m128i*>(&p.q[quad][r][0]));
      const __m256i v = _mm256_permutevar8x32_epi32(_mm256_cvtepi8_epi16(q), pairs_by_parity);
      _mm_store_si128(reinterpret_cast<__m128i*>(&p.q16[2 * quad][r][0]), _mm256_castsi256_si128(v));
      _mm_store_si128(reinterpret_cast<__m128i*>(&p.q16[2 * quad + 1][r][0]), _mm256_extracti128_si256(v, 1));
    }
}

}  // namespace

Q8MicroFn q8_micro_avx2() { return micro_avx2; }
Q8PrepareFn q8_prepare_avx2() { return prepare_avx2; }

}  // namespace keel::cpu
