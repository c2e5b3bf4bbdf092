// The attention inputs' per-head RMSNorm and RoPE: the arguments (host and device) and the device
// arithmetic of rope_kernel and norm_rope_qk_kernel (ops.cu), one definition for both. As the
// CPU's: angles in double rounded to float, unfused f32 multiplies, squares summed in double.
#pragma once
#include <cstdint>

namespace keel::cuda {

enum class RopeMode { norm, neox };  // NORM: adjacent pairs (2i, 2i+1); NEOX: (i, i + n_rot/2)
struct RopeArgs {
  RopeMode mode = RopeMode::norm;
  int n_rot = 0;                        // rotated dims per head (<= head_dim, even)
  float base = 10000.0f;
  float freq_scale = 1.0f;
  const float* freq_factors = nullptr;  // device [n_rot / 2] divisors, or null
};

#ifdef __CUDACC__
// The two head dimensions thread j of a head's head_dim / 2 threads holds: RoPE's pair j while
// j < n_rot / 2, else two of the dimensions past n_rot (not rotated).
struct RopePair {
  int lo, hi;
  bool rotated;
};
__device__ __forceinline__ RopePair rope_pair(const RopeArgs& a, int j) {
  const int half = a.n_rot / 2;
  if (j >= half) return {2 * j, 2 * j + 1, false};
  return a.mode == RopeMode::norm ? RopePair{2 * j, 2 * j + 1, true} : RopePair{j, j + half, true};
}

// The cosine and sine of pair i's angle at position pos.
__device__ __forceinline__ float2 rope_cos_sin(const RopeArgs& a, int pos, int i) {
  double inv_freq = pow(static_cast<double>(a.base), -2.0 * i / a.n_rot) * a.freq_scale;
  if (a.freq_factors) inv_freq /= a.freq_factors[i];
  const double theta = static_cast<double>(pos) * inv_freq;
  return make_float2(static_cast<float>(cos(theta)), static_cast<float>(sin(theta)));
}

// The pair (x0, x1) rotated by the angle of cs = (cos, sin).
__device__ __forceinline__ float2 rope_rotate(float x0, float x1, float2 cs) {
  return make_float2(__fsub_rn(__fmul_rn(x0, cs.x), __fmul_rn(x1, cs.y)),
                     __fadd_rn(__fmul_rn(x0, cs.y), __fmul_rn(x1, cs.x)));
}

// RMSNorm's factor for a head of `dim` values whose squares sum to sum_sq.
__device__ __forceinline__ float head_rms_scale(double sum_sq, int64_t dim, float eps) {
  return static_cast<float>(1.0 / sqrt(sum_sq / static_cast<double>(dim) + eps));
}
// x normed: (x * scale) * w, two roundings as the CPU's.
__device__ __forceinline__ float head_rms_apply(float x, float scale, float w) { return __fmul_rn(__fmul_rn(x, scale), w); }
#endif

}  // namespace keel::cuda
