// The 8-bit decode GEMV: quantized weights times activations quantized to 8 bits, with integer
// dot products (dp4a), as llama.cpp's CUDA decode multiplies. The default for Q4_0, Q8_0, Q4_K,
// Q5_K and Q6_K weights on the CUDA backend; `--exact` keeps the f32 GEMV (matmul.cuh).
//
// Activations: each token's row is quantized once per call in blocks of 32 inputs (llama.cpp's
// q8_1): q = round(x / d), d = max |x| / 127, kept with d and d·Σq (the latter for the K-quant
// min terms and Q4_0's offset). Weights are read straight from their GGUF blocks: each warp
// streams one row through shared memory with 16-byte asynchronous copies, several chunks in
// flight, and its lanes take the blocks' quants from there as 32-bit words. Per 32-input group:
//
//   y += d_w · d_x · Σ q_w q_x  (− d_min · m · d_x Σ q_x for Q4_K / Q5_K, − 8 · d_w · d_x Σ q_x for Q4_0)
//
// the integer sums exact in int32. A token's result does not depend on the call's other tokens
// (the batch invariance the backend promises).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "backend/cuda/matmul.cuh"

namespace keel::cuda {

constexpr int64_t kActGroup = 32;  // inputs per activation scale

// Device bytes of quantized activations for n_tokens rows of n_in inputs (n_in % 32 == 0).
size_t act_q8_bytes(int64_t n_in, int64_t n_tokens);

// True when gemv_q8 multiplies this weight: a type above and inputs a multiple of 32 (Q4_K and
// Q5_K rows are whole 16-byte units; rows of the other types may start at any even byte).
bool gemv_q8_supports(const DeviceWeight& w);

// act <- x [n_tokens, n_in] quantized: int8 q [n_tokens][n_in], then, 256 bytes aligned after
// them, (d, d·Σq) as float2 [n_tokens][n_in / 32]. act: act_q8_bytes bytes, 256-aligned.
void quantize_act_q8(const float* x, int64_t n_tokens, int64_t n_in, void* act, cudaStream_t stream);

// The two parts of act: the quants and the (d, d·Σq) pairs.
void act_q8_parts(void* act, int64_t n_in, int64_t n_tokens, int8_t*& q, float2*& s);

// y [n_tokens, n_out] = W · x for the x that `act` holds (n_tokens <= kGemvMaxTokens).
void gemv_q8(const DeviceWeight& w, const void* act, int64_t n_tokens, float* y, cudaStream_t stream);

// y_i = W_i · x for several weights of one input width (Q, K and V; gate and up), each y_i
// bit for bit what gemv_q8 gives alone: one launch per weight type (4 weights at most), so small
// matrices fill the GPU together and one launch's ramp and tail are paid instead of several.
struct GemvOut {
  const DeviceWeight* w;
  float* y;
};
void gemv_q8_many(const GemvOut* outs, int count, const void* act, int64_t n_tokens, cudaStream_t stream);

}  // namespace keel::cuda
