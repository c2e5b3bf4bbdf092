// Q8_0 reference encoder (quants.md §3.1): used for the q8_0 KV cache and by the quantizers.
#pragma once
#include <cstdint>

namespace keel::quant {

// x[0..n) -> n/32 BlockQ8_0 at dst; n must be a multiple of 32.
void quantize_row_q8_0(const float* x, void* dst, int64_t n);

}  // namespace keel::quant
