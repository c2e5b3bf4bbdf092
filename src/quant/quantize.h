// Scalar quantizers (float rows -> blocks) for every type keel writes: F32, F16, BF16, Q8_0,
// Q4_0, Q4_K, Q5_K, Q6_K. The 4/5/6-bit encoders search their scales for the least squared
// error (weighted toward large values, as llama.cpp's reference quantizers do) instead of taking
// the range; see quantize_k.cpp.
#pragma once
#include <cstdint>

#include "quant/types.h"

namespace keel::quant {

bool can_quantize_to(Type type);

// x[0..n) -> one row of `type` at dst (row_bytes(type, n) bytes); n a multiple of the block.
// Throws keel::Error for a type keel cannot write.
void quantize_row(Type type, const float* x, void* dst, int64_t n);

void quantize_row_q4_0(const float* x, void* dst, int64_t n);
void quantize_row_q4_k(const float* x, void* dst, int64_t n);
void quantize_row_q5_k(const float* x, void* dst, int64_t n);
void quantize_row_q6_k(const float* x, void* dst, int64_t n);

}  // namespace keel::quant
