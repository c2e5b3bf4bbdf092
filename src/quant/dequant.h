// Scalar dequantization (the reference every optimised kernel is tested against).
#pragma once
#include <cstdint>

#include "quant/types.h"

namespace keel::quant {

// y[0..n) = dequantized elements of a row of `type` starting at `src`; n must be a multiple of
// the type's block size. Throws keel::Error for a type keel cannot compute with.
void dequantize_row(Type type, const void* src, float* y, int64_t n);

void dequantize_row_q4_0(const void* src, float* y, int64_t n);
void dequantize_row_q8_0(const void* src, float* y, int64_t n);
void dequantize_row_q4_k(const void* src, float* y, int64_t n);
void dequantize_row_q5_k(const void* src, float* y, int64_t n);
void dequantize_row_q6_k(const void* src, float* y, int64_t n);
void dequantize_row_q8_k(const void* src, float* y, int64_t n);

}  // namespace keel::quant
