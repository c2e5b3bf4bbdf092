#include "quant/quantize_act.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/blocks.h"

// The `omp simd` hints below are for GCC; clang reports each loop it does not vectorize as a
// warning (-Wpass-failed), which says nothing about the code's correctness.
#ifdef __clang__
#pragma clang diagnostic ignored "-Wpass-failed"
#endif

namespace keel::quant {
namespace {

// Round half to even for |v| < 2^22 in the default rounding mode (ggml's nearest_int): adding
// 1.5·2^23 leaves the rounded integer in the low mantissa bits. Inline and vectorizable, where
// std::nearbyint is a libm call per element.
inline int nearest_int(float v) {
  const float f = v + 12582912.0f;
  int32_t i;
  std::memcpy(&i, &f, 4);
  return (i & 0x007FFFFF) - 0x00400000;
}

// The first of x[0..n) (n a multiple of 16) whose magnitude is amax; 0 if none. Vectorized tests
// of 16 values at a time, then a scan of the 16 that hold it.
float first_with_magnitude(const float* x, int n, float amax) {
  for (int j0 = 0; j0 < n; j0 += 16) {
    int hit = 0;
#pragma omp simd reduction(| : hit)
    for (int j = j0; j < j0 + 16; ++j) hit |= std::fabs(x[j]) == amax;
    if (hit)
      for (int j = j0; j < j0 + 16; ++j)
        if (std::fabs(x[j]) == amax) return x[j];
  }
  return 0.0f;
}

}  // namespace

void quantize_row_q8_k(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<BlockQ8_K*>(dst);
  for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
    BlockQ8_K& y = out[b];
    // The largest magnitude (a vectorized pass), then the first value that has it.
    float amax = 0.0f;
#pragma omp simd reduction(max : amax)
    for (int j = 0; j < QK_K; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float max = first_with_magnitude(x, QK_K, amax);
    if (amax == 0.0f) {
      y.d = 0.0f;
      std::fill_n(y.qs, QK_K, int8_t{0});
      std::fill_n(y.bsums, QK_K / 16, int16_t{0});
      continue;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < QK_K; ++j) {
      const int v = nearest_int(iscale * x[j]);
      y.qs[j] = static_cast<int8_t>(std::min(127, v));
    }
    for (int g = 0; g < QK_K / 16; ++g) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += y.qs[16 * g + j];
      y.bsums[g] = static_cast<int16_t>(sum);
    }
    y.d = 1.0f / iscale;
  }
}

void quantize_row_q8_0_act(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<BlockQ8_0*>(dst);
  for (int64_t b = 0; b < n / QK8_0; ++b, x += QK8_0) {
    float amax = 0.0f;
#pragma omp simd reduction(max : amax)
    for (int j = 0; j < QK8_0; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    out[b].d = f32_to_f16(amax / 127.0f);
    for (int j = 0; j < QK8_0; ++j) out[b].qs[j] = static_cast<int8_t>(nearest_int(x[j] * id));
  }
}

}  // namespace keel::quant
