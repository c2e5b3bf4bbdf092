// Device side of the 8-bit activations (gemv_q8.cuh): one warp quantizes one group of 32 inputs.
// Shared by the quantization kernel and the fused RMSNorm, so both give the same bits.
#pragma once
#include <cstdint>

#include "backend/cuda/warp.cuh"

namespace keel::cuda {

// Lane `lane` holds input v of the group: q[lane] = round(v / d) with d = max |v| / 127 (IEEE
// division, round half to even), and lane 0 stores (d, d·Σq) in *s. Whole warps only.
__device__ __forceinline__ void quantize_group_q8(float v, int lane, int8_t* q, float2* s) {
  const float amax = warp_max(fabsf(v));
  const float d = amax / 127.0f;
  const int qi = amax == 0.0f ? 0 : __float2int_rn(v / d);
  const int sum = warp_sum(qi);
  q[lane] = static_cast<int8_t>(qi);
  if (lane == 0) *s = make_float2(d, d * float(sum));
}

// The same bits for a group spread over 8 lanes of 4 inputs each: lane `lane8` (0..7) holds
// inputs 4 lane8 .. 4 lane8 + 3 of the group; the 8 lanes are an aligned eighth of the warp,
// and every lane of the warp takes part.
__device__ __forceinline__ void quantize_group4_q8(float4 v, int lane8, int8_t* q, float2* s) {
  float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
#pragma unroll
  for (int o = 4; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const float d = amax / 127.0f;
  const int q0 = amax == 0.0f ? 0 : __float2int_rn(v.x / d), q1 = amax == 0.0f ? 0 : __float2int_rn(v.y / d);
  const int q2 = amax == 0.0f ? 0 : __float2int_rn(v.z / d), q3 = amax == 0.0f ? 0 : __float2int_rn(v.w / d);
  int sum = q0 + q1 + q2 + q3;
#pragma unroll
  for (int o = 4; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  const uint32_t packed = (uint32_t(q0) & 0xFFu) | (uint32_t(q1) & 0xFFu) << 8 | (uint32_t(q2) & 0xFFu) << 16 |
                          (uint32_t(q3) & 0xFFu) << 24;
  reinterpret_cast<uint32_t*>(q)[lane8] = packed;
  if (lane8 == 0) *s = make_float2(d, d * float(sum));
}

}  // namespace keel::cuda
