// Q8_K encoder (quants.md §3.7): the activation format of the K-quant integer dot products.
// Never stored in model files; the fast matmul path quantizes each activation row with it.
#pragma once
#include <cstdint>

namespace keel::quant {

// x[0..n) -> n/256 BlockQ8_K at dst; n must be a multiple of 256. Same arithmetic as ggml's
// reference encoder: iscale = -127/max with max the signed value of largest magnitude (the first
// one on ties), qs = min(127, round-half-even(iscale·x)), d = 1/iscale, bsums over each 16.
void quantize_row_q8_k(const float* x, void* dst, int64_t n);

}  // namespace keel::quant
