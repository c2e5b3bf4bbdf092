#include "quant/dequant.h"

#include <string>

#include "keel/error.h"
#include "quant/blocks.h"

namespace keel::quant {

void dequantize_row_q4_0(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ4_0*>(src);
  for (int64_t i = 0; i < n / QK4_0; ++i, y += QK4_0) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < QK4_0 / 2; ++j) {
      y[j] = d * static_cast<float>((b[i].qs[j] & 0x0F) - 8);
      y[j + QK4_0 / 2] = d * static_cast<float>((b[i].qs[j] >> 4) - 8);
    }
  }
}

void dequantize_row_q8_0(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ8_0*>(src);
  for (int64_t i = 0; i < n / QK8_0; ++i, y += QK8_0) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < QK8_0; ++j) y[j] = d * static_cast<float>(b[i].qs[j]);
  }
}

void dequantize_row_q4_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ4_K*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    const float dmin = f16_to_f32(b[i].dmin);
    const uint8_t* q = b[i].qs;
    for (int j = 0; j < 4; ++j, q += 32) {
      uint8_t sc0, m0, sc1, m1;
      get_scale_min_k4(2 * j, b[i].scales, &sc0, &m0);
      get_scale_min_k4(2 * j + 1, b[i].scales, &sc1, &m1);
      const float d0 = d * sc0, min0 = dmin * m0, d1 = d * sc1, min1 = dmin * m1;
      for (int l = 0; l < 32; ++l) *y++ = d0 * static_cast<float>(q[l] & 0x0F) - min0;
      for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] >> 4) - min1;
    }
  }
}

void dequantize_row_q5_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ5_K*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    const float dmin = f16_to_f32(b[i].dmin);
    const uint8_t* ql = b[i].qs;
    const uint8_t* qh = b[i].qh;
    for (int j = 0; j < 4; ++j, ql += 32) {
      uint8_t sc0, m0, sc1, m1;
      get_scale_min_k4(2 * j, b[i].scales, &sc0, &m0);
      get_scale_min_k4(2 * j + 1, b[i].scales, &sc1, &m1);
      const float d0 = d * sc0, min0 = dmin * m0, d1 = d * sc1, min1 = dmin * m1;
      for (int l = 0; l < 32; ++l)
        *y++ = d0 * static_cast<float>((ql[l] & 0x0F) + (((qh[l] >> (2 * j)) & 1) << 4)) - min0;
      for (int l = 0; l < 32; ++l)
        *y++ = d1 * static_cast<float>((ql[l] >> 4) + (((qh[l] >> (2 * j + 1)) & 1) << 4)) - min1;
    }
  }
}

void dequantize_row_q6_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ6_K*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = b[i].ql + 64 * half;
      const uint8_t* qh = b[i].qh + 32 * half;
      const int8_t* sc = b[i].scales + 8 * half;
      float* out = y + 128 * half;
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        out[l] = d * sc[is + 0] * static_cast<float>(q1);
        out[l + 32] = d * sc[is + 2] * static_cast<float>(q2);
        out[l + 64] = d * sc[is + 4] * static_cast<float>(q3);
        out[l + 96] = d * sc[is + 6] * static_cast<float>(q4);
      }
    }
    y += QK_K;
  }
}

void dequantize_row_q8_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ8_K*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i)
    for (int j = 0; j < QK_K; ++j) *y++ = b[i].d * static_cast<float>(b[i].qs[j]);
}

void dequantize_row(Type type, const void* src, float* y, int64_t n) {
  switch (type) {
    case Type::F32: {
      const auto* x = static_cast<const float*>(src);
      for (int64_t i = 0; i < n; ++i) y[i] = x[i];
      return;
    }
    case Type::F16: {
      const auto* x = static_cast<const f16_bits*>(src);
      for (int64_t i = 0; i < n; ++i) y[i] = f16_to_f32(x[i]);
      return;
    }
    case Type::BF16: {
      const auto* x = static_cast<const bf16_bits*>(src);
      for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_f32(x[i]);
      return;
    }
    case Type::Q4_0: return dequantize_row_q4_0(src, y, n);
    case Type::Q8_0: return dequantize_row_q8_0(src, y, n);
    case Type::Q4_K: return dequantize_row_q4_k(src, y, n);
    case Type::Q5_K: return dequantize_row_q5_k(src, y, n);
    case Type::Q6_K: return dequantize_row_q6_k(src, y, n);
    case Type::Q8_K: return dequantize_row_q8_k(src, y, n);
    default:
      throw Error("keel cannot compute with tensor type " + std::string(type_name(type)));
  }
}

}  // namespace keel::quant
