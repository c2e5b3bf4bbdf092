// Device-side helpers for reading GGUF blocks (layouts: quant/blocks.h, docs/specs/quants.md):
// f16/bf16 conversion, 2-byte-aligned loads, the K-quant 6-bit scales. The per-type block
// readers live in matmul.cu (LaneBlock), shared by the GEMV and the dequantization kernels.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "quant/blocks.h"
#include "quant/types.h"

namespace keel::cuda {

__device__ __forceinline__ float f16_bits_to_f32(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float bf16_bits_to_f32(uint16_t b) { return __uint_as_float(uint32_t{b} << 16); }

// Unaligned-safe little-endian loads from 2-byte aligned block data.
__device__ __forceinline__ uint16_t load_u16(const uint8_t* p) { return *reinterpret_cast<const uint16_t*>(p); }
__device__ __forceinline__ uint32_t load_u32_a2(const uint8_t* p) {  // p 2-byte aligned
  return uint32_t{load_u16(p)} | (uint32_t{load_u16(p + 2)} << 16);
}

__device__ __forceinline__ void scale_min_k4(int s, const uint8_t* q, int& sc, int& m) {
  if (s < 4) {
    sc = q[s] & 63;
    m = q[s + 4] & 63;
  } else {
    sc = (q[s + 4] & 0x0F) | ((q[s - 4] >> 6) << 4);
    m = (q[s + 4] >> 4) | ((q[s] >> 6) << 4);
  }
}

// Byte k (run-time index) of 12 bytes held in three registers, without spilling them to memory.
__device__ __forceinline__ int byte_of(const uint32_t* w, int k) {
  const uint32_t word = k < 4 ? w[0] : k < 8 ? w[1] : w[2];
  return int((word >> (8 * (k % 4))) & 0xFF);
}
// get_scale_min_k4 on the 12 scale bytes held in registers.
__device__ __forceinline__ void scale_min_k4_regs(int s, const uint32_t* q, int& sc, int& m) {
  if (s < 4) {
    sc = byte_of(q, s) & 63;
    m = byte_of(q, s + 4) & 63;
  } else {
    sc = (byte_of(q, s + 4) & 0x0F) | ((byte_of(q, s - 4) >> 6) << 4);
    m = (byte_of(q, s + 4) >> 4) | ((byte_of(q, s) >> 6) << 4);
  }
}

// scale_min_k4_regs without branches: every shift, mask and choice depends on s alone, so a
// lane that keeps its s from block to block (the decode GEMV's) computes them once, where with a
// branch on s the lanes of a warp that differ in s take both sides. The same results for every s
// (GemvQ8EveryTypeMatchesReference reads all eight through it). The dequantization kernels keep
// the branching form: their speed was not measured with this one.
__device__ __forceinline__ void scale_min_k4_branchless(int s, const uint32_t* q, int& sc, int& m) {
  const bool lo = s < 4;
  const unsigned sh = 8 * (s & 3), low_mask = lo ? 63u : 15u, high_mask = lo ? 0u : 0x30u;
  const unsigned b0 = q[0] >> sh, b1 = q[1] >> sh, b2 = q[2] >> sh;
  sc = int(((lo ? b0 : b2) & low_mask) | ((b0 >> 2) & high_mask));
  m = int(((lo ? b1 : b2 >> 4) & low_mask) | ((b1 >> 2) & high_mask));
}

// One element of a float-typed row (F32, F16, BF16).
template <quant::Type T>
__device__ __forceinline__ float load_float_elem(const uint8_t* row, int64_t i) {
  if constexpr (T == quant::Type::F32) return reinterpret_cast<const float*>(row)[i];
  else if constexpr (T == quant::Type::F16) return f16_bits_to_f32(reinterpret_cast<const uint16_t*>(row)[i]);
  else return bf16_bits_to_f32(reinterpret_cast<const uint16_t*>(row)[i]);
}

}  // namespace keel::cuda
