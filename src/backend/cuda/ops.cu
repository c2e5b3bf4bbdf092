#include <cmath>

#include "backend/cuda/act_q8.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemv_q8.cuh"
#include "backend/cuda/ops.cuh"
#include "keel/error.h"

namespace keel::cuda {
namespace {

constexpr int kThreads = 256;
unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }
// Threads of a one-CTA-per-row norm: a multiple of 32 (the fused quantization's warps).
int norm_threads(int64_t dim) { return dim >= 1024 ? 512 : dim >= 256 ? 256 : dim > 64 ? 128 : 64; }

// One CTA per row; squares summed in double (the CPU twin's precision). With act_q (rows of a
// multiple of 32, block size a multiple of 32): the row's 8-bit activations too (act_q8.cuh),
// so the next matmul need not quantize it again.
__global__ void rms_norm_kernel(const float* x, const int32_t* rows, const float* __restrict__ w, float* out,
                                int64_t dim, float eps, int8_t* act_q, float2* act_s) {
  const int64_t r = blockIdx.x;
  const float* xr = x + (rows ? rows[r] : r) * dim;
  float* o = out + r * dim;
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) sum += static_cast<double>(xr[i]) * xr[i];
  __shared__ double partial[32];
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x < 32) {
    double s = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0.0;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (threadIdx.x == 0) partial[0] = s;
  }
  __syncthreads();
  const float scale = static_cast<float>(1.0 / sqrt(partial[0] / static_cast<double>(dim) + eps));
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = __fmul_rn(__fmul_rn(xr[i], scale), w[i]);
    o[i] = v;
    if (act_q) {  // a warp's 32 consecutive i are one group
      const int64_t g = (r * dim + i) / 32;
      quantize_group_q8(v, threadIdx.x % 32, act_q + g * 32, act_s + g);
    }
  }
}

// One thread per (token, pair i) and group of kRopeHeads heads (grid y): the angle in double,
// then the group's pairs, all loaded before any is stored (the heads' loads in flight at once).
constexpr int kRopeHeads = 8;
__global__ void rope_kernel(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const int32_t* pos,
                            RopeArgs a) {
  const int half = a.n_rot / 2;
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= n_tokens * half) return;
  const int64_t t = idx / half;
  const int i = static_cast<int>(idx % half);
  double inv_freq = pow(static_cast<double>(a.base), -2.0 * i / a.n_rot) * a.freq_scale;
  if (a.freq_factors) inv_freq /= a.freq_factors[i];
  const double theta = static_cast<double>(pos[t]) * inv_freq;
  const float c = static_cast<float>(cos(theta));
  const float s = static_cast<float>(sin(theta));
  const int ia = a.mode == RopeMode::norm ? 2 * i : i;
  const int ib = a.mode == RopeMode::norm ? 2 * i + 1 : i + half;
  const int64_t h0 = int64_t{blockIdx.y} * kRopeHeads;
  float x0[kRopeHeads], x1[kRopeHeads];
#pragma unroll
  for (int j = 0; j < kRopeHeads; ++j) {
    if (h0 + j >= n_heads) break;
    const float* v = x + (t * n_heads + h0 + j) * head_dim;
    x0[j] = v[ia];
    x1[j] = v[ib];
  }
#pragma unroll
  for (int j = 0; j < kRopeHeads; ++j) {
    if (h0 + j >= n_heads) break;
    float* v = x + (t * n_heads + h0 + j) * head_dim;
    v[ia] = __fsub_rn(__fmul_rn(x0[j], c), __fmul_rn(x1[j], s));
    v[ib] = __fadd_rn(__fmul_rn(x0[j], s), __fmul_rn(x1[j], c));
  }
}

__global__ void silu_mul_kernel(float* gate, const float* up, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i];
  gate[i] = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), up[i]);
}

__global__ void add_kernel(float* y, const float* x, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) y[i] += x[i];
}

__global__ void add_bias_kernel(float* x, const float* bias, int64_t n, int64_t dim) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) x[i] += bias[i % dim];
}

__global__ void sigmoid_gate_kernel(float* x, int64_t xs, const float* gate, int64_t gs, int64_t n_rows, int64_t width) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n_rows * width) return;
  const int64_t r = i / width, k = i % width;
  float* p = x + r * xs + k;
  *p = __fdiv_rn(*p, __fadd_rn(1.0f, expf(-gate[r * gs + k])));
}

}  // namespace

void rms_norm(const float* x, const float* w, float* out, int64_t n_rows, int64_t dim, float eps, cudaStream_t stream) {
  rms_norm_rows(x, nullptr, w, out, n_rows, dim, eps, stream);
}

void rms_norm_rows(const float* x, const int32_t* rows, const float* w, float* out, int64_t n_rows, int64_t dim,
                   float eps, cudaStream_t stream) {
  if (n_rows <= 0) return;
  const int threads = norm_threads(dim);
  rms_norm_kernel<<<static_cast<unsigned>(n_rows), threads, 0, stream>>>(x, rows, w, out, dim, eps, nullptr, nullptr);
  check_launch("rms_norm");
}

void rms_norm_q8(const float* x, const float* w, float* out, int64_t n_rows, int64_t dim, float eps, void* act,
                 cudaStream_t stream) {
  if (n_rows <= 0) return;
  if (dim % 32 != 0) throw Error("internal: rms_norm_q8 needs rows of a multiple of 32");
  int8_t* q = nullptr;
  float2* s = nullptr;
  act_q8_parts(act, dim, n_rows, q, s);
  const int threads = norm_threads(dim);
  rms_norm_kernel<<<static_cast<unsigned>(n_rows), threads, 0, stream>>>(x, nullptr, w, out, dim, eps, q, s);
  check_launch("rms_norm_q8");
}

void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const int32_t* pos, const RopeArgs& args,
          cudaStream_t stream) {
  const int64_t n = n_tokens * (args.n_rot / 2);
  if (n <= 0) return;
  const dim3 grid(blocks_for(n), static_cast<unsigned>((n_heads + kRopeHeads - 1) / kRopeHeads));
  rope_kernel<<<grid, kThreads, 0, stream>>>(x, n_tokens, n_heads, head_dim, pos, args);
  check_launch("rope");
}

void silu_mul(float* gate, const float* up, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  silu_mul_kernel<<<blocks_for(n), kThreads, 0, stream>>>(gate, up, n);
  check_launch("silu_mul");
}

void add_inplace(float* y, const float* x, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  add_kernel<<<blocks_for(n), kThreads, 0, stream>>>(y, x, n);
  check_launch("add_inplace");
}

void add_bias(float* x, const float* bias, int64_t n_rows, int64_t dim, cudaStream_t stream) {
  if (n_rows * dim <= 0) return;
  add_bias_kernel<<<blocks_for(n_rows * dim), kThreads, 0, stream>>>(x, bias, n_rows * dim, dim);
  check_launch("add_bias");
}

void sigmoid_gate(float* x, int64_t x_stride, const float* gate, int64_t gate_stride, int64_t n_rows, int64_t width,
                  cudaStream_t stream) {
  if (n_rows * width <= 0) return;
  sigmoid_gate_kernel<<<blocks_for(n_rows * width), kThreads, 0, stream>>>(x, x_stride, gate, gate_stride, n_rows, width);
  check_launch("sigmoid_gate");
}

}  // namespace keel::cuda
