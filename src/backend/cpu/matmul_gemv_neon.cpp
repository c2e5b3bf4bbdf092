// AArch64 GEMV (decode) kernels. Q4_0, Q8_0 and Q4_K rows are dequantized in registers: per 32
// inputs the quants are widened to 8 float vectors once and dotted with up to 4 tokens, the scale
// applied to each partial sum (Q4_K's min term from the activation sums, xsum). The other types keep the scalar twin's blocking (kGemvChunk
// weights dequantized to the stack by quant::dequantize_row_*, then dotted with each token in
// NEON FMAs); f16/bf16 are converted with NEON. dequant_row stays bit-exact with the reference.
#include <algorithm>

#include "backend/cpu/matmul.h"
#include "backend/cpu/simd_neon.h"
#include "quant/blocks.h"
#include "quant/dequant.h"

namespace keel::cpu {
namespace {

using quant::Type;

void dequant_f32_neon(const void* src, float* y, int64_t n) {
  std::copy_n(static_cast<const float*>(src), n, y);
}

void dequant_f16_neon(const void* src, float* y, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h + i))));
  for (; i < n; ++i) y[i] = quant::f16_to_f32(h[i]);
}

void dequant_bf16_neon(const void* src, float* y, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(h + i), 16)));
  for (; i < n; ++i) y[i] = quant::bf16_to_f32(h[i]);
}

// Σ a[k]·b[k], k < n.
inline float dot(const float* a, const float* b, int64_t n) {
  float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    s0 = vfmaq_f32(s0, vld1q_f32(a + k), vld1q_f32(b + k));
    s1 = vfmaq_f32(s1, vld1q_f32(a + k + 4), vld1q_f32(b + k + 4));
    s2 = vfmaq_f32(s2, vld1q_f32(a + k + 8), vld1q_f32(b + k + 8));
    s3 = vfmaq_f32(s3, vld1q_f32(a + k + 12), vld1q_f32(b + k + 12));
  }
  for (; k + 4 <= n; k += 4) s0 = vfmaq_f32(s0, vld1q_f32(a + k), vld1q_f32(b + k));
  float s = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
  for (; k < n; ++k) s += a[k] * b[k];
  return s;
}

template <Type kType, DequantRowFn kDequant>
void gemv_neon(const void* w, size_t row_bytes, int64_t n_in, int64_t n_rows, const float* x, int64_t ldx,
               const float* /*xsum*/, int64_t n_tok, float* y, int64_t ldy) {
  float buf[kGemvChunk];
  float acc[kGemmMinTokens];
  for (int64_t r = 0; r < n_rows; ++r) {
    const char* row = static_cast<const char*>(w) + static_cast<size_t>(r) * row_bytes;
    for (int64_t t0 = 0; t0 < n_tok; t0 += kGemmMinTokens) {
      const int64_t nt = std::min<int64_t>(kGemmMinTokens, n_tok - t0);
      std::fill_n(acc, nt, 0.0f);
      for (int64_t k0 = 0; k0 < n_in; k0 += kGemvChunk) {
        const int64_t len = std::min(kGemvChunk, n_in - k0);
        const char* src = row + quant::row_bytes(kType, static_cast<uint64_t>(k0));
        // f32 rows are dotted in place.
        const float* wk = kType == Type::F32 ? reinterpret_cast<const float*>(src) : buf;
        if constexpr (kType != Type::F32) kDequant(src, buf, len);
        for (int64_t t = 0; t < nt; ++t) acc[t] += dot(wk, x + (t0 + t) * ldx + k0, len);
      }
      for (int64_t t = 0; t < nt; ++t) y[(t0 + t) * ldy + r] = acc[t];
    }
  }
}

// 32 int8 quants as 8 float vectors.
inline void widen32(int8x16_t q0, int8x16_t q1, float32x4_t (&f)[8]) {
  const int16x8_t h[4] = {vmovl_s8(vget_low_s8(q0)), vmovl_high_s8(q0), vmovl_s8(vget_low_s8(q1)), vmovl_high_s8(q1)};
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(h[i])));
    f[2 * i + 1] = vcvtq_f32_s32(vmovl_high_s16(h[i]));
  }
}

// Σ_{k<32} f[k]·xb[k] as a vector of 4 partial sums.
inline float32x4_t dot32(const float32x4_t (&f)[8], const float* xb) {
  float32x4_t s0 = vmulq_f32(f[0], vld1q_f32(xb)), s1 = vmulq_f32(f[1], vld1q_f32(xb + 4));
  for (int i = 2; i < 8; i += 2) {
    s0 = vfmaq_f32(s0, f[i], vld1q_f32(xb + 4 * i));
    s1 = vfmaq_f32(s1, f[i + 1], vld1q_f32(xb + 4 * i + 4));
  }
  return vaddq_f32(s0, s1);
}

// A block's 32 signed quants (Q8_0 as stored, Q4_0 as nibble − 8, low nibbles first).
inline void block_quants(const quant::BlockQ8_0& b, int8x16_t& q0, int8x16_t& q1) {
  q0 = vld1q_s8(b.qs);
  q1 = vld1q_s8(b.qs + 16);
}
inline void block_quants(const quant::BlockQ4_0& b, int8x16_t& q0, int8x16_t& q1) {
  const uint8x16_t v = vld1q_u8(b.qs);
  q0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))), vdupq_n_s8(8));
  q1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), vdupq_n_s8(8));
}

// Rows of 32-blocks with one f16 scale each: y = Σ_b d_b · Σ_k q_k·x_k, tokens 4 at a time.
template <typename Block>
void gemv_blocks32_neon(const void* w, size_t row_bytes, int64_t n_in, int64_t n_rows, const float* x,
                        int64_t ldx, const float* /*xsum*/, int64_t n_tok, float* y, int64_t ldy) {
  const int64_t n_blocks = n_in / 32;
  for (int64_t r = 0; r < n_rows; ++r) {
    const auto* blocks = reinterpret_cast<const Block*>(static_cast<const char*>(w) + static_cast<size_t>(r) * row_bytes);
    for (int64_t t0 = 0; t0 < n_tok; t0 += 4) {
      const int nt = static_cast<int>(std::min<int64_t>(4, n_tok - t0));
      float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
      for (int64_t b = 0; b < n_blocks; ++b) {
        int8x16_t q0, q1;
        block_quants(blocks[b], q0, q1);
        float32x4_t f[8];
        widen32(q0, q1, f);
        const float d = quant::f16_to_f32(blocks[b].d);
        for (int t = 0; t < nt; ++t) {
          acc[t] = vfmaq_n_f32(acc[t], dot32(f, x + (t0 + t) * ldx + 32 * b), d);
        }
      }
      for (int t = 0; t < nt; ++t) y[(t0 + t) * ldy + r] = vaddvq_f32(acc[t]);
    }
  }
}

// Q4_K: per 256 inputs, 8 sub-blocks of 32 with scale d·sc and min dmin·m (dequantize_row_q4_k):
// y = Σ_s d·sc_s·Σ_k q_k·x_k − dmin·m_s·Σx_s, the sums of x taken from xsum.
void gemv_q4_k_neon(const void* w, size_t row_bytes, int64_t n_in, int64_t n_rows, const float* x, int64_t ldx,
                    const float* xsum, int64_t n_tok, float* y, int64_t ldy) {
  const int64_t n_sums = n_in / kSumBlock, n_blocks = n_in / quant::QK_K;
  for (int64_t r = 0; r < n_rows; ++r) {
    const auto* blocks =
        reinterpret_cast<const quant::BlockQ4_K*>(static_cast<const char*>(w) + static_cast<size_t>(r) * row_bytes);
    for (int64_t t0 = 0; t0 < n_tok; t0 += 4) {
      const int nt = static_cast<int>(std::min<int64_t>(4, n_tok - t0));
      float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
      float mins[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int64_t b = 0; b < n_blocks; ++b) {
        const quant::BlockQ4_K& blk = blocks[b];
        const float d = quant::f16_to_f32(blk.d), dmin = quant::f16_to_f32(blk.dmin);
        for (int j = 0; j < 4; ++j) {  // 32 bytes: sub-block 2j in the low nibbles, 2j + 1 in the high
          const uint8x16_t v0 = vld1q_u8(blk.qs + 32 * j), v1 = vld1q_u8(blk.qs + 32 * j + 16);
          for (int h = 0; h < 2; ++h) {
            const int s = 2 * j + h;
            uint8_t sc, m;
            quant::get_scale_min_k4(s, blk.scales, &sc, &m);
            const uint8x16_t u0 = h == 0 ? vandq_u8(v0, vdupq_n_u8(0x0F)) : vshrq_n_u8(v0, 4);
            const uint8x16_t u1 = h == 0 ? vandq_u8(v1, vdupq_n_u8(0x0F)) : vshrq_n_u8(v1, 4);
            float32x4_t f[8];
            widen32(vreinterpretq_s8_u8(u0), vreinterpretq_s8_u8(u1), f);
            const float scale = d * sc, mn = dmin * m;
            for (int t = 0; t < nt; ++t) {
              const int64_t tok = t0 + t;
              acc[t] = vfmaq_n_f32(acc[t], dot32(f, x + tok * ldx + quant::QK_K * b + 32 * s), scale);
              mins[t] += mn * xsum[tok * n_sums + 8 * b + s];
            }
          }
        }
      }
      for (int t = 0; t < nt; ++t) y[(t0 + t) * ldy + r] = vaddvq_f32(acc[t]) - mins[t];
    }
  }
}

template <Type kType, DequantRowFn kDequant>
TypeKernels make() {
  return {kDequant, &gemv_neon<kType, kDequant>};
}

}  // namespace

TypeKernels type_kernels_neon(Type type) {
  switch (type) {
    case Type::F32: return make<Type::F32, dequant_f32_neon>();
    case Type::F16: return make<Type::F16, dequant_f16_neon>();
    case Type::BF16: return make<Type::BF16, dequant_bf16_neon>();
    case Type::Q4_0: return {quant::dequantize_row_q4_0, gemv_blocks32_neon<quant::BlockQ4_0>};
    case Type::Q8_0: return {quant::dequantize_row_q8_0, gemv_blocks32_neon<quant::BlockQ8_0>};
    case Type::Q4_K: return {quant::dequantize_row_q4_k, gemv_q4_k_neon};
    case Type::Q5_K: return make<Type::Q5_K, quant::dequantize_row_q5_k>();
    case Type::Q6_K: return make<Type::Q6_K, quant::dequantize_row_q6_k>();
    default: return {nullptr, nullptr};
  }
}

}  // namespace keel::cpu
