#include <cuda_fp16.h>

#include <cmath>

#include "backend/cuda/act_q8.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemv_q8.cuh"
#include "backend/cuda/kv_store.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/ops.cuh"
#include "backend/cuda/warp.cuh"
#include "keel/error.h"

namespace keel::cuda {
namespace {

constexpr int kThreads = 256;
unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }
// Four floats rounded to nearest f16 (f32_to_f16's bits) at an 8-byte aligned p.
__device__ __forceinline__ void store_f16x4(__half* p, float4 v) {
  auto* p2 = reinterpret_cast<__half2*>(p);
  p2[0] = __floats2half2_rn(v.x, v.y);
  p2[1] = __floats2half2_rn(v.z, v.w);
}
// Threads of a one-CTA-per-row norm: a multiple of 32 (the fused quantization's warps).
int norm_threads(int64_t dim) { return dim >= 1024 ? 512 : dim >= 256 ? 256 : dim > 64 ? 128 : 64; }

// One CTA per row; squares summed in double (the CPU twin's precision). With act_q (rows of a
// multiple of 32, block size a multiple of 32): the row's 8-bit activations too (act_q8.cuh),
// so the next matmul need not quantize it again. With f16: out rounded to f16 there too (the
// prefill GEMM's input, f32_to_f16's bits). With residual (rows null): x += residual first, in
// place (the residual add before the norm).
__global__ void rms_norm_kernel(const float* x, const int32_t* rows, const float* __restrict__ w, float* out,
                                int64_t dim, float eps, int8_t* act_q, float2* act_s, const float* residual,
                                __half* f16) {
  pdl_enter();
  const int64_t r = blockIdx.x;
  const float* xr = x + (rows ? rows[r] : r) * dim;
  float* o = out + r * dim;
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = xr[i];
    if (residual) {
      v += residual[r * dim + i];
      const_cast<float*>(xr)[i] = v;
    }
    sum += static_cast<double>(v) * v;
  }
  const float scale = static_cast<float>(1.0 / sqrt(block_sum(sum) / static_cast<double>(dim) + eps));
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = __fmul_rn(__fmul_rn(xr[i], scale), w[i]);
    o[i] = v;
    if (f16) f16[r * dim + i] = __float2half_rn(v);
    if (act_q) {  // a warp's 32 consecutive i are one group
      const int64_t g = (r * dim + i) / 32;
      quantize_group_q8(v, threadIdx.x % 32, act_q + g * 32, act_s + g);
    }
  }
}

// The same for rows of a multiple of 128 up to 8192 floats (16-byte aligned): each of the
// CTA's dim / (4 V) threads keeps V float4 of the row in registers, so the row is read once
// with all its loads in flight together (a decode norm is one CTA: its latency is the op's).
template <int V>
__global__ void rms_norm_vec_kernel(const float* x, const int32_t* rows, const float* __restrict__ w, float* out,
                                    int64_t dim, float eps, int8_t* act_q, float2* act_s, const float* residual,
                                    __half* f16) {
  // The weights are read before the wait for the kernel before (no kernel writes them), so
  // their load is not in the chain after the row's sum.
  const int n4 = blockDim.x;
  const auto* w4 = reinterpret_cast<const float4*>(w);
  float4 wv[V];
#pragma unroll
  for (int k = 0; k < V; ++k) wv[k] = w4[threadIdx.x + k * n4];
  pdl_enter();
  const int64_t r = blockIdx.x;
  auto* xr = reinterpret_cast<float4*>(const_cast<float*>(x + (rows ? rows[r] : r) * dim));
  float4 v[V];
  double sum = 0.0;
#pragma unroll
  for (int k = 0; k < V; ++k) v[k] = xr[threadIdx.x + k * n4];
  if (residual) {
    const auto* res = reinterpret_cast<const float4*>(residual + r * dim);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float4 a = res[threadIdx.x + k * n4];
      v[k] = make_float4(v[k].x + a.x, v[k].y + a.y, v[k].z + a.z, v[k].w + a.w);
      xr[threadIdx.x + k * n4] = v[k];
    }
  }
#pragma unroll
  for (int k = 0; k < V; ++k)
    sum += double(v[k].x) * v[k].x + double(v[k].y) * v[k].y + double(v[k].z) * v[k].z + double(v[k].w) * v[k].w;
  const float scale = static_cast<float>(1.0 / sqrt(block_sum(sum) / static_cast<double>(dim) + eps));
  auto* o4 = reinterpret_cast<float4*>(out + r * dim);
#pragma unroll
  for (int k = 0; k < V; ++k) {
    const int i4 = threadIdx.x + k * n4;
    const float4 wk = wv[k];
    const float4 o = make_float4(__fmul_rn(__fmul_rn(v[k].x, scale), wk.x), __fmul_rn(__fmul_rn(v[k].y, scale), wk.y),
                                 __fmul_rn(__fmul_rn(v[k].z, scale), wk.z), __fmul_rn(__fmul_rn(v[k].w, scale), wk.w));
    o4[i4] = o;
    if (f16) store_f16x4(f16 + r * dim + 4 * int64_t(i4), o);
    if (act_q) {  // 8 lanes' 32 consecutive values are one group
      const int64_t g = (r * dim + 4 * int64_t(i4)) / 32;
      quantize_group4_q8(o, threadIdx.x % 8, act_q + g * 32, act_s + g);
    }
  }
}

// Picks the kernel: the vector one where the row fits it, else the general one.
void launch_norm(const float* x, const int32_t* rows, const float* w, float* out, int64_t n_rows, int64_t dim, float eps,
                 int8_t* q, float2* s, const float* residual, cudaStream_t stream, void* f16 = nullptr) {
  auto* h = static_cast<__half*>(f16);
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const int v = dim <= 4096 ? 1 : 2;
  if (dim % (128 * v) == 0 && dim <= 8192 && aligned(x) && aligned(w) && aligned(out) && (!residual || aligned(residual))) {
    const unsigned threads = static_cast<unsigned>(dim / (4 * v));
    if (v == 1) launch(rms_norm_vec_kernel<1>, unsigned(n_rows), threads, 0, stream, x, rows, w, out, dim, eps, q, s,
                       residual, h);
    else launch(rms_norm_vec_kernel<2>, unsigned(n_rows), threads, 0, stream, x, rows, w, out, dim, eps, q, s,
                residual, h);
    return;
  }
  launch(rms_norm_kernel, static_cast<unsigned>(n_rows), norm_threads(dim), 0, stream, x, rows, w, out, dim, eps, q, s,
         residual, h);
}

// One thread per (token, pair i) and group of kRopeHeads heads (grid y): the angle in double,
// then the group's pairs, all loaded before any is stored (the heads' loads in flight at once).
constexpr int kRopeHeads = 8;
__global__ void rope_kernel(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const int32_t* pos,
                            RopeArgs a) {
  pdl_enter();
  const int half = a.n_rot / 2;
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= n_tokens * half) return;
  const int64_t t = idx / half;
  const int i = static_cast<int>(idx % half);
  const float2 cs = rope_cos_sin(a, pos[t], i);
  const RopePair p = rope_pair(a, i);
  const int ia = p.lo, ib = p.hi;
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
    const float2 r = rope_rotate(x0[j], x1[j], cs);
    v[ia] = r.x;
    v[ib] = r.y;
  }
}

// Per-head RMSNorm (when qn is set) then RoPE of q's and k's heads in one launch: CTA (token,
// head), heads [0, n_q) of q then [0, n_k) of k; thread j holds a rotated pair (j < n_rot / 2) or
// two of the dims past n_rot. The norm's and rotation's float operations are rms_norm's and
// rope_kernel's (only the double sum's order differs).
// One CTA of head_dim / 2 threads per (token, head): grid y covers the q heads, then the k heads,
// then (when `store` has a pool) the v heads, which go to the cache as they are. Normed and
// rotated k heads go back to k and, from there, to the cache (the bytes kv_write would store).
struct KvStore {
  KvLayout kv;
  uint8_t* base = nullptr;  // null: no cache writes
  AttentionBatch b;
  const float* v = nullptr;
};

__global__ void norm_rope_qk_kernel(float* q, int64_t n_q, float* k, int64_t n_k, int64_t head_dim,
                                    const float* __restrict__ qn, const float* __restrict__ kn, float eps,
                                    const int32_t* pos, RopeArgs a, KvStore store, const float* q_src,
                                    int64_t q_src_stride) {
  const int64_t t = blockIdx.x, h = blockIdx.y;
  const int half_dim = static_cast<int>(head_dim / 2), j = threadIdx.x;
  // The pair's angle and norm weights before the wait for the kernel before (positions are the
  // call's metadata, launch.cuh): the angle's double-precision latency is then off the chain.
  const RopePair p = rope_pair(a, j);
  const bool rotates = h < n_q + n_k && p.rotated;
  const float2 cs = rotates ? rope_cos_sin(a, pos[t], j) : make_float2(1.0f, 0.0f);
  const float* w = h < n_q ? qn : h < n_q + n_k ? kn : nullptr;
  const float w0 = w ? w[p.lo] : 0.0f, w1 = w ? w[p.hi] : 0.0f;
  pdl_enter();
  if (h >= n_q + n_k) {
    const int64_t hv = h - n_q - n_k;
    const float* x = store.v + (t * n_k + hv) * head_dim;
    if (store.b.seq[t] >= 0)
      store_kv_head(store.kv, kv_row(store.kv, store.base, store.b, int(t), int(hv), true), x[j], x[j + half_dim], j,
                    half_dim);
    return;
  }
  const bool is_q = h < n_q;
  float* x = is_q ? q + (t * n_q + h) * head_dim : k + (t * n_k + (h - n_q)) * head_dim;
  const int ia = p.lo, ib = p.hi;
  const float* in = is_q && q_src ? q_src + (t * n_q + h) * q_src_stride : x;  // q_src: q's rows elsewhere
  float x0 = in[ia], x1 = in[ib];
  if (w) {
    const float scale = head_rms_scale(block_sum(double(x0) * x0 + double(x1) * x1), head_dim, eps);
    x0 = head_rms_apply(x0, scale, w0);
    x1 = head_rms_apply(x1, scale, w1);
  }
  if (rotates) {
    const float2 r = rope_rotate(x0, x1, cs);
    x0 = r.x;
    x1 = r.y;
  }
  x[ia] = x0;
  x[ib] = x1;
  if (is_q || !store.base) return;
  __syncthreads();  // the head's row is in k: read it back in the store's element order
  if (store.b.seq[t] >= 0)
    store_kv_head(store.kv, kv_row(store.kv, store.base, store.b, int(t), int(h - n_q), false), x[j], x[j + half_dim],
                  j, half_dim);
}

// With act_q (n a multiple of 32): gate's 8-bit activations too, a warp's 32 elements a group;
// with f16, its f16 copy (as rms_norm_kernel's).
__global__ void silu_mul_kernel(float* gate, const float* up, int64_t n, int8_t* act_q, float2* act_s, __half* f16) {
  pdl_enter();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i];
  const float v = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), up[i]);
  gate[i] = v;
  if (f16) f16[i] = __float2half_rn(v);
  if (act_q) quantize_group_q8(v, threadIdx.x % 32, act_q + i / 32 * 32, act_s + i / 32);
}

// The same four elements a thread (16-byte loads and stores; n a multiple of 4, both arrays
// 16-byte aligned, f16 8-byte aligned), the same bits. H200, the 173K-token Qwen3.5-27B job (FFN of 17408, chunks
// of 16384 tokens), mean per call: 1.34 -> 0.75 ms.
__global__ void silu_mul4_kernel(float4* gate, const float4* up, int64_t n4, __half* f16) {
  pdl_enter();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n4) return;
  const float4 g = gate[i], u = up[i];
  auto f = [](float g, float u) { return __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), u); };
  const float4 v = make_float4(f(g.x, u.x), f(g.y, u.y), f(g.z, u.z), f(g.w, u.w));
  gate[i] = v;
  if (f16) store_f16x4(f16 + 4 * i, v);
}

__global__ void add_kernel(float* y, const float* x, int64_t n) {
  pdl_enter();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) y[i] += x[i];
}

__global__ void add_bias_kernel(float* x, const float* bias, int64_t n, int64_t dim) {
  pdl_enter();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) x[i] += bias[i % dim];
}

// With act_q (width a multiple of 32): the 8-bit activations of the rows packed, a warp's 32
// elements a group (as silu_mul_kernel's).
__global__ void sigmoid_gate_kernel(float* x, int64_t xs, const float* gate, int64_t gs, int64_t n_rows, int64_t width,
                                    __half* f16, int8_t* act_q, float2* act_s) {
  pdl_enter();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n_rows * width) return;
  const int64_t r = i / width, k = i % width;
  float* p = x + r * xs + k;
  const float v = __fdiv_rn(*p, __fadd_rn(1.0f, expf(-gate[r * gs + k])));
  *p = v;
  if (f16) f16[i] = __float2half_rn(v);  // rows of width, packed
  if (act_q) quantize_group_q8(v, threadIdx.x % 32, act_q + i / 32 * 32, act_s + i / 32);
}

}  // namespace

void rms_norm(const float* x, const float* w, float* out, int64_t n_rows, int64_t dim, float eps, cudaStream_t stream,
              void* f16) {
  if (n_rows <= 0) return;
  launch_norm(x, nullptr, w, out, n_rows, dim, eps, nullptr, nullptr, nullptr, stream, f16);
}

void rms_norm_rows(const float* x, const int32_t* rows, const float* w, float* out, int64_t n_rows, int64_t dim,
                   float eps, cudaStream_t stream) {
  if (n_rows <= 0) return;
  launch_norm(x, rows, w, out, n_rows, dim, eps, nullptr, nullptr, nullptr, stream);
}

void rms_norm_q8(const float* x, const float* w, float* out, int64_t n_rows, int64_t dim, float eps, void* act,
                 cudaStream_t stream) {
  if (n_rows <= 0) return;
  if (dim % 32 != 0) throw Error("internal: rms_norm_q8 needs rows of a multiple of 32");
  int8_t* q = nullptr;
  float2* s = nullptr;
  act_q8_parts(act, dim, n_rows, q, s);
  launch_norm(x, nullptr, w, out, n_rows, dim, eps, q, s, nullptr, stream);
}

void add_rms_norm(float* y, const float* x, const float* w, float* out, int64_t n_rows, int64_t dim, float eps, void* act,
                  cudaStream_t stream, void* f16) {
  if (n_rows <= 0) return;
  int8_t* q = nullptr;
  float2* s = nullptr;
  if (act) {
    if (dim % 32 != 0) throw Error("internal: add_rms_norm with 8-bit activations needs rows of a multiple of 32");
    act_q8_parts(act, dim, n_rows, q, s);
  }
  launch_norm(y, nullptr, w, out, n_rows, dim, eps, q, s, x, stream, f16);
}

void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const int32_t* pos, const RopeArgs& args,
          cudaStream_t stream) {
  const int64_t n = n_tokens * (args.n_rot / 2);
  if (n <= 0) return;
  const dim3 grid(blocks_for(n), static_cast<unsigned>((n_heads + kRopeHeads - 1) / kRopeHeads));
  launch(rope_kernel, grid, kThreads, 0, stream, x, n_tokens, n_heads, head_dim, pos, args);
}

bool norm_rope_qk_fits(int64_t head_dim, int n_rot) {
  return head_dim % 64 == 0 && head_dim <= 2048 && n_rot % 2 == 0 && n_rot <= head_dim;
}

void norm_rope_qk(float* q, int64_t n_q, float* k, int64_t n_k, int64_t n_tokens, int64_t head_dim, const float* q_norm,
                  const float* k_norm, float eps, const int32_t* pos, const RopeArgs& args, cudaStream_t stream) {
  if (!norm_rope_qk_fits(head_dim, args.n_rot)) throw Error("internal: norm_rope_qk head size");
  if (n_tokens <= 0) return;
  const dim3 grid(static_cast<unsigned>(n_tokens), static_cast<unsigned>(n_q + n_k));
  launch(norm_rope_qk_kernel, grid, static_cast<unsigned>(head_dim / 2), 0, stream, q, n_q, k, n_k, head_dim, q_norm,
         k_norm, eps, pos, args, KvStore{}, nullptr, int64_t{0});
}

void norm_rope_kv_write(float* q, int64_t n_q, float* k, const float* v, int64_t n_k, int64_t head_dim,
                        const float* q_norm, const float* k_norm, float eps, const RopeArgs& args, const KvLayout& kv,
                        void* base, const AttentionBatch& batch, cudaStream_t stream, const float* q_src,
                        int64_t q_src_stride) {
  if (!norm_rope_qk_fits(head_dim, args.n_rot) || kv.head_dim != head_dim || kv.n_kv_heads != n_k)
    throw Error("internal: norm_rope_kv_write geometry");
  if (batch.n_tokens <= 0) return;
  const dim3 grid(static_cast<unsigned>(batch.n_tokens), static_cast<unsigned>(n_q + 2 * n_k));
  launch(norm_rope_qk_kernel, grid, static_cast<unsigned>(head_dim / 2), 0, stream, q, n_q, k, n_k, head_dim, q_norm,
         k_norm, eps, batch.pos, args, KvStore{kv, static_cast<uint8_t*>(base), batch, v}, q_src, q_src_stride);
}

void silu_mul(float* gate, const float* up, int64_t n, cudaStream_t stream, void* f16) {
  if (n <= 0) return;
  auto* h = static_cast<__half*>(f16);
  if (n % 4 == 0 && reinterpret_cast<uintptr_t>(gate) % 16 == 0 && reinterpret_cast<uintptr_t>(up) % 16 == 0 &&
      reinterpret_cast<uintptr_t>(h) % 8 == 0) {
    launch(silu_mul4_kernel, blocks_for(n / 4), kThreads, 0, stream, reinterpret_cast<float4*>(gate),
           reinterpret_cast<const float4*>(up), n / 4, h);
    return;
  }
  launch(silu_mul_kernel, blocks_for(n), kThreads, 0, stream, gate, up, n, nullptr, nullptr, h);
}

void silu_mul_q8(float* gate, const float* up, int64_t n_rows, int64_t dim, void* act, cudaStream_t stream) {
  if (n_rows * dim <= 0) return;
  if (dim % 32 != 0) throw Error("internal: silu_mul_q8 needs rows of a multiple of 32");
  int8_t* q = nullptr;
  float2* s = nullptr;
  act_q8_parts(act, dim, n_rows, q, s);
  launch(silu_mul_kernel, blocks_for(n_rows * dim), kThreads, 0, stream, gate, up, n_rows * dim, q, s, nullptr);
}

void add_inplace(float* y, const float* x, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  launch(add_kernel, blocks_for(n), kThreads, 0, stream, y, x, n);
}

void add_bias(float* x, const float* bias, int64_t n_rows, int64_t dim, cudaStream_t stream) {
  if (n_rows * dim <= 0) return;
  launch(add_bias_kernel, blocks_for(n_rows * dim), kThreads, 0, stream, x, bias, n_rows * dim, dim);
}

void sigmoid_gate(float* x, int64_t x_stride, const float* gate, int64_t gate_stride, int64_t n_rows, int64_t width,
                  cudaStream_t stream, void* f16, void* act) {
  if (n_rows * width <= 0) return;
  int8_t* q = nullptr;
  float2* s = nullptr;
  if (act) {
    if (width % 32 != 0) throw Error("internal: sigmoid_gate with 8-bit activations needs rows of a multiple of 32");
    act_q8_parts(act, n_rows * width, 1, q, s);
  }
  launch(sigmoid_gate_kernel, blocks_for(n_rows * width), kThreads, 0, stream, x, x_stride, gate, gate_stride, n_rows,
         width, static_cast<__half*>(f16), q, s);
}

}  // namespace keel::cuda
