// The AArch64 integer GEMV of the fast path (matmul_q8.h), written once and compiled twice: by
// matmul_q8_gemv_neon.cpp (Advanced SIMD: SMULL + SADALP) and matmul_q8_gemv_dotprod.cpp (SDOT),
// each with its own -march and a Dot policy for the one instruction that differs. Internal
// linkage throughout: each file keeps its own copy, compiled for its own level.
//
// AArch64 multiplies signed bytes by signed bytes, so every weight type's quants enter as their
// signed values (Q4_0 nibble − 8, Q6_K stored value − 32; Q4_K/Q5_K's unsigned quants fit in
// int8) and no offset is needed. A 16-byte vector holds one sub-block (Q6_K) or half of one (the
// others), whose integer sum is multiplied by the sub-block's scale in int32 (MLA by scalar);
// a 256-input block then costs one int→float conversion and one FMA per token. The row loop is
// matmul_q8_gemv_rows.h.
#pragma once
#include <arm_neon.h>

#include <cstdint>

#include "backend/cpu/matmul_q8.h"
#include "backend/cpu/matmul_q8_gemv_rows.h"
#include "quant/blocks.h"

namespace keel::cpu {
namespace {

using quant::Type;

// Advanced SIMD: 8 products in int16 (|w·x| <= 128·127), pairwise added into the int32 lanes.
struct DotNeon {
  static int32x4_t dot(int32x4_t acc, int8x16_t w, int8x16_t x) {
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(w), vget_low_s8(x)));
    return vpadalq_s16(acc, vmull_high_s8(w, x));
  }
};

#if defined(__ARM_FEATURE_DOTPROD)
// SDOT: 4 products into each int32 lane.
struct DotSdot {
  static int32x4_t dot(int32x4_t acc, int8x16_t w, int8x16_t x) { return vdotq_s32(acc, w, x); }
};
#endif

inline int8x16_t load16(const int8_t* p) { return vld1q_s8(p); }
inline int8x16_t as_s8(uint8x16_t v) { return vreinterpretq_s8_u8(v); }
inline float f16(quant::f16_bits h) { return quant::f16_to_f32(h); }

// ---- one row against NT tokens: out[t] = Σ_k W[k] · xq_t[k] ----------------------------------

// Q4_0 and Q8_0: 32 signed quants per block, as two vectors.
inline void quants_q8_0(const quant::BlockQ8_0& b, int8x16_t (&w)[2]) {
  w[0] = load16(b.qs);
  w[1] = load16(b.qs + 16);
}
inline void quants_q4_0(const quant::BlockQ4_0& b, int8x16_t (&w)[2]) {
  const uint8x16_t raw = vld1q_u8(b.qs);
  const int8x16_t eight = vdupq_n_s8(8);
  w[0] = vsubq_s8(as_s8(vandq_u8(raw, vdupq_n_u8(0x0F))), eight);
  w[1] = vsubq_s8(as_s8(vshrq_n_u8(raw, 4)), eight);
}

template <class Dot, class Block, void (*kQuants)(const Block&, int8x16_t (&)[2])>
struct RowQ32 {
  template <int NT>
  static void run(const char* row, int64_t n_in, const GemvActQ8* a, int64_t lda, float* out) {
    const auto* b = reinterpret_cast<const Block*>(row);
    float32x4_t acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n_in / 32; ++i) {
      int8x16_t w[2];
      kQuants(b[i], w);
      const float dw = f16(b[i].d);
      const int64_t blk = i / 8;
      const int g = static_cast<int>(i % 8);
      for (int t = 0; t < NT; ++t) {
        const GemvActQ8& x = a[t * lda + blk];
        const int32x4_t c = Dot::dot(Dot::dot(vdupq_n_s32(0), w[0], load16(x.q + 32 * g)), w[1], load16(x.q + 32 * g + 16));
        acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(c), dw * x.d[g]);
      }
    }
    for (int t = 0; t < NT; ++t) out[t] = vaddvq_f32(acc[t]);
  }
};

// Q4_K / Q5_K: the 64 quants of sub-blocks 2j (w[0..1]) and 2j+1 (w[2..3]) of a block.
inline void quants_q4_k(const quant::BlockQ4_K& b, int j, int8x16_t (&w)[4]) {
  for (int h = 0; h < 2; ++h) {
    const uint8x16_t raw = vld1q_u8(b.qs + 32 * j + 16 * h);
    w[h] = as_s8(vandq_u8(raw, vdupq_n_u8(0x0F)));
    w[2 + h] = as_s8(vshrq_n_u8(raw, 4));
  }
}
inline void quants_q5_k(const quant::BlockQ5_K& b, int j, int8x16_t (&w)[4]) {
  const int8x16_t down_lo = vdupq_n_s8(static_cast<int8_t>(-2 * j)), down_hi = vdupq_n_s8(static_cast<int8_t>(-2 * j - 1));
  const uint8x16_t one = vdupq_n_u8(1);
  for (int h = 0; h < 2; ++h) {
    const uint8x16_t raw = vld1q_u8(b.qs + 32 * j + 16 * h), qh = vld1q_u8(b.qh + 16 * h);
    // bit 2j of qh[l] is the fifth bit of input 64j + l, bit 2j+1 that of input 64j + 32 + l
    const uint8x16_t h0 = vshlq_n_u8(vandq_u8(vshlq_u8(qh, down_lo), one), 4);
    const uint8x16_t h1 = vshlq_n_u8(vandq_u8(vshlq_u8(qh, down_hi), one), 4);
    w[h] = as_s8(vorrq_u8(vandq_u8(raw, vdupq_n_u8(0x0F)), h0));
    w[2 + h] = as_s8(vorrq_u8(vshrq_n_u8(raw, 4), h1));
  }
}

// The 8 6-bit scales and mins of a Q4_K / Q5_K block (quants.md 3.3).
inline void k4_scales(const uint8_t* packed, int32_t (&sc)[8], float32x4_t (&mins)[2], float dmin) {
  float m[8];
  for (int g = 0; g < 8; ++g) {
    uint8_t s, mn;
    quant::get_scale_min_k4(g, packed, &s, &mn);
    sc[g] = s;
    m[g] = dmin * static_cast<float>(mn);
  }
  mins[0] = vld1q_f32(m);
  mins[1] = vld1q_f32(m + 4);
}

template <class Dot, class Block, void (*kQuants)(const Block&, int, int8x16_t (&)[4])>
struct RowK4 {
  template <int NT>
  static void run(const char* row, int64_t n_in, const GemvActQ8* a, int64_t lda, float* out) {
    const auto* b = reinterpret_cast<const Block*>(row);
    float32x4_t acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = vdupq_n_f32(0.0f);
    for (int64_t ib = 0; ib < n_in / quant::QK_K; ++ib) {
      const Block& blk = b[ib];
      int32_t sc[8];
      float32x4_t mins[2];
      k4_scales(blk.scales, sc, mins, f16(blk.dmin));
      int32x4_t isum[NT];
      for (int t = 0; t < NT; ++t) isum[t] = vdupq_n_s32(0);
      for (int j = 0; j < 4; ++j) {
        int8x16_t w[4];
        kQuants(blk, j, w);
        for (int t = 0; t < NT; ++t) {
          const int8_t* x = a[t * lda + ib].q + 64 * j;
          const int32x4_t lo = Dot::dot(Dot::dot(vdupq_n_s32(0), w[0], load16(x)), w[1], load16(x + 16));
          const int32x4_t hi = Dot::dot(Dot::dot(vdupq_n_s32(0), w[2], load16(x + 32)), w[3], load16(x + 48));
          isum[t] = vmlaq_n_s32(vmlaq_n_s32(isum[t], lo, sc[2 * j]), hi, sc[2 * j + 1]);
        }
      }
      const float d = f16(blk.d);
      for (int t = 0; t < NT; ++t) {
        const GemvActQ8& x = a[t * lda + ib];
        acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(isum[t]), d * x.d[0]);
        acc[t] = vfmsq_f32(acc[t], mins[0], vld1q_f32(x.dsum));
        acc[t] = vfmsq_f32(acc[t], mins[1], vld1q_f32(x.dsum + 4));
      }
    }
    for (int t = 0; t < NT; ++t) out[t] = vaddvq_f32(acc[t]);
  }
};

// Q6_K: the 16 signed quants of each sub-block of half n of a block (inputs 128n + 16s + [0, 16)).
inline void quants_q6_k(const quant::BlockQ6_K& b, int n, int8x16_t (&w)[8]) {
  const uint8x16_t low4 = vdupq_n_u8(0x0F), three = vdupq_n_u8(3);
  const int8x16_t bias = vdupq_n_s8(32);
  for (int h = 0; h < 2; ++h) {
    const uint8x16_t ql0 = vld1q_u8(b.ql + 64 * n + 16 * h), ql1 = vld1q_u8(b.ql + 64 * n + 32 + 16 * h);
    const uint8x16_t qh = vld1q_u8(b.qh + 32 * n + 16 * h);
    const uint8x16_t v[4] = {
        vorrq_u8(vandq_u8(ql0, low4), vshlq_n_u8(vandq_u8(qh, three), 4)),
        vorrq_u8(vandq_u8(ql1, low4), vshlq_n_u8(vandq_u8(vshrq_n_u8(qh, 2), three), 4)),
        vorrq_u8(vshrq_n_u8(ql0, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(qh, 4), three), 4)),
        vorrq_u8(vshrq_n_u8(ql1, 4), vshlq_n_u8(vshrq_n_u8(qh, 6), 4)),
    };
    for (int m = 0; m < 4; ++m) w[2 * m + h] = vsubq_s8(as_s8(v[m]), bias);  // inputs 32m + 16h
  }
}

template <class Dot>
struct RowQ6K {
  template <int NT>
  static void run(const char* row, int64_t n_in, const GemvActQ8* a, int64_t lda, float* out) {
    const auto* b = reinterpret_cast<const quant::BlockQ6_K*>(row);
    float32x4_t acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = vdupq_n_f32(0.0f);
    for (int64_t ib = 0; ib < n_in / quant::QK_K; ++ib) {
      const quant::BlockQ6_K& blk = b[ib];
      int32x4_t isum[NT];
      for (int t = 0; t < NT; ++t) isum[t] = vdupq_n_s32(0);
      for (int n = 0; n < 2; ++n) {
        int8x16_t w[8];
        quants_q6_k(blk, n, w);
        for (int s = 0; s < 8; ++s)
          for (int t = 0; t < NT; ++t) {
            const int32x4_t c = Dot::dot(vdupq_n_s32(0), w[s], load16(a[t * lda + ib].q + 128 * n + 16 * s));
            isum[t] = vmlaq_n_s32(isum[t], c, blk.scales[8 * n + s]);
          }
      }
      const float d = f16(blk.d);
      for (int t = 0; t < NT; ++t) acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(isum[t]), d * a[t * lda + ib].d[0]);
    }
    for (int t = 0; t < NT; ++t) out[t] = vaddvq_f32(acc[t]);
  }
};

template <class Dot>
Q8GemvFn gemv_table(Type type) {
  switch (type) {
    case Type::Q4_0: return gemv_rows<RowQ32<Dot, quant::BlockQ4_0, quants_q4_0>>;
    case Type::Q8_0: return gemv_rows<RowQ32<Dot, quant::BlockQ8_0, quants_q8_0>>;
    case Type::Q4_K: return gemv_rows<RowK4<Dot, quant::BlockQ4_K, quants_q4_k>>;
    case Type::Q5_K: return gemv_rows<RowK4<Dot, quant::BlockQ5_K, quants_q5_k>>;
    case Type::Q6_K: return gemv_rows<RowQ6K<Dot>>;
    default: return nullptr;
  }
}

}  // namespace
}  // namespace keel::cpu
