// The activation encoders of the fast matmul path (cpu::MatmulMode::fast): Q8_K (quants.md §3.7)
// against K-quant weights, Q8_0 against Q4_0/Q8_0 weights, each rounding exactly as ggml's x86
// CPU backend does, so keel's fast results track llama.cpp's.
#pragma once
#include <cstdint>

namespace keel::quant {

// x[0..n) -> n/256 BlockQ8_K at dst; n must be a multiple of 256. Same arithmetic as ggml's
// reference encoder: iscale = -127/max with max the signed value of largest magnitude (the first
// one on ties), qs = min(127, round-half-even(iscale·x)), d = 1/iscale, bsums over each 16.
void quantize_row_q8_k(const float* x, void* dst, int64_t n);

// x[0..n) -> n/32 BlockQ8_0 at dst, n a multiple of 32, as ggml's AVX quantize_row_q8_0 rounds:
// d = amax/127 (stored as f16), quants = round-half-even(x · (127/amax)) from the unrounded
// scale. (quant::quantize_row_q8_0, the reference encoder, multiplies by 1/d and rounds half
// away from zero: a few quants differ by one.)
void quantize_row_q8_0_act(const float* x, void* dst, int64_t n);

}  // namespace keel::quant
