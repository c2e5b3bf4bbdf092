// Levels and scales -> one block: the exact inverse of the dequantizers in dequant.cpp, written
// once and shared by the quantizers (which search for levels and scales) and `keel synth` (which
// draws them at random). A dequantized element is d·q (Q8_0, Q4_0), d·scale·q (Q6_K) or
// d·scale·q − dmin·min (Q4_K, Q5_K); d and dmin are stored as f16.
#pragma once
#include <cstdint>

#include "quant/blocks.h"

namespace keel::quant {

void pack_q8_0(float d, const int8_t* q, BlockQ8_0* out);   // q[32] in [-127, 127]
void pack_q4_0(float d, const int8_t* q, BlockQ4_0* out);   // q[32] in [-8, 7]

// scales[8], mins[8]: 6-bit codes of the 8 groups of 32; q[256] in [0, 15] (Q4_K), [0, 31] (Q5_K).
void pack_q4_k(float d, float dmin, const uint8_t* scales, const uint8_t* mins, const uint8_t* q, BlockQ4_K* out);
void pack_q5_k(float d, float dmin, const uint8_t* scales, const uint8_t* mins, const uint8_t* q, BlockQ5_K* out);

// scales[16]: int8 codes of the 16 groups of 16; q[256] in [-32, 31].
void pack_q6_k(float d, const int8_t* scales, const int8_t* q, BlockQ6_K* out);

}  // namespace keel::quant
