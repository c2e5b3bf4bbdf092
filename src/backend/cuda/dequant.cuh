// Device-side dequantization of GGUF weight blocks (layouts: quant/blocks.h, docs/specs/quants.md).
//
// dequant32<T>(row, unit, out) writes elements [32 unit, 32 unit + 32) of a row. The arithmetic
// is the scalar reference's (quant/dequant.cpp), operation for operation, with FMA contraction
// forbidden (__fmul_rn / __fsub_rn), so the f32 values are bit-identical with the CPU's.
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

template <quant::Type T> struct QuantTraits;
template <> struct QuantTraits<quant::Type::Q4_0> { static constexpr int block_elems = 32, block_bytes = 18; };
template <> struct QuantTraits<quant::Type::Q8_0> { static constexpr int block_elems = 32, block_bytes = 34; };
template <> struct QuantTraits<quant::Type::Q4_K> { static constexpr int block_elems = 256, block_bytes = 144; };
template <> struct QuantTraits<quant::Type::Q5_K> { static constexpr int block_elems = 256, block_bytes = 176; };
template <> struct QuantTraits<quant::Type::Q6_K> { static constexpr int block_elems = 256, block_bytes = 210; };

template <quant::Type T>
__device__ __forceinline__ void dequant32(const uint8_t* row, int64_t unit, float* out) {
  using Tr = QuantTraits<T>;
  constexpr int units_per_block = Tr::block_elems / 32;
  const uint8_t* b = row + (unit / units_per_block) * Tr::block_bytes;
  const int u = static_cast<int>(unit % units_per_block);
  if constexpr (T == quant::Type::Q4_0) {
    const float d = f16_bits_to_f32(load_u16(b));
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int q = b[2 + j];
      out[j] = __fmul_rn(d, static_cast<float>((q & 0x0F) - 8));
      out[j + 16] = __fmul_rn(d, static_cast<float>((q >> 4) - 8));
    }
  } else if constexpr (T == quant::Type::Q8_0) {
    const float d = f16_bits_to_f32(load_u16(b));
#pragma unroll
    for (int j = 0; j < 32; ++j) out[j] = __fmul_rn(d, static_cast<float>(static_cast<int8_t>(b[2 + j])));
  } else if constexpr (T == quant::Type::Q4_K || T == quant::Type::Q5_K) {
    const float d = f16_bits_to_f32(load_u16(b));
    const float dmin = f16_bits_to_f32(load_u16(b + 2));
    int sc, m;
    scale_min_k4(u, b + 4, sc, m);
    const float d0 = __fmul_rn(d, static_cast<float>(sc)), min0 = __fmul_rn(dmin, static_cast<float>(m));
    const int shift = (u & 1) * 4;
    if constexpr (T == quant::Type::Q4_K) {
      const uint8_t* qs = b + 16 + 32 * (u / 2);
#pragma unroll
      for (int l = 0; l < 32; ++l) out[l] = __fsub_rn(__fmul_rn(d0, static_cast<float>((qs[l] >> shift) & 0x0F)), min0);
    } else {
      const uint8_t* qh = b + 16;
      const uint8_t* qs = b + 48 + 32 * (u / 2);
#pragma unroll
      for (int l = 0; l < 32; ++l) {
        const int q = ((qs[l] >> shift) & 0x0F) + (((qh[l] >> u) & 1) << 4);
        out[l] = __fsub_rn(__fmul_rn(d0, static_cast<float>(q)), min0);
      }
    }
  } else {  // Q6_K: unit u = half u/4, quarter u%4 of that half
    const int half = u / 4, quarter = u % 4;
    const uint8_t* ql = b + 64 * half + (quarter & 1) * 32;
    const uint8_t* qh = b + 128 + 32 * half;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192) + 8 * half + 2 * quarter;
    const float d = f16_bits_to_f32(load_u16(b + 208));
    const int lo_shift = (quarter >> 1) * 4, hi_shift = 2 * quarter;
#pragma unroll
    for (int l = 0; l < 32; ++l) {
      const int q = (((ql[l] >> lo_shift) & 0x0F) | (((qh[l] >> hi_shift) & 3) << 4)) - 32;
      out[l] = __fmul_rn(__fmul_rn(d, static_cast<float>(sc[l / 16])), static_cast<float>(q));
    }
  }
}

// One element of a float-typed row (F32, F16, BF16).
template <quant::Type T>
__device__ __forceinline__ float load_float_elem(const uint8_t* row, int64_t i) {
  if constexpr (T == quant::Type::F32) return reinterpret_cast<const float*>(row)[i];
  else if constexpr (T == quant::Type::F16) return f16_bits_to_f32(reinterpret_cast<const uint16_t*>(row)[i]);
  else return bf16_bits_to_f32(reinterpret_cast<const uint16_t*>(row)[i]);
}

}  // namespace keel::cuda
