// Scalar ("generic") twins of the matmul kernels: plain C++ compiled for the baseline ISA (x86-64
// or AArch64). They follow the same blocking as the SIMD kernels so the driver in matmul.cpp runs
// any set.
#include <algorithm>

#include "backend/cpu/matmul.h"
#include "quant/blocks.h"
#include "quant/dequant.h"

namespace keel::cpu {
namespace {

using quant::Type;

void dequant_f32(const void* src, float* y, int64_t n) {
  std::copy_n(static_cast<const float*>(src), n, y);
}
void dequant_f16(const void* src, float* y, int64_t n) {
  const auto* h = static_cast<const quant::f16_bits*>(src);
  for (int64_t i = 0; i < n; ++i) y[i] = quant::f16_to_f32(h[i]);
}
void dequant_bf16(const void* src, float* y, int64_t n) {
  const auto* h = static_cast<const quant::bf16_bits*>(src);
  for (int64_t i = 0; i < n; ++i) y[i] = quant::bf16_to_f32(h[i]);
}

// Dequantizes kGemvChunk inputs of the row at a time into a stack buffer, then dots the chunk
// with every token.
template <Type kType, DequantRowFn kDequant>
void gemv_generic(const void* w, size_t row_bytes, int64_t n_in, int64_t n_rows, const float* x,
                  int64_t ldx, const float* /*xsum*/, int64_t n_tok, float* y, int64_t ldy) {
  float buf[kGemvChunk];
  float acc[kGemmMinTokens];
  for (int64_t r = 0; r < n_rows; ++r) {
    const char* row = static_cast<const char*>(w) + static_cast<size_t>(r) * row_bytes;
    for (int64_t t0 = 0; t0 < n_tok; t0 += kGemmMinTokens) {
      const int64_t nt = std::min<int64_t>(kGemmMinTokens, n_tok - t0);
      std::fill_n(acc, nt, 0.0f);
      for (int64_t k0 = 0; k0 < n_in; k0 += kGemvChunk) {
        const int64_t len = std::min(kGemvChunk, n_in - k0);
        kDequant(row + quant::row_bytes(kType, static_cast<uint64_t>(k0)), buf, len);
        for (int64_t t = 0; t < nt; ++t) {
          const float* xt = x + (t0 + t) * ldx + k0;
          float s = 0.0f;
          for (int64_t k = 0; k < len; ++k) s += buf[k] * xt[k];
          acc[t] += s;
        }
      }
      for (int64_t t = 0; t < nt; ++t) y[(t0 + t) * ldy + r] = acc[t];
    }
  }
}

void pack_panel_generic(const float* rows, int64_t ld, int n_rows, int64_t kc, float* panel) {
  for (int64_t k = 0; k < kc; ++k)
    for (int j = 0; j < kTileRows; ++j) panel[k * kTileRows + j] = j < n_rows ? rows[j * ld + k] : 0.0f;
}

void micro_generic(int64_t kc, const float* xp, const float* wp, float* y, int64_t ldy, int n_tok,
                   int n_rows, bool accumulate) {
  float c[kTileTokens][kTileRows] = {};
  for (int64_t k = 0; k < kc; ++k)
    for (int t = 0; t < kTileTokens; ++t)
      for (int j = 0; j < kTileRows; ++j) c[t][j] += xp[k * kTileTokens + t] * wp[k * kTileRows + j];
  for (int t = 0; t < n_tok; ++t)
    for (int j = 0; j < n_rows; ++j) y[t * ldy + j] = (accumulate ? y[t * ldy + j] : 0.0f) + c[t][j];
}

template <Type kType, DequantRowFn kDequant>
TypeKernels make() {
  return {kDequant, &gemv_generic<kType, kDequant>};
}

}  // namespace

TypeKernels type_kernels_generic(Type type) {
  switch (type) {
    case Type::F32: return make<Type::F32, dequant_f32>();
    case Type::F16: return make<Type::F16, dequant_f16>();
    case Type::BF16: return make<Type::BF16, dequant_bf16>();
    case Type::Q4_0: return make<Type::Q4_0, quant::dequantize_row_q4_0>();
    case Type::Q8_0: return make<Type::Q8_0, quant::dequantize_row_q8_0>();
    case Type::Q4_K: return make<Type::Q4_K, quant::dequantize_row_q4_k>();
    case Type::Q5_K: return make<Type::Q5_K, quant::dequantize_row_q5_k>();
    case Type::Q6_K: return make<Type::Q6_K, quant::dequantize_row_q6_k>();
    default: return {nullptr, nullptr};
  }
}

GemmKernels gemm_kernels_generic() { return {pack_panel_generic, micro_generic}; }

}  // namespace keel::cpu
