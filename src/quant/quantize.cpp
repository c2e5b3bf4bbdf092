#include "quant/quantize.h"

#include <string>

#include "keel/error.h"
#include "quant/blocks.h"
#include "quant/quantize_q8_0.h"

namespace keel::quant {

bool can_quantize_to(Type type) {
  switch (type) {
    case Type::F32: case Type::F16: case Type::BF16: case Type::Q8_0: case Type::Q4_0:
    case Type::Q4_K: case Type::Q5_K: case Type::Q6_K:
      return true;
    default:
      return false;
  }
}

void quantize_row(Type type, const float* x, void* dst, int64_t n) {
  switch (type) {
    case Type::F32: {
      auto* y = static_cast<float*>(dst);
      for (int64_t i = 0; i < n; ++i) y[i] = x[i];
      return;
    }
    case Type::F16: {
      auto* y = static_cast<f16_bits*>(dst);
      for (int64_t i = 0; i < n; ++i) y[i] = f32_to_f16(x[i]);
      return;
    }
    case Type::BF16: {
      auto* y = static_cast<bf16_bits*>(dst);
      for (int64_t i = 0; i < n; ++i) y[i] = f32_to_bf16(x[i]);
      return;
    }
    case Type::Q8_0: return quantize_row_q8_0(x, dst, n);
    case Type::Q4_0: return quantize_row_q4_0(x, dst, n);
    case Type::Q4_K: return quantize_row_q4_k(x, dst, n);
    case Type::Q5_K: return quantize_row_q5_k(x, dst, n);
    case Type::Q6_K: return quantize_row_q6_k(x, dst, n);
    default:
      throw Error("keel cannot write tensor type " + std::string(type_name(type)) +
                  " (it writes f32, f16, bf16, q8_0, q4_0, q4_K, q5_K, q6_K)");
  }
}

}  // namespace keel::quant
