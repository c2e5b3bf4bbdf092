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

}  // namespace keel::cuda
