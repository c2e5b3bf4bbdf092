// AArch64 GEMV (decode) kernels: the scalar twin's blocking (kGemvChunk weights of a row
// dequantized to the stack, then dotted with each token), with the dot in NEON FMAs over four
// accumulators and the float formats converted with NEON. The quantized rows are dequantized by
// quant::dequantize_row_* (the reference dequantizer, so dequant_row stays bit-exact). Unlike the
// AVX2 GEMV nothing is dequantized in registers yet: a possible next step on ARM hardware.
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
    case Type::Q4_0: return make<Type::Q4_0, quant::dequantize_row_q4_0>();
    case Type::Q8_0: return make<Type::Q8_0, quant::dequantize_row_q8_0>();
    case Type::Q4_K: return make<Type::Q4_K, quant::dequantize_row_q4_k>();
    case Type::Q5_K: return make<Type::Q5_K, quant::dequantize_row_q5_k>();
    case Type::Q6_K: return make<Type::Q6_K, quant::dequantize_row_q6_k>();
    default: return {nullptr, nullptr};
  }
}

}  // namespace keel::cpu
