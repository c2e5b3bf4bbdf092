// AVX2/FMA/F16C GEMV kernels: two weight rows at a time against one token, the weights
// dequantized in registers straight from the block layout (no store to memory), f32 FMAs.
//
// Per 8 weights the quantized kernels spend about one shuffle (vpmovzxbd from memory), one
// int→float conversion and one FMA; the per-sub-block scale multiplies a partial sum once per
// 16 or 32 weights, and the K-quant min terms use the activation block sums (dmin·m·Σx, one FMA
// per block). 4-bit kernels use high nibbles as 16·q (x & 0xF0) with the scale divided by 16
// (exact; saves a shift).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "backend/cpu/matmul.h"
#include "backend/cpu/simd_avx2.h"
#include "quant/blocks.h"

namespace keel::cpu {
namespace {

using quant::Type;

inline float f16(quant::f16_bits h) { return _cvtsh_ss(h); }

inline float hsum(__m256 v) { return hsum_avx2(v); }

// 8 bytes at p, zero- or sign-extended to 8 int32 lanes.
inline __m256i load_u8x8(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
inline __m256i load_i8x8(const int8_t* p) {
  return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
inline __m256 to_ps(__m256i v) { return _mm256_cvtepi32_ps(v); }

// ---- float weights --------------------------------------------------------------------------

template <Type kType>
inline __m256 load_w8(const char* row, int64_t k) {
  if constexpr (kType == Type::F32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + k);
  } else if constexpr (kType == Type::F16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k)));
  } else {  // BF16
    const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
  }
}

template <Type kType>
inline float load_w1(const char* row, int64_t k) {
  if constexpr (kType == Type::F32) {
    return reinterpret_cast<const float*>(row)[k];
  } else {
    quant::f16_bits h;
    std::memcpy(&h, row + 2 * k, 2);
    return kType == Type::F16 ? f16(h) : quant::bf16_to_f32(h);
  }
}

template <Type kType>
void dot2_float(const char* row0, const char* row1, int64_t n_in, const float* x, const float*,
                float (&out)[2]) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  int64_t k = 0;
  for (; k + 32 <= n_in; k += 32) {
    const __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
    const __m256 x2 = _mm256_loadu_ps(x + k + 16), x3 = _mm256_loadu_ps(x + k + 24);
    a0 = _mm256_fmadd_ps(load_w8<kType>(row0, k), x0, a0);
    a1 = _mm256_fmadd_ps(load_w8<kType>(row0, k + 8), x1, a1);
    a2 = _mm256_fmadd_ps(load_w8<kType>(row0, k + 16), x2, a2);
    a3 = _mm256_fmadd_ps(load_w8<kType>(row0, k + 24), x3, a3);
    b0 = _mm256_fmadd_ps(load_w8<kType>(row1, k), x0, b0);
    b1 = _mm256_fmadd_ps(load_w8<kType>(row1, k + 8), x1, b1);
    b2 = _mm256_fmadd_ps(load_w8<kType>(row1, k + 16), x2, b2);
    b3 = _mm256_fmadd_ps(load_w8<kType>(row1, k + 24), x3, b3);
  }
  for (; k + 8 <= n_in; k += 8) {
    const __m256 xv = _mm256_loadu_ps(x + k);
    a0 = _mm256_fmadd_ps(load_w8<kType>(row0, k), xv, a0);
    b0 = _mm256_fmadd_ps(load_w8<kType>(row1, k), xv, b0);
  }
  float ta = 0.0f, tb = 0.0f;
  for (; k < n_in; ++k) {
    ta += load_w1<kType>(row0, k) * x[k];
    tb += load_w1<kType>(row1, k) * x[k];
  }
  out[0] = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))) + ta;
  out[1] = hsum(_mm256_add_ps(_mm256_add_ps(b0, b1), _mm256_add_ps(b2, b3))) + tb;
}

// ---- Q8_0, Q4_0 (32-element blocks) ---------------------------------------------------------

inline __m256 q8_0_block(const quant::BlockQ8_0& b, const float* x) {
  __m256 p = _mm256_mul_ps(to_ps(load_i8x8(b.qs)), _mm256_loadu_ps(x));
  p = _mm256_fmadd_ps(to_ps(load_i8x8(b.qs + 8)), _mm256_loadu_ps(x + 8), p);
  p = _mm256_fmadd_ps(to_ps(load_i8x8(b.qs + 16)), _mm256_loadu_ps(x + 16), p);
  return _mm256_fmadd_ps(to_ps(load_i8x8(b.qs + 24)), _mm256_loadu_ps(x + 24), p);
}

// The f16 scales d of up to kScaleChunk consecutive 32-element blocks, as floats. Converting
// them 8 at a time and broadcasting each from memory keeps port 5 (busy with the vpmovsxbd of
// the quants) freer than a per-block vcvtph2ps + vbroadcastss: measured ~10 % faster for Q8_0.
constexpr int64_t kScaleChunk = 32;

template <class Block>
inline void block_scales(const Block* b, int64_t n, float* d) {
  alignas(16) quant::f16_bits h[kScaleChunk];
  for (int64_t i = 0; i < n; ++i) h[i] = b[i].d;
  for (int64_t i = n; i < (n + 7) / 8 * 8; ++i) h[i] = 0;
  for (int64_t i = 0; i < n; i += 8)
    _mm256_store_ps(d + i, _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(h + i))));
}

void dot2_q8_0(const char* row0, const char* row1, int64_t n_in, const float* x, const float*,
               float (&out)[2]) {
  const auto* b0 = reinterpret_cast<const quant::BlockQ8_0*>(row0);
  const auto* b1 = reinterpret_cast<const quant::BlockQ8_0*>(row1);
  const int64_t nb = n_in / quant::QK8_0;
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  alignas(32) float d0[kScaleChunk], d1[kScaleChunk];
  for (int64_t c = 0; c < nb; c += kScaleChunk) {
    const int64_t n = std::min(kScaleChunk, nb - c);
    block_scales(b0 + c, n, d0);
    block_scales(b1 + c, n, d1);
    for (int64_t i = 0; i < n; ++i) {
      const float* xb = x + (c + i) * quant::QK8_0;
      a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(d0 + i), q8_0_block(b0[c + i], xb), a0);
      a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(d1 + i), q8_0_block(b1[c + i], xb), a1);
    }
  }
  out[0] = hsum(a0);
  out[1] = hsum(a1);
}

// Σ q·x over a Q4_0 block with q the raw nibble (0..15); the −8 is applied by the caller.
inline __m256 q4_0_block(const quant::BlockQ4_0& b, const float* x, __m256i low4, __m256i high4) {
  const __m256i a = load_u8x8(b.qs), c = load_u8x8(b.qs + 8);
  __m256 p = _mm256_mul_ps(to_ps(_mm256_and_si256(a, low4)), _mm256_loadu_ps(x));
  p = _mm256_fmadd_ps(to_ps(_mm256_and_si256(c, low4)), _mm256_loadu_ps(x + 8), p);
  __m256 h = _mm256_mul_ps(to_ps(_mm256_and_si256(a, high4)), _mm256_loadu_ps(x + 16));
  h = _mm256_fmadd_ps(to_ps(_mm256_and_si256(c, high4)), _mm256_loadu_ps(x + 24), h);
  return _mm256_fmadd_ps(h, _mm256_set1_ps(1.0f / 16), p);  // high nibbles came as 16·q
}

void dot2_q4_0(const char* row0, const char* row1, int64_t n_in, const float* x, const float* xsum,
               float (&out)[2]) {
  const auto* b0 = reinterpret_cast<const quant::BlockQ4_0*>(row0);
  const auto* b1 = reinterpret_cast<const quant::BlockQ4_0*>(row1);
  const int64_t nb = n_in / quant::QK4_0;
  const __m256i low4 = _mm256_set1_epi32(0x0F), high4 = _mm256_set1_epi32(0xF0);
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  float m0 = 0.0f, m1 = 0.0f;  // Σ_blocks d·Σx, for the −8 offset
  alignas(32) float d0[kScaleChunk], d1[kScaleChunk];
  for (int64_t c = 0; c < nb; c += kScaleChunk) {
    const int64_t n = std::min(kScaleChunk, nb - c);
    block_scales(b0 + c, n, d0);
    block_scales(b1 + c, n, d1);
    for (int64_t i = 0; i < n; ++i) {
      const float* xb = x + (c + i) * quant::QK4_0;
      a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(d0 + i), q4_0_block(b0[c + i], xb, low4, high4), a0);
      a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(d1 + i), q4_0_block(b1[c + i], xb, low4, high4), a1);
      m0 += d0[i] * xsum[c + i];
      m1 += d1[i] * xsum[c + i];
    }
  }
  out[0] = hsum(a0) - 8.0f * m0;
  out[1] = hsum(a1) - 8.0f * m1;
}

// ---- Q4_K (256-element blocks, 8 sub-blocks with 6-bit scale and min) ------------------

// The 8 scales d·sc and mins dmin·m of a block, unpacked from the 12-byte field (quants.md 3.3)
// with 32-bit operations: bytes 0-3 low 6 bits are sc0-3, bytes 4-7 low 6 bits m0-3; sc4-7 are
// the low nibbles of bytes 8-11 plus the top 2 bits of bytes 0-3, m4-7 the high nibbles plus
// the top 2 bits of bytes 4-7.
inline void k4_scales(const uint8_t* packed, float d, float dmin, __m256* scale, __m256* min) {
  uint32_t u0, u1, u2;
  std::memcpy(&u0, packed, 4);
  std::memcpy(&u1, packed + 4, 4);
  std::memcpy(&u2, packed + 8, 4);
  const uint32_t six = 0x3F3F3F3F, nib = 0x0F0F0F0F, two = 0x03030303;
  const uint64_t sc = (u0 & six) | (uint64_t{(u2 & nib) | (((u0 >> 6) & two) << 4)} << 32);
  const uint64_t mn = (u1 & six) | (uint64_t{((u2 >> 4) & nib) | (((u1 >> 6) & two) << 4)} << 32);
  *scale = _mm256_mul_ps(_mm256_set1_ps(d), to_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(sc)))));
  *min = _mm256_mul_ps(_mm256_set1_ps(dmin), to_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(mn)))));
}

// Odd sub-blocks (high nibbles) come as 16·q: their scales are divided by 16.
inline __m256 odd_scales_over_16(__m256 scale) {
  return _mm256_mul_ps(scale, _mm256_setr_ps(1, 1.0f / 16, 1, 1.0f / 16, 1, 1.0f / 16, 1, 1.0f / 16));
}

void dot2_q4_k(const char* row0, const char* row1, int64_t n_in, const float* x, const float* xsum,
             float (&out)[2]) {
  using Block = quant::BlockQ4_K;
  const Block* blk[2] = {reinterpret_cast<const Block*>(row0), reinterpret_cast<const Block*>(row1)};
  const __m256i low4 = _mm256_set1_epi32(0x0F), high4 = _mm256_set1_epi32(0xF0);
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t ib = 0; ib < n_in / quant::QK_K; ++ib, x += quant::QK_K, xsum += 8) {
    alignas(32) float scales[2][8];
    for (int r = 0; r < 2; ++r) {
      __m256 sc, mn;
      k4_scales(blk[r][ib].scales, f16(blk[r][ib].d), f16(blk[r][ib].dmin), &sc, &mn);
      _mm256_store_ps(scales[r], odd_scales_over_16(sc));
      acc[r] = _mm256_fnmadd_ps(mn, _mm256_loadu_ps(xsum), acc[r]);
    }
    for (int j = 0; j < 4; ++j) {
      __m256 lo[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()}, hi[2] = {lo[0], lo[0]};
      for (int i = 0; i < 4; ++i) {
        const __m256 xl = _mm256_loadu_ps(x + 64 * j + 8 * i);
        const __m256 xh = _mm256_loadu_ps(x + 64 * j + 32 + 8 * i);
        for (int r = 0; r < 2; ++r) {
          const __m256i a = load_u8x8(blk[r][ib].qs + 32 * j + 8 * i);
          lo[r] = _mm256_fmadd_ps(to_ps(_mm256_and_si256(a, low4)), xl, lo[r]);
          hi[r] = _mm256_fmadd_ps(to_ps(_mm256_and_si256(a, high4)), xh, hi[r]);
        }
      }
      for (int r = 0; r < 2; ++r) {
        acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(&scales[r][2 * j]), lo[r], acc[r]);
        acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(&scales[r][2 * j + 1]), hi[r], acc[r]);
      }
    }
  }
  out[0] = hsum(acc[0]);
  out[1] = hsum(acc[1]);
}

// ---- Q5_K and Q6_K: quants unpacked to bytes with 32-byte operations first --------------------
//
// Assembling 5- or 6-bit values in int32 lanes costs several shifts per 8 weights; in the byte
// domain one 32-byte operation serves 32 weights. The 256 unpacked bytes go to a stack buffer
// (L1) and are read back with vpmovzxbd / vpmovsxbd, as the 4-bit kernels read the block.

// q[e] = 5-bit quant of element e (0..31), in element order.
inline void unpack_q5_k(const quant::BlockQ5_K& b, uint8_t* q) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh));
  for (int j = 0; j < 4; ++j) {
    const __m256i qs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * j));
    const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * j), one), 4);
    const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * j + 1), one), 4);
    _mm256_store_si256(reinterpret_cast<__m256i*>(q + 64 * j),
                       _mm256_or_si256(_mm256_and_si256(qs, low4), h0));
    _mm256_store_si256(reinterpret_cast<__m256i*>(q + 64 * j + 32),
                       _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qs, 4), low4), h1));
  }
}

// q[e] = 6-bit quant of element e minus 32 (−32..31), in element order.
inline void unpack_q6_k(const quant::BlockQ6_K& b, int8_t* q) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), three = _mm256_set1_epi8(3), bias = _mm256_set1_epi8(32);
  for (int half = 0; half < 2; ++half) {
    const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.ql + 64 * half));
    const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.ql + 64 * half + 32));
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh + 32 * half));
    const __m256i v[4] = {
        _mm256_or_si256(_mm256_and_si256(ql0, low4), _mm256_slli_epi16(_mm256_and_si256(qh, three), 4)),
        _mm256_or_si256(_mm256_and_si256(ql1, low4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), three), 4)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), three), 4)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), three), 4)),
    };
    for (int m = 0; m < 4; ++m)
      _mm256_store_si256(reinterpret_cast<__m256i*>(q + 128 * half + 32 * m), _mm256_sub_epi8(v[m], bias));
  }
}

void dot2_q5_k(const char* row0, const char* row1, int64_t n_in, const float* x, const float* xsum,
               float (&out)[2]) {
  const quant::BlockQ5_K* blk[2] = {reinterpret_cast<const quant::BlockQ5_K*>(row0),
                                    reinterpret_cast<const quant::BlockQ5_K*>(row1)};
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t ib = 0; ib < n_in / quant::QK_K; ++ib, x += quant::QK_K, xsum += 8) {
    alignas(32) float scales[2][8];
    alignas(32) uint8_t q[2][quant::QK_K];
    for (int r = 0; r < 2; ++r) {
      __m256 sc, mn;
      k4_scales(blk[r][ib].scales, f16(blk[r][ib].d), f16(blk[r][ib].dmin), &sc, &mn);
      _mm256_store_ps(scales[r], sc);
      acc[r] = _mm256_fnmadd_ps(mn, _mm256_loadu_ps(xsum), acc[r]);
      unpack_q5_k(blk[r][ib], q[r]);
    }
    for (int s = 0; s < 8; ++s) {
      const float* xs = x + 32 * s;
      const __m256 x0 = _mm256_loadu_ps(xs), x1 = _mm256_loadu_ps(xs + 8);
      const __m256 x2 = _mm256_loadu_ps(xs + 16), x3 = _mm256_loadu_ps(xs + 24);
      for (int r = 0; r < 2; ++r) {
        const uint8_t* qs = q[r] + 32 * s;
        __m256 p = _mm256_mul_ps(to_ps(load_u8x8(qs)), x0);
        p = _mm256_fmadd_ps(to_ps(load_u8x8(qs + 8)), x1, p);
        p = _mm256_fmadd_ps(to_ps(load_u8x8(qs + 16)), x2, p);
        p = _mm256_fmadd_ps(to_ps(load_u8x8(qs + 24)), x3, p);
        acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(&scales[r][s]), p, acc[r]);
      }
    }
  }
  out[0] = hsum(acc[0]);
  out[1] = hsum(acc[1]);
}

void dot2_q6_k(const char* row0, const char* row1, int64_t n_in, const float* x, const float*,
               float (&out)[2]) {
  const quant::BlockQ6_K* blk[2] = {reinterpret_cast<const quant::BlockQ6_K*>(row0),
                                    reinterpret_cast<const quant::BlockQ6_K*>(row1)};
  __m256 acc[2][2] = {{_mm256_setzero_ps(), _mm256_setzero_ps()}, {_mm256_setzero_ps(), _mm256_setzero_ps()}};
  for (int64_t ib = 0; ib < n_in / quant::QK_K; ++ib, x += quant::QK_K) {
    alignas(32) float scales[2][16];
    alignas(32) int8_t q[2][quant::QK_K];
    for (int r = 0; r < 2; ++r) {
      const __m256 d = _mm256_set1_ps(f16(blk[r][ib].d));
      _mm256_store_ps(scales[r], _mm256_mul_ps(d, to_ps(load_i8x8(blk[r][ib].scales))));
      _mm256_store_ps(scales[r] + 8, _mm256_mul_ps(d, to_ps(load_i8x8(blk[r][ib].scales + 8))));
      unpack_q6_k(blk[r][ib], q[r]);
    }
    for (int s = 0; s < 16; s += 2) {  // two sub-blocks of 16 per step
      const float* xs = x + 16 * s;
      const __m256 x0 = _mm256_loadu_ps(xs), x1 = _mm256_loadu_ps(xs + 8);
      const __m256 x2 = _mm256_loadu_ps(xs + 16), x3 = _mm256_loadu_ps(xs + 24);
      for (int r = 0; r < 2; ++r) {
        const int8_t* qs = q[r] + 16 * s;
        const __m256 p0 = _mm256_fmadd_ps(to_ps(load_i8x8(qs + 8)), x1, _mm256_mul_ps(to_ps(load_i8x8(qs)), x0));
        const __m256 p1 = _mm256_fmadd_ps(to_ps(load_i8x8(qs + 24)), x3, _mm256_mul_ps(to_ps(load_i8x8(qs + 16)), x2));
        acc[r][0] = _mm256_fmadd_ps(_mm256_broadcast_ss(&scales[r][s]), p0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(_mm256_broadcast_ss(&scales[r][s + 1]), p1, acc[r][1]);
      }
    }
  }
  out[0] = hsum(_mm256_add_ps(acc[0][0], acc[0][1]));
  out[1] = hsum(_mm256_add_ps(acc[1][0], acc[1][1]));
}

// ---- the row loop shared by every type ------------------------------------------------------

// Software prefetch of the next row pair: measured +40-65 % GB/s for cold weights on one
// thread, +20-50 % on two (the hardware prefetcher alone keeps too few lines in flight).
constexpr bool kPrefetch = true;

using Dot2Fn = void (*)(const char*, const char*, int64_t, const float*, const float*, float (&)[2]);

// Rows in blocks of 16 (a few KiB, stay in L1) so that extra tokens re-read them from cache.
template <Dot2Fn kDot2>
void gemv(const void* w, size_t row_bytes, int64_t n_in, int64_t n_rows, const float* x,
          int64_t ldx, const float* xsum, int64_t n_tok, float* y, int64_t ldy) {
  constexpr int64_t kRowBlock = 16;
  const int64_t n_sums = n_in / kSumBlock;
  for (int64_t r0 = 0; r0 < n_rows; r0 += kRowBlock) {
    const int64_t r_end = std::min(n_rows, r0 + kRowBlock);
    for (int64_t t = 0; t < n_tok; ++t) {
      for (int64_t r = r0; r < r_end; r += 2) {
        const char* row0 = static_cast<const char*>(w) + static_cast<size_t>(r) * row_bytes;
        if (kPrefetch && t == 0) {  // the next row pair, while this one is computed
          const char* next = row0 + 2 * row_bytes;
          const int64_t rows = std::clamp<int64_t>(n_rows - r - 2, 0, 2);
          const size_t bytes = static_cast<size_t>(rows) * row_bytes;
          for (size_t off = 0; off < bytes; off += 64) _mm_prefetch(next + off, _MM_HINT_T0);
        }
        const bool two = r + 1 < r_end;
        float out[2];
        kDot2(row0, two ? row0 + row_bytes : row0, n_in, x + t * ldx, xsum + t * n_sums, out);
        y[t * ldy + r] = out[0];
        if (two) y[t * ldy + r + 1] = out[1];
      }
    }
  }
}

}  // namespace

GemvFn gemv_kernel_avx2(Type type) {
  switch (type) {
    case Type::F32: return gemv<dot2_float<Type::F32>>;
    case Type::F16: return gemv<dot2_float<Type::F16>>;
    case Type::BF16: return gemv<dot2_float<Type::BF16>>;
    case Type::Q8_0: return gemv<dot2_q8_0>;
    case Type::Q4_0: return gemv<dot2_q4_0>;
    case Type::Q4_K: return gemv<dot2_q4_k>;
    case Type::Q5_K: return gemv<dot2_q5_k>;
    case Type::Q6_K: return gemv<dot2_q6_k>;
    default: return nullptr;
  }
}

}  // namespace keel::cpu
