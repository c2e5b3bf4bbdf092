// The x86 integer GEMV of the fast path (matmul_q8.h), written once and compiled three times: by
// matmul_q8_gemv_avx2.cpp (AVX2), matmul_q8_gemv_avxvnni.cpp (AVX-VNNI: the VNNI kernels'
// instructions in their VEX form), each with its own instruction-set flags and a Dot policy for
// the one instruction that differs, and matmul_q8_gemv_vnni.cpp (AVX-512 VNNI: the 512-bit twins
// at the end, the VNNI kernels' results on vectors twice as wide).
// Everything here has internal linkage: each file gets its own copy, compiled for its own ISA (an
// inline function shared between them could be linked from the AVX-512 file into AVX2 code).
//
// A weight block's quants are unpacked into bytes in registers once and multiplied with each of
// up to 4 tokens' activations (u8 weights × s8 activations → int32 lanes of 4 products each; the
// row loop is matmul_q8_gemv_rows.h). The K-quant sub-block scales multiply in integers (AVX2:
// vpmaddwd with the scale instead of ones; VNNI: vpmulld), each broadcast from one vector of the
// block's scales by a shuffle, so a 256-input block costs one int→float conversion and one FMA
// per token. Q4_0 and Q8_0 quants are signed: |w| times x with w's sign. Every token's
// result comes from the same instructions whatever the number of tokens (batch invariance).
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "backend/cpu/matmul_q8.h"
#include "backend/cpu/matmul_q8_gemv_rows.h"
#include "quant/blocks.h"

namespace keel::cpu {
namespace {

using quant::Type;

// AVX2: vpmaddubsw makes 16-bit sums of 2 products (|sum| <= 2·128·127 < 2^15 for every weight
// type here), vpmaddwd adds pairs of them into int32 while multiplying by ones or a scale.
struct DotAvx2 {
  // Σ of the 4 products u8 w × s8 x of each 32-bit lane.
  static __m256i dot(__m256i w, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
  }
  // dot(w, x) times the scale of each lane (a vector made by the two functions below).
  static __m256i dot_scaled(__m256i w, __m256i x, __m256i scale) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), scale);
  }
  // A block's 8 unsigned (Q4_K/Q5_K) or 16 signed (Q6_K) byte scales, kept as 16-bit lanes.
  static __m256i widen_u8(uint64_t sc8) {
    return _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<int64_t>(sc8))));
  }
  static __m256i widen_s8(const int8_t* sc16) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc16)));
  }
  // Scale g of widen_u8 in every lane.
  static __m256i scale(__m256i widened, int g) {
    return _mm256_shuffle_epi8(widened, _mm256_set1_epi16(static_cast<int16_t>(0x0100 + 0x0202 * g)));
  }
  // Scale g (even) of widen_s8 in the lanes of inputs [0, 16), g + 1 in those of [16, 32).
  static __m256i scale_pair(__m256i widened, int g) {
    const __m256i both = _mm256_permutevar8x32_epi32(widened, _mm256_set1_epi32(g / 2));  // (g, g+1) pairs
    return _mm256_shuffle_epi8(both, _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,
                                                      2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3));
  }
};

#if (defined(__AVX512VNNI__) && defined(__AVX512VL__)) || defined(__AVXVNNI__)
// AVX-512 VNNI, or AVX-VNNI (its VEX form, the same 256-bit operation): vpdpbusd adds the 4
// products into int32 directly (no 16-bit step).
inline __m256i dpbusd(__m256i acc, __m256i w, __m256i x) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(acc, w, x);
#else
  return _mm256_dpbusd_avx_epi32(acc, w, x);
#endif
}
struct DotVnni {
  static __m256i dot(__m256i w, __m256i x) { return dpbusd(_mm256_setzero_si256(), w, x); }
  static __m256i dot_scaled(__m256i w, __m256i x, __m256i scale) { return _mm256_mullo_epi32(dot(w, x), scale); }
  // The scales as 32-bit lanes: 8 of Q4_K/Q5_K; 16 of Q6_K, in two vectors.
  struct Wide16 {
    __m256i lo, hi;
  };
  static __m256i widen_u8(uint64_t sc8) { return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(sc8))); }
  static Wide16 widen_s8(const int8_t* sc16) {
    return {_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc16))),
            _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc16 + 8)))};
  }
  static __m256i scale(__m256i widened, int g) { return _mm256_permutevar8x32_epi32(widened, _mm256_set1_epi32(g)); }
  static __m256i scale_pair(const Wide16& widened, int g) {
    const int i = g % 8;
    return _mm256_permutevar8x32_epi32(g < 8 ? widened.lo : widened.hi, _mm256_setr_epi32(i, i, i, i, i + 1, i + 1, i + 1, i + 1));
  }
};
#endif

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float f16(quant::f16_bits h) { return _cvtsh_ss(h); }

inline __m256i load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// ---- one row against NT tokens: out[t] = Σ_k W[k] · xq_t[k] ----------------------------------
// a: token t's activation blocks start at a + t * lda.

// Q4_0 and Q8_0: 32 signed quants per block (types, not function pointers: a pointer to a
// function returning __m256i as a template argument drops the vector type's attributes).
struct Q8_0Quants {
  static __m256i get(const quant::BlockQ8_0& b) { return load32(b.qs); }
};
struct Q4_0Quants {
  static __m256i get(const quant::BlockQ4_0& b) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
    const __m256i nibbles = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0F));
    return _mm256_sub_epi8(nibbles, _mm256_set1_epi8(8));
  }
};

// acc[t] += (d_w · d_x) · Σ_{k < 32} w_k · x_k for the block i of 32 inputs.
template <class Dot, int NT, class Block, class Quants>
inline void block_q32(const Block& b, int64_t i, const GemvActQ8* a, int64_t lda, __m256 (&acc)[NT]) {
  const __m256i w = Quants::get(b);
  const __m256i w_abs = _mm256_abs_epi8(w);  // -128 gives 0x80: 128 as the unsigned operand
  const float dw = f16(b.d);
  const int64_t blk = i / 8;
  const int g = static_cast<int>(i % 8);
  for (int t = 0; t < NT; ++t) {
    const GemvActQ8& x = a[t * lda + blk];
    const __m256i c = Dot::dot(w_abs, _mm256_sign_epi8(load32(x.q + 32 * g), w));
    acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x.d[g]), _mm256_cvtepi32_ps(c), acc[t]);
  }
}

// Blocks in pairs with an accumulator each: one FMA chain per token would bound a block's time by
// the FMA latency.
template <class Dot, int NT, class Block, class Quants>
void row_q32(const char* row, int64_t n_in, const GemvActQ8* a, int64_t lda, float* out) {
  const auto* b = reinterpret_cast<const Block*>(row);
  const int64_t nb = n_in / 32;
  __m256 even[NT], odd[NT];
  for (int t = 0; t < NT; ++t) even[t] = odd[t] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    block_q32<Dot, NT, Block, Quants>(b[i], i, a, lda, even);
    block_q32<Dot, NT, Block, Quants>(b[i + 1], i + 1, a, lda, odd);
  }
  if (i < nb) block_q32<Dot, NT, Block, Quants>(b[i], i, a, lda, even);
  for (int t = 0; t < NT; ++t) out[t] = hsum(_mm256_add_ps(even[t], odd[t]));
}

// Two rows against one token (decode), their blocks interleaved: two streams of weight loads in
// flight. Each row's sum is row_q32's for one token (the same accumulators, in the same order).
template <class Dot, class Block, class Quants>
void rows2_q32(const char* row0, const char* row1, int64_t n_in, const GemvActQ8* a, float* out) {
  const auto* b0 = reinterpret_cast<const Block*>(row0);
  const auto* b1 = reinterpret_cast<const Block*>(row1);
  const int64_t nb = n_in / 32;
  __m256 even0[1] = {_mm256_setzero_ps()}, odd0[1] = {_mm256_setzero_ps()};
  __m256 even1[1] = {_mm256_setzero_ps()}, odd1[1] = {_mm256_setzero_ps()};
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    block_q32<Dot, 1, Block, Quants>(b0[i], i, a, 0, even0);
    block_q32<Dot, 1, Block, Quants>(b1[i], i, a, 0, even1);
    block_q32<Dot, 1, Block, Quants>(b0[i + 1], i + 1, a, 0, odd0);
    block_q32<Dot, 1, Block, Quants>(b1[i + 1], i + 1, a, 0, odd1);
  }
  if (i < nb) {
    block_q32<Dot, 1, Block, Quants>(b0[i], i, a, 0, even0);
    block_q32<Dot, 1, Block, Quants>(b1[i], i, a, 0, even1);
  }
  out[0] = hsum(_mm256_add_ps(even0[0], odd0[0]));
  out[1] = hsum(_mm256_add_ps(even1[0], odd1[0]));
}

// Q4_K / Q5_K: the 8 6-bit scales and mins of a block as bytes (quants.md 3.3), unpacked with
// 32-bit operations: bytes 0-3 low 6 bits are sc0-3, bytes 4-7 low 6 bits m0-3; sc4-7 are the
// low nibbles of bytes 8-11 plus the top 2 bits of bytes 0-3, m4-7 the high nibbles plus the top
// 2 bits of bytes 4-7.
struct K4Scales {
  uint64_t sc;  // byte g: scale of sub-block g
  uint64_t m;   // byte g: min of sub-block g
};
inline K4Scales k4_scales(const uint8_t* packed) {
  uint32_t u0, u1, u2;
  std::memcpy(&u0, packed, 4);
  std::memcpy(&u1, packed + 4, 4);
  std::memcpy(&u2, packed + 8, 4);
  const uint32_t six = 0x3F3F3F3F, nib = 0x0F0F0F0F, two = 0x03030303;
  return {(u0 & six) | (uint64_t{(u2 & nib) | (((u0 >> 6) & two) << 4)} << 32),
          (u1 & six) | (uint64_t{((u2 >> 4) & nib) | (((u1 >> 6) & two) << 4)} << 32)};
}

// The 64 unsigned quants of sub-blocks 2j and 2j+1 of a Q4_K / Q5_K block.
struct Q4KQuants {
  static void get(const quant::BlockQ4_K& b, __m256i, int j, __m256i& lo, __m256i& hi) {
    const __m256i raw = load32(b.qs + 32 * j), low4 = _mm256_set1_epi8(0x0F);
    lo = _mm256_and_si256(raw, low4);
    hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
  }
};
struct Q5KQuants {
  // qh: the block's 32 high-bit bytes (bit 2j of byte l: input 64j + l; bit 2j+1: 64j + 32 + l).
  static void get(const quant::BlockQ5_K& b, __m256i qh, int j, __m256i& lo, __m256i& hi) {
    const __m256i raw = load32(b.qs + 32 * j), low4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * j), one), 4);
    const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * j + 1), one), 4);
    lo = _mm256_or_si256(_mm256_and_si256(raw, low4), h0);
    hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 4), low4), h1);
  }
};
inline __m256i high_bits(const quant::BlockQ4_K&) { return _mm256_setzero_si256(); }
inline __m256i high_bits(const quant::BlockQ5_K& b) { return load32(b.qh); }

// A Q4_K / Q5_K block's float steps, once its integer sums isum[t] (8 lanes a token) are made:
// acc[t] += d · d_x · isum[t] − mins · dsum_x.
template <int NT, class Block>
inline void k4_block_floats(const Block& blk, const K4Scales& s, const GemvActQ8* a, int64_t lda, int64_t ib,
                            const __m256i (&isum)[NT], __m256 (&acc)[NT]) {
  const float d = f16(blk.d);
  const __m256 mins = _mm256_mul_ps(_mm256_set1_ps(f16(blk.dmin)),
                                    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(s.m)))));
  for (int t = 0; t < NT; ++t) {
    const GemvActQ8& x = a[t * lda + ib];
    acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * x.d[0]), _mm256_cvtepi32_ps(isum[t]), acc[t]);
    acc[t] = _mm256_fnmadd_ps(mins, _mm256_loadu_ps(x.dsum), acc[t]);
  }
}

template <class Dot, int NT, class Block, class Quants>
void row_k4(const char* row, int64_t n_in, const GemvActQ8* a, int64_t lda, float* out) {
  const auto* b = reinterpret_cast<const Block*>(row);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t ib = 0; ib < n_in / quant::QK_K; ++ib) {
    const Block& blk = b[ib];
    const K4Scales s = k4_scales(blk.scales);
    const auto scales = Dot::widen_u8(s.sc);
    const __m256i qh = high_bits(blk);
    __m256i isum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = _mm256_setzero_si256();
    for (int j = 0; j < 4; ++j) {
      __m256i lo, hi;
      Quants::get(blk, qh, j, lo, hi);
      const __m256i sc_lo = Dot::scale(scales, 2 * j), sc_hi = Dot::scale(scales, 2 * j + 1);
      for (int t = 0; t < NT; ++t) {
        const int8_t* x = a[t * lda + ib].q + 64 * j;
        isum[t] = _mm256_add_epi32(isum[t], Dot::dot_scaled(lo, load32(x), sc_lo));
        isum[t] = _mm256_add_epi32(isum[t], Dot::dot_scaled(hi, load32(x + 32), sc_hi));
      }
    }
    k4_block_floats<NT>(blk, s, a, lda, ib, isum, acc);
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]);
}

// Q6_K: the 4 × 32 unsigned 6-bit quants of half n (inputs 128n + 32m + l, m < 4) of a block.
inline void q6_k_quants(const quant::BlockQ6_K& b, int n, __m256i (&v)[4]) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), three = _mm256_set1_epi8(3);
  const __m256i ql0 = load32(b.ql + 64 * n), ql1 = load32(b.ql + 64 * n + 32), qh = load32(b.qh + 32 * n);
  const auto high = [&](int shift) {
    return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, shift), three), 4);
  };
  v[0] = _mm256_or_si256(_mm256_and_si256(ql0, low4), high(0));
  v[1] = _mm256_or_si256(_mm256_and_si256(ql1, low4), high(2));
  v[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4), high(4));
  v[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4), high(6));
}

// A Q6_K block's float steps, once its integer sums isum[t] (8 lanes a token) are made. The stored
// quants are 32 above the signed ones: 32 · Σ_g sc_g · qsum_g comes off first.
template <int NT>
inline void q6_k_block_floats(const quant::BlockQ6_K& blk, const GemvActQ8* a, int64_t lda, int64_t ib,
                              const __m256i (&isum)[NT], __m256 (&acc)[NT]) {
  const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.scales)));
  const float d = f16(blk.d);
  for (int t = 0; t < NT; ++t) {
    const GemvActQ8& x = a[t * lda + ib];
    const __m256i offset = _mm256_madd_epi16(sc16, load32(x.qsum));
    const __m256i sum = _mm256_sub_epi32(isum[t], _mm256_slli_epi32(offset, 5));
    acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * x.d[0]), _mm256_cvtepi32_ps(sum), acc[t]);
  }
}

template <class Dot, int NT>
void row_q6_k(const char* row, int64_t n_in, const GemvActQ8* a, int64_t lda, float* out) {
  const auto* b = reinterpret_cast<const quant::BlockQ6_K*>(row);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t ib = 0; ib < n_in / quant::QK_K; ++ib) {
    const quant::BlockQ6_K& blk = b[ib];
    const auto scales = Dot::widen_s8(blk.scales);
    __m256i isum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = _mm256_setzero_si256();
    for (int n = 0; n < 2; ++n) {
      __m256i v[4];
      q6_k_quants(blk, n, v);
      for (int m = 0; m < 4; ++m) {
        const int g = 8 * n + 2 * m;  // the scales of inputs 128n + 32m + [0, 16) and [16, 32)
        const __m256i sc = Dot::scale_pair(scales, g);
        for (int t = 0; t < NT; ++t)
          isum[t] = _mm256_add_epi32(isum[t], Dot::dot_scaled(v[m], load32(a[t * lda + ib].q + 128 * n + 32 * m), sc));
      }
    }
    q6_k_block_floats<NT>(blk, a, lda, ib, isum, acc);
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]);
}

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
// ---- 512-bit twins (the AVX-512 VNNI file) ------------------------------------------------------
// Each zmm holds two of the 256-bit kernels' vectors: two Q8_0/Q4_0 blocks, or two sub-blocks of a
// K-quant block. The integer sums are the 256-bit kernels' (folded back to 8 lanes exactly before
// any float step), the float steps the same operations on the same values in the same order: the
// results are those kernels' bit for bit, for about half the instructions per weight byte. Decode
// is not memory bound here: on a Zen 5 VM the 256-bit kernels read hot weights at 13-17 GB/s a
// thread (K-quants) where an f32 GEMV streams 50 GB/s from memory on two.

inline __m512i dpbusd512(__m512i w, __m512i x) { return _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, x); }
// The 8 lanes of the low half plus those of the high half.
inline __m256i fold(__m512i v) { return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1)); }
inline __m512i halves(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }
// 16-bit lanes: a in the low 256 bits, b in the high.
inline __m512i split16(int16_t a, int16_t b) { return halves(_mm256_set1_epi16(a), _mm256_set1_epi16(b)); }

// acc = [even | odd] += the blocks i (even) and i + 1 of 32 inputs, each as block_q32 adds it.
template <int NT, class Block, class Quants>
inline void blocks2_q32(const Block& b0, const Block& b1, int64_t i, const GemvActQ8* a, int64_t lda,
                        __m512 (&acc)[NT]) {
  const __m512i w = halves(Quants::get(b0), Quants::get(b1));
  const __m512i w_abs = _mm512_abs_epi8(w);
  const __mmask64 negative = _mm512_movepi8_mask(w);
  // dw_i and dw_{i+1} as block_q32 converts them; each times its token's group scale below.
  const __m128 dw = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(b0.d | (uint32_t{b1.d} << 16))));
  const __m512i pick = halves(_mm256_setzero_si256(), _mm256_set1_epi32(1));
  const int64_t blk = i / 8;
  const int g = static_cast<int>(i % 8);
  for (int t = 0; t < NT; ++t) {
    const GemvActQ8& x = a[t * lda + blk];
    const __m512i xq = _mm512_loadu_si512(x.q + 32 * g);
    const __m512i c = dpbusd512(w_abs, _mm512_mask_sub_epi8(xq, negative, _mm512_setzero_si512(), xq));
    double dx;
    std::memcpy(&dx, x.d + g, sizeof dx);  // the groups g and g + 1
    const __m128 scale = _mm_mul_ps(dw, _mm_castpd_ps(_mm_set_sd(dx)));
    acc[t] = _mm512_fmadd_ps(_mm512_permutexvar_ps(pick, _mm512_castps128_ps512(scale)), _mm512_cvtepi32_ps(c), acc[t]);
  }
}

template <int NT, class Block, class Quants>
void row_q32_512(const char* row, int64_t n_in, const GemvActQ8* a, int64_t lda, float* out) {
  const auto* b = reinterpret_cast<const Block*>(row);
  const int64_t nb = n_in / 32;
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) blocks2_q32<NT, Block, Quants>(b[i], b[i + 1], i, a, lda, acc);
  __m256 even[NT], odd[NT];
  for (int t = 0; t < NT; ++t) {
    even[t] = _mm512_castps512_ps256(acc[t]);
    odd[t] = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[t]), 1));
  }
  if (i < nb) block_q32<DotVnni, NT, Block, Quants>(b[i], i, a, lda, even);
  for (int t = 0; t < NT; ++t) out[t] = hsum(_mm256_add_ps(even[t], odd[t]));
}

// Two rows against one token, their block pairs interleaved (rows2_q32's order per row).
template <class Block, class Quants>
void rows2_q32_512(const char* row0, const char* row1, int64_t n_in, const GemvActQ8* a, float* out) {
  const auto* b0 = reinterpret_cast<const Block*>(row0);
  const auto* b1 = reinterpret_cast<const Block*>(row1);
  const int64_t nb = n_in / 32;
  __m512 acc0[1] = {_mm512_setzero_ps()}, acc1[1] = {_mm512_setzero_ps()};
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    blocks2_q32<1, Block, Quants>(b0[i], b0[i + 1], i, a, 0, acc0);
    blocks2_q32<1, Block, Quants>(b1[i], b1[i + 1], i, a, 0, acc1);
  }
  __m256 even0[1] = {_mm512_castps512_ps256(acc0[0])}, even1[1] = {_mm512_castps512_ps256(acc1[0])};
  const __m256 odd0 = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc0[0]), 1));
  const __m256 odd1 = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc1[0]), 1));
  if (i < nb) {
    block_q32<DotVnni, 1, Block, Quants>(b0[i], i, a, 0, even0);
    block_q32<DotVnni, 1, Block, Quants>(b1[i], i, a, 0, even1);
  }
  out[0] = hsum(_mm256_add_ps(even0[0], odd0));
  out[1] = hsum(_mm256_add_ps(even1[0], odd1));
}

// The 64 unsigned quants of sub-blocks 2j (low half) and 2j + 1 (high half) of a Q4_K / Q5_K block.
struct Q4KQuants512 {
  static __m512i get(const quant::BlockQ4_K& b, __m512i, int j) {
    const __m512i raw = _mm512_broadcast_i64x4(load32(b.qs + 32 * j));
    return _mm512_and_si512(_mm512_srlv_epi16(raw, split16(0, 4)), _mm512_set1_epi8(0x0F));
  }
};
struct Q5KQuants512 {
  static __m512i get(const quant::BlockQ5_K& b, __m512i qh, int j) {
    const __m512i raw = _mm512_broadcast_i64x4(load32(b.qs + 32 * j));
    const __m512i low = _mm512_and_si512(_mm512_srlv_epi16(raw, split16(0, 4)), _mm512_set1_epi8(0x0F));
    const __m512i bit = _mm512_and_si512(_mm512_srlv_epi16(qh, split16(static_cast<int16_t>(2 * j), static_cast<int16_t>(2 * j + 1))),
                                         _mm512_set1_epi8(1));
    return _mm512_or_si512(low, _mm512_slli_epi16(bit, 4));
  }
};
inline __m512i high_bits512(const quant::BlockQ4_K&) { return _mm512_setzero_si512(); }
inline __m512i high_bits512(const quant::BlockQ5_K& b) { return _mm512_broadcast_i64x4(load32(b.qh)); }

template <int NT, class Block, class Quants>
void row_k4_512(const char* row, int64_t n_in, const GemvActQ8* a, int64_t lda, float* out) {
  const auto* b = reinterpret_cast<const Block*>(row);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t ib = 0; ib < n_in / quant::QK_K; ++ib) {
    const Block& blk = b[ib];
    const K4Scales s = k4_scales(blk.scales);
    const __m512i scales = _mm512_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(s.sc)));
    const __m512i qh = high_bits512(blk);
    __m512i isum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = _mm512_setzero_si512();
    for (int j = 0; j < 4; ++j) {
      const __m512i w = Quants::get(blk, qh, j);
      const __m512i sc = _mm512_permutexvar_epi32(halves(_mm256_set1_epi32(2 * j), _mm256_set1_epi32(2 * j + 1)), scales);
      for (int t = 0; t < NT; ++t)
        isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(dpbusd512(w, _mm512_loadu_si512(a[t * lda + ib].q + 64 * j)), sc));
    }
    __m256i folded[NT];
    for (int t = 0; t < NT; ++t) folded[t] = fold(isum[t]);
    k4_block_floats<NT>(blk, s, a, lda, ib, folded, acc);
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]);
}

template <int NT>
void row_q6_k_512(const char* row, int64_t n_in, const GemvActQ8* a, int64_t lda, float* out) {
  const auto* b = reinterpret_cast<const quant::BlockQ6_K*>(row);
  const __m512i low4 = _mm512_set1_epi8(0x0F), three = _mm512_set1_epi8(3);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t ib = 0; ib < n_in / quant::QK_K; ++ib) {
    const quant::BlockQ6_K& blk = b[ib];
    const __m512i scales = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.scales)));
    __m512i isum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = _mm512_setzero_si512();
    for (int n = 0; n < 2; ++n) {
      // Inputs 128n + [0, 64) and 128n + [64, 128), as q6_k_quants' v[0] v[1] and v[2] v[3].
      const __m512i ql = _mm512_loadu_si512(blk.ql + 64 * n);
      const __m512i qh = _mm512_broadcast_i64x4(load32(blk.qh + 32 * n));
      const auto high = [&](int16_t lo, int16_t hi) {
        return _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, split16(lo, hi)), three), 4);
      };
      const __m512i v[2] = {_mm512_or_si512(_mm512_and_si512(ql, low4), high(0, 2)),
                            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low4), high(4, 6))};
      for (int m = 0; m < 2; ++m) {
        const int g = 8 * n + 4 * m;  // the scales of its 4 runs of 16 inputs: g .. g + 3
        const __m512i sc = _mm512_permutexvar_epi32(
            _mm512_setr_epi32(g, g, g, g, g + 1, g + 1, g + 1, g + 1, g + 2, g + 2, g + 2, g + 2, g + 3, g + 3, g + 3, g + 3),
            scales);
        for (int t = 0; t < NT; ++t)
          isum[t] = _mm512_add_epi32(
              isum[t], _mm512_mullo_epi32(dpbusd512(v[m], _mm512_loadu_si512(a[t * lda + ib].q + 128 * n + 64 * m)), sc));
      }
    }
    __m256i folded[NT];
    for (int t = 0; t < NT; ++t) folded[t] = fold(isum[t]);
    q6_k_block_floats<NT>(blk, a, lda, ib, folded, acc);
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]);
}

template <class Block, class Quants>
struct RowQ32x512 {
  template <int NT> static void run(const char* r, int64_t n, const GemvActQ8* a, int64_t lda, float* out) {
    row_q32_512<NT, Block, Quants>(r, n, a, lda, out);
  }
  static void run_pair(const char* r0, const char* r1, int64_t n, const GemvActQ8* a, float* out) {
    rows2_q32_512<Block, Quants>(r0, r1, n, a, out);
  }
};
template <class Block, class Quants>
struct RowK4x512 {
  template <int NT> static void run(const char* r, int64_t n, const GemvActQ8* a, int64_t lda, float* out) {
    row_k4_512<NT, Block, Quants>(r, n, a, lda, out);
  }
};
struct RowQ6Kx512 {
  template <int NT> static void run(const char* r, int64_t n, const GemvActQ8* a, int64_t lda, float* out) {
    row_q6_k_512<NT>(r, n, a, lda, out);
  }
};

Q8GemvFn gemv_table_512(Type type) {
  switch (type) {
    case Type::Q4_0: return gemv_rows<RowQ32x512<quant::BlockQ4_0, Q4_0Quants>>;
    case Type::Q8_0: return gemv_rows<RowQ32x512<quant::BlockQ8_0, Q8_0Quants>>;
    case Type::Q4_K: return gemv_rows<RowK4x512<quant::BlockQ4_K, Q4KQuants512>>;
    case Type::Q5_K: return gemv_rows<RowK4x512<quant::BlockQ5_K, Q5KQuants512>>;
    case Type::Q6_K: return gemv_rows<RowQ6Kx512>;
    default: return nullptr;
  }
}
#endif

// ---- the table --------------------------------------------------------------------------------

// The row kernels as gemv_rows takes them (Kernel::run<NT>).
template <class Dot, class Block, class Quants>
struct RowQ32 {
  template <int NT> static void run(const char* r, int64_t n, const GemvActQ8* a, int64_t lda, float* out) {
    row_q32<Dot, NT, Block, Quants>(r, n, a, lda, out);
  }
  static void run_pair(const char* r0, const char* r1, int64_t n, const GemvActQ8* a, float* out) {
    rows2_q32<Dot, Block, Quants>(r0, r1, n, a, out);
  }
};
template <class Dot, class Block, class Quants>
struct RowK4 {
  template <int NT> static void run(const char* r, int64_t n, const GemvActQ8* a, int64_t lda, float* out) {
    row_k4<Dot, NT, Block, Quants>(r, n, a, lda, out);
  }
};
template <class Dot>
struct RowQ6K {
  template <int NT> static void run(const char* r, int64_t n, const GemvActQ8* a, int64_t lda, float* out) {
    row_q6_k<Dot, NT>(r, n, a, lda, out);
  }
};

template <class Dot>
Q8GemvFn gemv_table(Type type) {
  switch (type) {
    case Type::Q4_0: return gemv_rows<RowQ32<Dot, quant::BlockQ4_0, Q4_0Quants>>;
    case Type::Q8_0: return gemv_rows<RowQ32<Dot, quant::BlockQ8_0, Q8_0Quants>>;
    case Type::Q4_K: return gemv_rows<RowK4<Dot, quant::BlockQ4_K, Q4KQuants>>;
    case Type::Q5_K: return gemv_rows<RowK4<Dot, quant::BlockQ5_K, Q5KQuants>>;
    case Type::Q6_K: return gemv_rows<RowQ6K<Dot>>;
    default: return nullptr;
  }
}

}  // namespace
}  // namespace keel::cpu
