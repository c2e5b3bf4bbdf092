#include "quant/quantize_q8_0.h"

#include <cmath>

#include "quant/blocks.h"
#include "quant/pack.h"

namespace keel::quant {

void quantize_row_q8_0(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<BlockQ8_0*>(dst);
  for (int64_t b = 0; b < n / QK8_0; ++b, x += QK8_0) {
    float amax = 0.0f;
    for (int j = 0; j < QK8_0; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int8_t q[QK8_0];
    for (int j = 0; j < QK8_0; ++j) q[j] = static_cast<int8_t>(std::lround(x[j] * id));
    pack_q8_0(d, q, &out[b]);
  }
}

}  // namespace keel::quant
