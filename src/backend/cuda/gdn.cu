#include <cuda_fp16.h>
#include <cooperative_groups.h>
#include <cuda_pipeline_primitives.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "backend/cuda/act_q8.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gdn.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/warp.cuh"
#include "keel/error.h"

namespace keel::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 256;
unsigned blocks_for(int64_t n, int threads = kThreads) { return static_cast<unsigned>((n + threads - 1) / threads); }

__device__ __forceinline__ float silu(float x) { return __fdiv_rn(x, __fadd_rn(1.0f, expf(-x))); }

// ---- causal conv1d + SiLU ------------------------------------------------------------------------

// Row i of sequence s's extended input e = [state ; x].
__device__ __forceinline__ float conv_row(const float* x, const float* state, int64_t channels, int n_state,
                                          int64_t first, int64_t i, int64_t c) {
  return i < n_state ? state[i * channels + c] : x[(first + i - n_state) * channels + c];
}

// One thread per (token, channel): any kernel size.
__global__ void conv1d_silu_kernel(const float* x, int64_t channels, const float* __restrict__ w, int kernel,
                                   const float* state, float* out, SeqBatch b) {
  pdl_enter();
  const int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (idx >= b.n_tokens * channels) return;
  const int64_t t = idx / channels, c = idx % channels;
  const int s = b.seq[t];
  if (s < 0) return;
  const int64_t first = b.q_start[s];
  const int n_state = kernel - 1;
  const float* st = state + int64_t{b.slot[s]} * n_state * channels;
  float acc = 0.0f;
  for (int j = 0; j < kernel; ++j)
    acc = __fadd_rn(acc, __fmul_rn(w[c * kernel + j], conv_row(x, st, channels, n_state, first, t - first + j, c)));
  out[idx] = silu(acc);
}

// The same for kernel size K, one thread per channel and run of kConvRun tokens: the K rows a
// token's output reads stay in registers and slide by one row a token, so each input is loaded
// once (the kernel above loads it K times, and works out its token and channel by 64-bit
// division), and the run's inputs are loaded before any is used. A token that starts a run or
// a sequence loads its window afresh. Same operations in the same order: the same bits. H200,
// the 173K-token Qwen3.5-27B job (10240 channels, chunks of 16384 tokens), mean per call: 1.79 ->
// 0.48 ms.
constexpr int kConvRun = 16;
template <int K>
__global__ void conv1d_silu_runs_kernel(const float* x, int64_t channels, const float* __restrict__ w,
                                        const float* state, float* out, SeqBatch b) {
  pdl_enter();
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (c >= channels) return;
  constexpr int n_state = K - 1;
  float wc[K];
#pragma unroll
  for (int j = 0; j < K; ++j) wc[j] = w[c * K + j];
  for (int64_t t0 = int64_t{blockIdx.y} * kConvRun; t0 < b.n_tokens; t0 += int64_t{gridDim.y} * kConvRun) {
    const int n = int(min(int64_t{kConvRun}, b.n_tokens - t0));
    float xr[kConvRun];
#pragma unroll
    for (int r = 0; r < kConvRun; ++r)
      if (r < n) xr[r] = x[(t0 + r) * channels + c];
    float e[K];
    int prev = -1;  // the sequence of the window in e (-1: none)
#pragma unroll
    for (int r = 0; r < kConvRun; ++r) {
      if (r >= n) break;
      const int64_t t = t0 + r;
      const int s = b.seq[t];
      if (s < 0) {  // padding: no output, and the next token loads its window afresh
        prev = -1;
        continue;
      }
      if (s == prev) {
#pragma unroll
        for (int j = 0; j + 1 < K; ++j) e[j] = e[j + 1];
      } else {
        const int64_t first = b.q_start[s];
        const float* st = state + int64_t{b.slot[s]} * n_state * channels;
#pragma unroll
        for (int j = 0; j + 1 < K; ++j) e[j] = conv_row(x, st, channels, n_state, first, t - first + j, c);
        prev = s;
      }
      e[K - 1] = xr[r];
      float acc = 0.0f;
#pragma unroll
      for (int j = 0; j < K; ++j) acc = __fadd_rn(acc, __fmul_rn(wc[j], e[j]));
      out[t * channels + c] = silu(acc);
    }
  }
}

// One thread per (sequence, channel): the state becomes the last kernel-1 rows of e. Row m reads
// e[n + m] >= m, so ascending order never reads a state row it already overwrote.
__global__ void conv_state_kernel(const float* x, int64_t channels, int kernel, float* state, SeqBatch b) {
  pdl_enter();
  const int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (idx >= b.n_seqs * channels) return;
  const int s = static_cast<int>(idx / channels);
  const int64_t c = idx % channels;
  const int64_t first = b.q_start[s], n = b.q_start[s + 1] - first;
  const int n_state = kernel - 1;
  float* st = state + int64_t{b.slot[s]} * n_state * channels;
  for (int m = 0; m < n_state; ++m) st[m * channels + c] = conv_row(x, st, channels, n_state, first, n + m, c);
}

// ---- small GDN ops --------------------------------------------------------------------------------

// One warp per (row, head).
__global__ void l2_norm_heads_kernel(float* x, int64_t n_rows, int64_t row_stride, int64_t n_heads, int64_t dim,
                                     float eps, float scale) {
  pdl_enter();
  const int64_t warp = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= n_rows * n_heads) return;
  float* v = x + (warp / n_heads) * row_stride + (warp % n_heads) * dim;
  double sum = 0.0;
  for (int64_t i = lane; i < dim; i += 32) sum += double(v[i]) * v[i];
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  const float f = static_cast<float>(scale / sqrt(sum + eps));
  for (int64_t i = lane; i < dim; i += 32) v[i] = __fmul_rn(v[i], f);
}

__global__ void gdn_gates_kernel(float* beta, float* alpha, const float* ssm_a, const float* dt_bias, int64_t n,
                                 int64_t n_heads) {
  pdl_enter();
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= n) return;
  const int64_t h = i % n_heads;
  beta[i] = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-beta[i])));
  const float x = __fadd_rn(alpha[i], dt_bias[h]);
  const float softplus = x > 20.0f ? x : log1pf(expf(x));
  alpha[i] = __fmul_rn(ssm_a[h], softplus);
}

// A decode call's delta-rule inputs (one token per sequence, blockIdx.y the sequence): each warp
// takes one unit of its token, a q or k head (conv, SiLU, then the head's L2 norm, each lane
// holding channels lane + 32 i), a block of 32 * kVPerLane value channels (conv, SiLU), or, the
// last unit, the gates. Every value comes from the float operations of conv1d_silu_kernel,
// conv_state_kernel, l2_norm_heads_kernel and gdn_gates_kernel, in their order, so the bits are
// theirs. A thread reads its channel's state rows before it shifts them (one token: no other
// thread reads them), which the separate launches did with two kernels.
constexpr int kVPerLane = 4;
// N channels of one lane (c0 + lane + 32 i): every load first (the state rows, x, the conv
// weights: all in flight together), then the conv and SiLU into v, then the shifted state rows.
template <int N>
__device__ __forceinline__ void conv_channels(const GdnInputs& a, const float* x, float* st, int64_t c0, int lane,
                                              float (&v)[N]) {
  constexpr int K = kGdnInputsMaxKernel;
  const int n_state = a.kernel - 1;
  float e[N][K], w[N][K];
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const int64_t c = c0 + lane + 32 * i;
    if (c >= a.channels) continue;
#pragma unroll
    for (int j = 0; j < K; ++j) {
      if (j < n_state) e[i][j] = st[j * a.channels + c];
      else if (j == n_state) e[i][j] = x[c];
      if (j < a.kernel) w[i][j] = a.conv_w[c * a.kernel + j];
    }
  }
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const int64_t c = c0 + lane + 32 * i;
    if (c >= a.channels) continue;
    float acc = 0.0f;
#pragma unroll
    for (int j = 0; j < K; ++j)
      if (j < a.kernel) acc = __fadd_rn(acc, __fmul_rn(w[i][j], e[i][j]));
    v[i] = silu(acc);
#pragma unroll
    for (int m = 0; m + 1 < K; ++m)
      if (m < n_state) st[m * a.channels + c] = e[i][m + 1];
  }
}

template <int NPL>  // channels per lane of a q / k head (d_k / 32)
__global__ void gdn_decode_inputs_kernel(GdnInputs a, SeqBatch b) {
  pdl_enter();
  const int s = blockIdx.y, lane = threadIdx.x % 32;
  const int unit = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int64_t t = b.q_start[s];
  const int qk_units = 2 * a.n_k_heads;
  const int64_t key_dim = int64_t{a.n_k_heads} * a.d_k, value_dim = a.channels - 2 * key_dim;
  const int v_units = int((value_dim + 32 * kVPerLane - 1) / (32 * kVPerLane));
  if (unit > qk_units + v_units) return;
  if (unit == qk_units + v_units) {  // the gates
    for (int h = lane; h < a.n_v_heads; h += 32) {
      const int64_t i = t * a.n_v_heads + h;
      a.beta[i] = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-a.beta[i])));
      const float x = __fadd_rn(a.alpha[i], a.dt_bias[h]);
      const float softplus = x > 20.0f ? x : log1pf(expf(x));
      a.alpha[i] = __fmul_rn(a.ssm_a[h], softplus);
    }
    return;
  }
  float* st = a.state + int64_t{b.slot[s]} * (a.kernel - 1) * a.channels;
  const float* x = a.x + t * a.channels;
  float* out = a.out + t * a.channels;
  if (unit >= qk_units) {
    const int64_t c0 = 2 * key_dim + int64_t{unit - qk_units} * 32 * kVPerLane;
    float v[kVPerLane];
    conv_channels<kVPerLane>(a, x, st, c0, lane, v);
#pragma unroll
    for (int i = 0; i < kVPerLane; ++i)
      if (c0 + lane + 32 * i < a.channels) out[c0 + lane + 32 * i] = v[i];
    return;
  }
  const int64_t c0 = int64_t{unit} * a.d_k;
  float v[NPL];
  conv_channels<NPL>(a, x, st, c0, lane, v);
  double sum = 0.0;
#pragma unroll
  for (int i = 0; i < NPL; ++i) sum += double(v[i]) * v[i];
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  const float scale = unit < a.n_k_heads ? a.q_scale : 1.0f;
  const float f = static_cast<float>(scale / sqrt(sum + a.eps));
#pragma unroll
  for (int i = 0; i < NPL; ++i) out[c0 + lane + 32 * i] = __fmul_rn(v[i], f);
}

// One CTA per row; squares summed in double as the CPU twin does. With act_q (dim and the CTA a
// multiple of 32): the rows' 8-bit activations too, a warp's 32 consecutive elements a group.
__global__ void gated_rms_norm_kernel(float* o, const float* z, const float* __restrict__ w, int64_t dim, float eps,
                                      int8_t* act_q, float2* act_s, __half* f16) {
  pdl_enter();
  float* x = o + blockIdx.x * dim;
  const float* zr = z + blockIdx.x * dim;
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) sum += double(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / sqrt(block_sum(sum) / double(dim) + eps));
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float y = __fmul_rn(__fmul_rn(__fmul_rn(x[i], scale), w[i]), silu(zr[i]));
    x[i] = y;
    if (f16) f16[blockIdx.x * dim + i] = __float2half_rn(y);
    if (act_q) {
      const int64_t g = (blockIdx.x * dim + i) / 32;
      quantize_group_q8(y, threadIdx.x % 32, act_q + g * 32, act_s + g);
    }
  }
}

// The same with one warp per row, for rows of a multiple of 32 elements up to kWarpNormMaxDim
// (Qwen3.5's heads of 128): eight rows a CTA, the squares summed in double per lane, then across
// the warp. A CTA per row of 128 spent more time starting and meeting at its barriers than on its
// elements (H200, the 173K-token Qwen3.5-27B job, 48 heads of 128 a token in chunks of 16384,
// mean per call: 0.91 -> 0.40 ms).
constexpr int64_t kWarpNormMaxDim = 512;
// A lane's elements are in registers (at most kWarpNormMaxDim / 32): the weights are loaded
// before the wait for the kernel before (no kernel writes them), o and z together after it, so
// the row costs one round trip to memory, and silu(z) is computed while the sum is.
constexpr int kWarpNormPerLane = int(kWarpNormMaxDim / 32);
__global__ void gated_rms_norm_warp_kernel(float* o, const float* z, const float* __restrict__ w, int64_t n_rows,
                                           int64_t dim, float eps, int8_t* act_q, float2* act_s, __half* f16) {
  const int lane = threadIdx.x % 32;
  const int n = int(dim / 32);
  float wv[kWarpNormPerLane];
#pragma unroll
  for (int k = 0; k < kWarpNormPerLane; ++k)
    if (k < n) wv[k] = w[lane + 32 * k];
  pdl_enter();
  const int64_t row = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32;
  if (row >= n_rows) return;  // the whole warp
  float* x = o + row * dim;
  const float* zr = z + row * dim;
  float xv[kWarpNormPerLane], gate[kWarpNormPerLane];
#pragma unroll
  for (int k = 0; k < kWarpNormPerLane; ++k)
    if (k < n) {
      xv[k] = x[lane + 32 * k];
      gate[k] = zr[lane + 32 * k];
    }
  double sum = 0.0;
#pragma unroll
  for (int k = 0; k < kWarpNormPerLane; ++k)
    if (k < n) sum += double(xv[k]) * xv[k];
#pragma unroll
  for (int k = 0; k < kWarpNormPerLane; ++k)
    if (k < n) gate[k] = silu(gate[k]);
  const float scale = static_cast<float>(1.0 / sqrt(warp_sum(sum) / double(dim) + eps));
#pragma unroll
  for (int k = 0; k < kWarpNormPerLane; ++k) {
    if (k >= n) break;
    const int64_t i = lane + 32 * k;
    const float y = __fmul_rn(__fmul_rn(__fmul_rn(xv[k], scale), wv[k]), gate[k]);
    x[i] = y;
    if (f16) f16[row * dim + i] = __float2half_rn(y);
    if (act_q) {
      const int64_t g = (row * dim + i) / 32;
      quantize_group_q8(y, lane, act_q + g * 32, act_s + g);
    }
  }
}

// ---- the gated delta rule, chunked ------------------------------------------------------------------

constexpr int C = kGdnChunkTokens;  // chunk rows
constexpr int D = kGdnMaxHeadDim;   // key and value columns (zero-padded up to D)
constexpr int BV = kGdnColumns;     // value columns per scan CTA
static_assert(kThreads == 256 && C == 64 && BV == 64 && D == 128, "the warp tilings below assume these");

// ---- the products on the tensor cores ----------------------------------------------------------------
// mma.sync m16n8k8 on TF32 with each operand split in two, x = hi + lo (hi = x with its low 13
// mantissa bits cleared, lo = x − hi exactly, of which the tensor cores read the TF32 part), and
// three products summed, lo·hi + hi·lo + hi·hi: about f32's precision (what is dropped is below
// 2^-20 of each product) at the tensor cores' rate. (cvt.rna.tf32 would round hi instead, but it
// compiles to about five instructions with an infinity check; this split is two.) One product on
// the unsplit operands measured relative errors of 4.8e-4 to 2.2e-3 against the CPU twin on the
// twin test's first sequences (the split: at most 2.3e-6), for 2.4% on the 27B pp4096 and 1.8% at
// 173,000 tokens (H200): not taken.
struct Tf32Pair {
  uint32_t hi, lo;
};
__device__ __forceinline__ Tf32Pair split_tf32(float x) {
  const uint32_t hi = __float_as_uint(x) & 0xffffe000u;
  return {hi, __float_as_uint(x - __uint_as_float(hi))};
}
__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
// acc += A B for one warp's tile of 16 rows and 8 NT columns, over k_len (a multiple of 8) terms;
// a(r, k) and b(k, n) read the operands relative to the tile. acc[n] holds mma's C fragment of
// columns 8n..8n+7: rows lane/4 and lane/4 + 8, columns 8n + 2 (lane % 4) and the next.
template <int NT, class A, class B>
__device__ __forceinline__ void warp_mma(float (&acc)[NT][4], int k_len, A a, B b) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  for (int k0 = 0; k0 < k_len; k0 += 8) {
    const Tf32Pair a0 = split_tf32(a(g, k0 + t)), a1 = split_tf32(a(g + 8, k0 + t)),
                   a2 = split_tf32(a(g, k0 + t + 4)), a3 = split_tf32(a(g + 8, k0 + t + 4));
    const uint32_t a_hi[4] = {a0.hi, a1.hi, a2.hi, a3.hi}, a_lo[4] = {a0.lo, a1.lo, a2.lo, a3.lo};
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      const Tf32Pair b0 = split_tf32(b(k0 + t, 8 * n + g)), b1 = split_tf32(b(k0 + t + 4, 8 * n + g));
      const uint32_t b_hi[2] = {b0.hi, b1.hi}, b_lo[2] = {b0.lo, b1.lo};
      mma_tf32(acc[n], a_lo, b_hi);
      mma_tf32(acc[n], a_hi, b_lo);
      mma_tf32(acc[n], a_hi, b_hi);
    }
  }
}
// Calls f(row, col, value) for each element of a warp tile's accumulators.
template <int NT, class F>
__device__ __forceinline__ void for_each_acc(const float (&acc)[NT][4], F f) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int n = 0; n < NT; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) f(g + 8 * (e / 2), 8 * n + 2 * t + e % 2, acc[n][e]);
}

// Shared-memory row strides (floats), chosen so that the fragment reads do not conflict in the
// banks: 4 mod 32 for an operand whose rows run across a fragment's lane groups (A read along
// rows, Kᵀ read as B), 8 mod 32 for one read down its columns (B; Kᵀ as A). All are multiples of
// 4: 16-byte rows for the asynchronous copies.
constexpr int kRowA = D + 4;   // 132
constexpr int kRowB = D + 8;   // 136
constexpr int kRowS = BV + 8;  // 72
constexpr int kRowC = C + 4;   // 68

// The prep kernel's outputs in the workspace, for a call of n tokens and n_chunks chunks (floats).
struct DeltaWork {
  float* w;       // [n][n_v][d_k]  W = T diag(β e^γ) K, rows of the chunk
  float* u;       // [n][n_v][d_v]  U = T diag(β) V
  float* eg;      // [n][n_v]       e^{γ_r}, γ the chunk's running sum of g
  float* to_end;  // [n][n_v]       e^{γ_last − γ_r}
  float* p;       // [n_chunks][n_v][C][C]  (q_r·k_s) e^{γ_r−γ_s}, lower
};

size_t align_floats(size_t n) { return (n + 63) / 64 * 64; }

DeltaWork carve(float* base, int64_t n, int64_t nv, int64_t dk, int64_t dv) {
  DeltaWork w;
  w.w = base;
  w.u = w.w + align_floats(size_t(n * nv * dk));
  w.eg = w.u + align_floats(size_t(n * nv * dv));
  w.to_end = w.eg + align_floats(size_t(n * nv));
  w.p = w.to_end + align_floats(size_t(n * nv));
  return w;
}

size_t work_floats(int64_t n, int64_t n_chunks, int64_t nv, int64_t dk, int64_t dv) {
  return align_floats(size_t(n * nv * dk)) + align_floats(size_t(n * nv * dv)) + 2 * align_floats(size_t(n * nv)) +
         size_t(n_chunks * nv) * C * C;
}

// Rows [rows_total][cols_total] of shared memory from global rows (src_stride floats apart),
// zero outside rows_valid x cols_valid: asynchronous copies of kVec floats (the caller commits
// and waits). kVec 4 needs 16-byte aligned rows on both sides and cols_valid % 4 == 0. kBy: the CTA's threads.
template <int kVec, int kBy = kThreads>
__device__ __forceinline__ void load_rows_async(float* dst, int dst_stride, const float* src, int64_t src_stride,
                                                int rows_valid, int rows_total, int cols_valid, int cols_total) {
  const int per_row = cols_total / kVec;
  for (int idx = threadIdx.x; idx < rows_total * per_row; idx += kBy) {
    const int r = idx / per_row, c = (idx % per_row) * kVec;
    float* d = dst + r * dst_stride + c;
    if (r < rows_valid && c < cols_valid) {
      __pipeline_memcpy_async(d, src + r * src_stride + c, kVec * sizeof(float));
    } else {
#pragma unroll
      for (int e = 0; e < kVec; ++e) d[e] = 0.0f;
    }
  }
}

__device__ __forceinline__ void wait_async_loads() {
  __pipeline_commit();
  __pipeline_wait_prior(0);
  __syncthreads();
}

// Shared memory of prep (floats). Two CTAs fit an SM.
struct PrepSmem {
  static constexpr int K = 0;                  // [C][kRowA] keys
  static constexpr int QV = K + C * kRowA;     // [C][kRowA] queries, then values
  static constexpr int A = QV + C * kRowA;     // [C][kRowC] β_r (k_r·k_s) e^{γ_r−γ_s}, strictly lower
  static constexpr int T = A + C * kRowC;      // [C][kRowC] (I + A)⁻¹
  static constexpr int BETA = T + C * kRowC;   // [C]
  static constexpr int EG = BETA + C;          // [C]
  static constexpr int GRAW = EG + C;          // [C] g, then β e^γ
  static constexpr int GAMMA = GRAW + C;       // [C] doubles (8-byte aligned: every offset above is even)
  static constexpr int FLOATS = GAMMA + 2 * C;
  static constexpr size_t BYTES = size_t(FLOATS) * sizeof(float);
};

// Grid (n_chunks, n_v_heads). Warp w's tile of the 64 x 64 products is rows 16 (w % 4) .., columns
// 32 (w / 4) ..; of the 64 x 128 ones, rows 16 (w % 4) .., columns 64 (w / 4) ...
__global__ void __launch_bounds__(kThreads, 2) delta_prep_kernel(DeltaArgs a, SeqBatch b, DeltaWork out) {
  pdl_enter();
  extern __shared__ float sm[];
  float* Ks = sm + PrepSmem::K;
  float* QV = sm + PrepSmem::QV;
  float* As = sm + PrepSmem::A;
  float* Ts = sm + PrepSmem::T;
  float* beta = sm + PrepSmem::BETA;
  float* eg = sm + PrepSmem::EG;
  float* graw = sm + PrepSmem::GRAW;
  double* gamma = reinterpret_cast<double*>(sm + PrepSmem::GAMMA);

  const int ci = blockIdx.x, h = blockIdx.y;
  const int kh = h % a.n_k_heads, dk = a.d_k, dv = a.d_v, nv = a.n_v_heads;
  const int64_t f = b.chunk_first[ci];
  const int L = b.chunk_len[ci];
  const int tid = threadIdx.x, warp = tid / 32, rw = 16 * (warp % 4);
  const int dk8 = (dk + 7) / 8 * 8, l8 = (L + 7) / 8 * 8;

  const int64_t qk_at = f * a.qk_stride + int64_t{kh} * dk;
  load_rows_async<1>(QV, kRowA, a.q + qk_at, a.qk_stride, L, C, dk, D);
  load_rows_async<1>(Ks, kRowA, a.k + qk_at, a.qk_stride, L, C, dk, D);
  if (tid < C) {
    const int64_t at = (f + tid) * nv + h;
    graw[tid] = tid < L ? a.g[at] : 0.0f;
    beta[tid] = tid < L ? a.beta[at] : 0.0f;
  }
  wait_async_loads();
  if (tid == 0) {  // γ in double, as the CPU: differences of long sums keep their precision
    double acc = 0.0;
    for (int r = 0; r < C; ++r) gamma[r] = acc += graw[r];
  }
  __syncthreads();
  if (tid < C) {
    eg[tid] = tid < L ? static_cast<float>(exp(gamma[tid])) : 0.0f;
    graw[tid] = beta[tid] * eg[tid];
    if (tid < L) {
      out.eg[(f + tid) * nv + h] = eg[tid];
      out.to_end[(f + tid) * nv + h] = static_cast<float>(exp(gamma[L - 1] - gamma[tid]));
    }
  }

  // A = K Kᵀ and P = Q Kᵀ with decay, β and the causal masks; P goes straight out.
  {
    const int cw = 32 * (warp / 4);
    float acc_a[4][4] = {}, acc_p[4][4] = {};
    const auto kt = [&](int k, int n) { return Ks[(cw + n) * kRowA + k]; };
    warp_mma(acc_a, dk8, [&](int r, int k) { return Ks[(rw + r) * kRowA + k]; }, kt);
    warp_mma(acc_p, dk8, [&](int r, int k) { return QV[(rw + r) * kRowA + k]; }, kt);
    float* P = out.p + (int64_t{ci} * nv + h) * C * C;
    const auto decay = [&](int r, int c) {
      return c <= r && r < L ? expf(static_cast<float>(gamma[r] - gamma[c])) : 0.0f;
    };
    for_each_acc(acc_a, [&](int r, int c, float v) {
      r += rw, c += cw;
      As[r * kRowC + c] = c < r ? v * beta[r] * decay(r, c) : 0.0f;
    });
    for_each_acc(acc_p, [&](int r, int c, float v) {
      r += rw, c += cw;
      P[r * C + c] = v * decay(r, c);
    });
  }
  __syncthreads();  // queries read: QV takes V
  load_rows_async<1>(QV, kRowA, a.v + f * a.v_stride + int64_t{h} * dv, a.v_stride, L, C, dv, D);

  // T = (I + A)⁻¹ in blocks of 16 (A strictly lower): first each diagonal block's inverse by
  // forward substitution, T_rc = −Σ_{c<=s<r} A_rs T_sc within the block (warps 2b and 2b + 1 take
  // block b's columns, four lanes per column; 15 dependent steps), then the blocks below the
  // diagonal, block row by block row: T_ij = −T_ii Σ_{j<=k<i} A_ik T_kj. Substituting down all 64
  // rows took 63 dependent steps of shuffles: the prep kernel issued at 1.85 instructions a cycle
  // with no warp eligible 54% of the time (ncu, a 27B layer of 4096 tokens: prep 820 us, scan
  // 1.04 ms at ncu's clocks). Measured on the H200, the 27B layer shape at 2048 tokens
  // (CudaGdn.DISABLED_GatedDeltaTimeAt27bShape) 0.711 -> 0.660 ms; Qwen3.5-27B Q5_K_M pp4096
  // 8,096 -> 8,163 tok/s, pp173000 5,367 -> 5,394 (same machine, one run each).
  {
    constexpr int B = 16;
    const int lane = tid % 32, c = warp * 8 + lane / 4, part = lane % 4, r0 = c / B * B;
    for (int r = part; r < C; r += 4) Ts[r * kRowC + c] = r == c ? 1.0f : 0.0f;
    __syncwarp();
    for (int r = r0 + 1; r < r0 + B; ++r) {
      float sum = 0.0f;
      if (r > c)
        for (int k = c + part; k < r; k += 4) sum = fmaf(As[r * kRowC + k], Ts[k * kRowC + c], sum);
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      if (r > c && part == 0) Ts[r * kRowC + c] = -sum;
      __syncwarp();
    }
    // Block row i: thread tid takes elements tid + 256 n of the row's i blocks left of the
    // diagonal (16 x 16 each): element (r, cc) of block j.
    static_assert((C - B) * B <= 3 * kThreads, "three elements a thread");
    for (int i = 1; i < C / B; ++i) {
      // f(n, j, r, cc) for each of this thread's elements that lies in a block j < i.
      const auto each_element = [&](auto&& f) {
#pragma unroll
        for (int n = 0; n < 3; ++n) {
          const int e = tid + kThreads * n, j = e / (B * B);
          if (j < i) f(n, j, i * B + e % (B * B) / B, j * B + e % B);
        }
      };
      float x[3] = {0.0f, 0.0f, 0.0f};  // each_element sets before put_x reads (the same elements)
      const auto put_x = [&](int n, int, int r, int cc) { Ts[r * kRowC + cc] = x[n]; };
      __syncthreads();  // the blocks above (and the diagonal ones) are final
      each_element([&](int n, int j, int r, int cc) {  // X_j = Σ_{j<=k<i} A_ik T_kj
        float sum = 0.0f;
        for (int k = j * B; k < i * B; ++k) sum = fmaf(As[r * kRowC + k], Ts[k * kRowC + cc], sum);
        x[n] = sum;
      });
      __syncthreads();  // X_j in T_ij's place (nothing reads T_ij before this row is done)
      each_element(put_x);
      __syncthreads();
      each_element([&](int n, int, int r, int cc) {  // T_ij = −T_ii X_j
        float sum = 0.0f;
        for (int m = i * B; m <= r; ++m) sum = fmaf(Ts[r * kRowC + m], Ts[m * kRowC + cc], sum);
        x[n] = -sum;
      });
      __syncthreads();
      each_element(put_x);
    }
  }
  wait_async_loads();

  // W = T diag(β e^γ) K and U = T diag(β) V (T lower: s <= r), straight out.
  {
    const int cw = 64 * (warp / 4);
    const auto t_row = [&](int r, int k) { return Ts[(rw + r) * kRowC + k]; };
    const auto store = [&](float* dst, int cols, const float(&acc)[8][4]) {
      for_each_acc(acc, [&](int r, int c, float v) {
        r += rw, c += cw;
        if (r < L && c < cols) dst[((f + r) * nv + h) * cols + c] = v;
      });
    };
    {
      float acc[8][4] = {};
      warp_mma(acc, l8, t_row, [&](int k, int n) { return graw[k] * Ks[k * kRowA + cw + n]; });
      store(out.w, dk, acc);
    }
    {
      float acc[8][4] = {};
      warp_mma(acc, l8, t_row, [&](int k, int n) { return beta[k] * QV[k * kRowA + cw + n]; });
      store(out.u, dv, acc);
    }
  }
}

// Shared memory of scan (floats).
struct ScanSmem {
  static constexpr int S = 0;                 // [D][kRowS]  state block
  static constexpr int W = S + D * kRowS;     // [C][kRowA]
  static constexpr int Q = W + C * kRowA;     // [C][kRowA]
  static constexpr int K = Q + C * kRowA;     // [C][kRowB]
  static constexpr int U = K + C * kRowB;     // [C][kRowS]  U, then V_new
  static constexpr int P = U + C * kRowS;     // [C][kRowC]
  static constexpr int EG = P + C * kRowC;    // [C]
  static constexpr int TO_END = EG + C;       // [C]
  static constexpr int FLOATS = TO_END + C;
  static constexpr size_t BYTES = size_t(FLOATS) * sizeof(float);
};

// Grid (n_v_heads * column blocks, n_seqs). kVec: floats per asynchronous copy (4 when every
// row is 16-byte aligned). Each chunk's inputs are copied in three parts, each as soon as the
// previous chunk is done with its buffer: W after V_new, Q and P after O, K, U and the decays
// after the state update. 16 warps: the chunk steps are short chains of dependent multiplies, so
// the more warps a scheduler can switch between, the better (8 warps measured 1.57 ms per 27B
// layer of 4096 tokens under ncu, most of it waiting on those dependencies).
constexpr int kScanThreads = 512;
static_assert(kScanThreads == 16 * 32,
              "the scan's warp tiles (4 x 4 of the chunk products, 8 x 2 of the state) assume 16 warps");
template <int kVec>
__global__ void __launch_bounds__(kScanThreads, 1) delta_scan_kernel(DeltaArgs a, SeqBatch b, DeltaWork work) {
  pdl_enter();
  extern __shared__ float sm[];
  float* S = sm + ScanSmem::S;
  float* Ws = sm + ScanSmem::W;
  float* Qs = sm + ScanSmem::Q;
  float* Ks = sm + ScanSmem::K;
  float* Us = sm + ScanSmem::U;
  float* Ps = sm + ScanSmem::P;
  float* eg = sm + ScanSmem::EG;
  float* to_end = sm + ScanSmem::TO_END;

  const int n_col_blocks = (a.d_v + BV - 1) / BV;
  const int h = blockIdx.x / n_col_blocks, j0 = (blockIdx.x % n_col_blocks) * BV;
  const int s = blockIdx.y;
  const int kh = h % a.n_k_heads, dk = a.d_k, dv = a.d_v, nv = a.n_v_heads;
  const int tid = threadIdx.x, warp = tid / 32;
  const int rw = 16 * (warp % 4), cw = 16 * (warp / 4);   // this warp's tile of the chunk products
  const int sw = 16 * (warp % 8), sc = 32 * (warp / 8);  // and of the state
  const int dk8 = (dk + 7) / 8 * 8;
  float* state = a.state + (int64_t{b.slot[s]} * nv + h) * dk * dv;

  const bool state_vec4 = kVec == 4 && reinterpret_cast<uintptr_t>(a.state) % 16 == 0;
  if (state_vec4) load_rows_async<4, kScanThreads>(S, kRowS, state + j0, dv, dk, D, dv - j0, BV);
  else load_rows_async<1, kScanThreads>(S, kRowS, state + j0, dv, dk, D, dv - j0, BV);

  const auto issue_w = [&](int ci) {
    const int64_t f = b.chunk_first[ci];
    load_rows_async<kVec, kScanThreads>(Ws, kRowA, work.w + (f * nv + h) * dk, int64_t{nv} * dk, b.chunk_len[ci], C, dk, D);
  };
  const auto issue_qp = [&](int ci) {
    const int64_t f = b.chunk_first[ci];
    load_rows_async<kVec, kScanThreads>(Qs, kRowA, a.q + f * a.qk_stride + int64_t{kh} * dk, a.qk_stride, b.chunk_len[ci], C, dk, D);
    load_rows_async<kVec, kScanThreads>(Ps, kRowC, work.p + (int64_t{ci} * nv + h) * C * C, C, C, C, C, C);
  };
  const auto issue_ku = [&](int ci) {
    const int64_t f = b.chunk_first[ci];
    const int L = b.chunk_len[ci];
    load_rows_async<kVec, kScanThreads>(Ks, kRowB, a.k + f * a.qk_stride + int64_t{kh} * dk, a.qk_stride, L, C, dk, D);
    load_rows_async<kVec, kScanThreads>(Us, kRowS, work.u + (f * nv + h) * dv + j0, int64_t{nv} * dv, L, C, dv - j0, BV);
    load_rows_async<1, kScanThreads>(eg, 1, work.eg + f * nv + h, nv, L, C, 1, 1);
    load_rows_async<1, kScanThreads>(to_end, 1, work.to_end + f * nv + h, nv, L, C, 1, 1);
  };
  const int c_end = b.seq_chunk[s + 1];
  if (b.seq_chunk[s] < c_end) {
    issue_w(b.seq_chunk[s]);
    issue_qp(b.seq_chunk[s]);
    issue_ku(b.seq_chunk[s]);
  }
  const auto s_col = [&](int k, int n) { return S[k * kRowS + cw + n]; };

  for (int ci = b.seq_chunk[s]; ci < c_end; ++ci) {
    const int64_t f = b.chunk_first[ci];
    const int L = b.chunk_len[ci];
    const bool more = ci + 1 < c_end;
    wait_async_loads();

    // V_new = U − W S.
    {
      float acc[2][4] = {};
      warp_mma(acc, dk8, [&](int r, int k) { return Ws[(rw + r) * kRowA + k]; }, s_col);
      for_each_acc(acc, [&](int r, int c, float v) { Us[(rw + r) * kRowS + cw + c] -= v; });
    }
    __syncthreads();
    if (more) issue_w(ci + 1);

    // O = diag(e^γ) Q S + P V_new (P is lower: row r needs terms up to r), straight into the output.
    {
      float acc[2][4] = {};
      warp_mma(acc, dk8, [&](int r, int k) { return eg[rw + r] * Qs[(rw + r) * kRowA + k]; }, s_col);
      warp_mma(acc, rw + 16, [&](int r, int k) { return Ps[(rw + r) * kRowC + k]; },
               [&](int k, int n) { return Us[k * kRowS + cw + n]; });
      for_each_acc(acc, [&](int r, int c, float v) {
        r += rw, c += cw;
        if (r < L && j0 + c < dv) a.out[((f + r) * nv + h) * dv + j0 + c] = v;
      });
    }
    __syncthreads();
    if (more) issue_qp(ci + 1);

    // S ← e^{γ_last} S + (diag(e^{γ_last−γ}) K)ᵀ V_new.
    if (sw < dk) {
      float acc[4][4] = {};
      warp_mma(acc, C, [&](int i, int r) { return to_end[r] * Ks[r * kRowB + sw + i]; },
               [&](int r, int n) { return Us[r * kRowS + sc + n]; });
      const float eg_last = eg[L - 1];
      for_each_acc(acc, [&](int i, int j, float v) {
        float& sv = S[(sw + i) * kRowS + sc + j];
        sv = fmaf(eg_last, sv, v);
      });
    }
    __syncthreads();
    if (more) issue_ku(ci + 1);
  }

  wait_async_loads();  // (a sequence always has a chunk; this only keeps the state copy complete)
  for (int idx = tid; idx < D * BV; idx += kScanThreads) {
    const int i = idx / BV, j = idx % BV;
    if (i < dk && j0 + j < dv) state[int64_t{i} * dv + j0 + j] = S[i * kRowS + j];
  }
}

}  // namespace

void conv1d_silu(const float* x, int64_t channels, const float* w, int kernel, float* state, float* out,
                 const SeqBatch& b, cudaStream_t stream) {
  if (b.n_tokens <= 0 || channels <= 0) return;
  if (kernel == 4) {  // Qwen3.5's
    const dim3 grid(blocks_for(channels), unsigned(std::min<int64_t>((b.n_tokens + kConvRun - 1) / kConvRun, 65535)));
    launch(conv1d_silu_runs_kernel<4>, grid, kThreads, 0, stream, x, channels, w, state, out, b);
  } else {
    launch(conv1d_silu_kernel, blocks_for(b.n_tokens * channels), kThreads, 0, stream, x, channels, w, kernel, state,
           out, b);
  }
  if (kernel <= 1) return;
  launch(conv_state_kernel, blocks_for(b.n_seqs * channels), kThreads, 0, stream, x, channels, kernel, state, b);
}

void l2_norm_heads(float* x, int64_t n_rows, int64_t row_stride, int64_t n_heads, int64_t dim, float eps, float scale,
                   cudaStream_t stream) {
  const int64_t warps = n_rows * n_heads;
  if (warps <= 0) return;
  launch(l2_norm_heads_kernel, blocks_for(warps * 32), kThreads, 0, stream, x, n_rows, row_stride, n_heads, dim, eps,
         scale);
}

bool gdn_decode_inputs_fit(int64_t d_k, int kernel) {
  return d_k > 0 && d_k % 32 == 0 && d_k <= kGdnInputsMaxHeadDim && kernel >= 1 && kernel <= kGdnInputsMaxKernel;
}

void gdn_decode_inputs(const GdnInputs& a, const SeqBatch& b, cudaStream_t stream) {
  if (!gdn_decode_inputs_fit(a.d_k, a.kernel) || b.n_tokens != b.n_seqs)
    throw Error("internal: gdn_decode_inputs takes one token per sequence, head sizes of 32 .. 256 in steps of 32 "
                "and conv kernels of 1 .. 4");
  if (b.n_seqs <= 0) return;
  const int64_t value_dim = a.channels - 2 * int64_t{a.n_k_heads} * a.d_k;
  const int64_t units = 2 * a.n_k_heads + (value_dim + 32 * kVPerLane - 1) / (32 * kVPerLane) + 1;
  constexpr int warps = kThreads / 32;
  const dim3 grid(static_cast<unsigned>((units + warps - 1) / warps), static_cast<unsigned>(b.n_seqs));
  switch (a.d_k / 32) {
    case 1: launch(gdn_decode_inputs_kernel<1>, grid, kThreads, 0, stream, a, b); break;
    case 2: launch(gdn_decode_inputs_kernel<2>, grid, kThreads, 0, stream, a, b); break;
    case 3: launch(gdn_decode_inputs_kernel<3>, grid, kThreads, 0, stream, a, b); break;
    case 4: launch(gdn_decode_inputs_kernel<4>, grid, kThreads, 0, stream, a, b); break;
    case 5: launch(gdn_decode_inputs_kernel<5>, grid, kThreads, 0, stream, a, b); break;
    case 6: launch(gdn_decode_inputs_kernel<6>, grid, kThreads, 0, stream, a, b); break;
    case 7: launch(gdn_decode_inputs_kernel<7>, grid, kThreads, 0, stream, a, b); break;
    default: launch(gdn_decode_inputs_kernel<8>, grid, kThreads, 0, stream, a, b); break;
  }
}

void gdn_gates(float* beta, float* alpha, const float* ssm_a, const float* dt_bias, int64_t n_tokens, int64_t n_heads,
               cudaStream_t stream) {
  const int64_t n = n_tokens * n_heads;
  if (n <= 0) return;
  launch(gdn_gates_kernel, blocks_for(n), kThreads, 0, stream, beta, alpha, ssm_a, dt_bias, n, n_heads);
}

void gated_rms_norm(float* o, const float* z, const float* w, int64_t n_rows, int64_t dim, float eps,
                    cudaStream_t stream, int8_t* act_q, float2* act_s, void* f16) {
  auto* h = static_cast<__half*>(f16);
  if (n_rows <= 0) return;
  if (act_q && dim % 32 != 0) throw Error("internal: gated_rms_norm with 8-bit activations needs rows of a multiple of 32");
  if (dim % 32 == 0 && dim <= kWarpNormMaxDim) {
    constexpr int kRowsPerCta = 8;
    launch(gated_rms_norm_warp_kernel, static_cast<unsigned>((n_rows + kRowsPerCta - 1) / kRowsPerCta), 32 * kRowsPerCta,
           0, stream, o, z, w, n_rows, dim, eps, act_q, act_s, h);
    return;
  }
  const int threads = dim >= 1024 ? 512 : dim >= 256 ? 256 : dim > 64 ? 128 : 64;
  launch(gated_rms_norm_kernel, static_cast<unsigned>(n_rows), threads, 0, stream, o, z, w, dim, eps, act_q, act_s, h);
}

int fill_gdn_chunks(const int32_t* seq_first, const int32_t* seq_len, int n_seqs, int32_t* chunk_first,
                    int32_t* chunk_len, int32_t* seq_chunk) {
  int n = 0;
  for (int s = 0; s < n_seqs; ++s) {
    seq_chunk[s] = n;
    for (int32_t c0 = 0; c0 < seq_len[s]; c0 += C, ++n) {
      chunk_first[n] = seq_first[s] + c0;
      chunk_len[n] = seq_len[s] - c0 < C ? seq_len[s] - c0 : C;
    }
  }
  seq_chunk[n_seqs] = n;
  return n;
}

bool gated_delta_supports(int64_t d_k, int64_t d_v) { return d_k > 0 && d_k <= D && d_v > 0 && d_v <= D; }

size_t gated_delta_workspace_bytes(int64_t max_tokens, int64_t n_seqs, int64_t n_v_heads, int64_t d_k, int64_t d_v) {
  return work_floats(max_tokens, gdn_max_chunks(max_tokens, n_seqs), n_v_heads, d_k, d_v) * sizeof(float);
}

namespace {

// Decode (one token per sequence): the recurrence itself, no chunk machinery. A CTA takes one
// (sequence, v-head, block of 32 value columns); thread (column j, warp w) holds rows
// [w·D/4, +D/4) of column j of S in registers, so S is read once and written once:
//   kS = Sᵀk, qS = Sᵀq;  δ = β (v − e^g kS);  o = e^g qS + (q·k) δ;  S ← e^g S + k δᵀ
// (the CPU's gated_delta_recurrent, with the sums over rows in another order). A decode token
// spends this kernel's time waiting, not computing, so S's rows are loaded before the wait, every
// other load it makes (the gates, v, and lane l's row of q and k) at once right after it, and
// the warp takes q and k from their lanes (shuffles) and q·k as a warp sum. Before, q and k went
// through shared memory first, the gates and v were loaded after S's sums, and every thread
// summed q·k over all rows in turn: three round trips to memory and a 128-step chain.
constexpr int kDecodeCols = 32, kDecodeWarps = 4, kDecodeRows = D / kDecodeWarps;
static_assert(kDecodeRows == 32, "a warp's rows of S are its lanes' rows of q and k");
// With the gated RMSNorm after the rule (gated_delta_norm, heads of exactly kNormCtas blocks of
// columns): a head's CTAs are one thread-block cluster, which shares the head's output through
// distributed shared memory, and each CTA norms its own 32 columns and writes them with their
// 8-bit activations (one group): gated_rms_norm_warp_kernel's arithmetic in its order (lane l
// sums columns l, l + 32, ... in double), so the same bits, and one launch a layer fewer.
constexpr int kNormCtas = 4;
struct DeltaNorm {
  const float* z = nullptr;  // [n_tokens, n_v_heads, d_v]
  const float* w = nullptr;  // [d_v]
  float eps = 0.0f;
  int8_t* act_q = nullptr;
  float2* act_s = nullptr;
};

template <bool NORM>
__device__ __forceinline__ void delta_decode(const DeltaArgs& a, const SeqBatch& b, const DeltaNorm& n) {
  const int col_blocks = (a.d_v + kDecodeCols - 1) / kDecodeCols;
  const int h = blockIdx.x / col_blocks, lane = threadIdx.x % 32, j = (blockIdx.x % col_blocks) * kDecodeCols + lane;
  const int w = threadIdx.x / 32, s = blockIdx.y;
  const int t = b.q_start[s], kh = h % a.n_k_heads;
  __shared__ float part[2][kDecodeWarps][kDecodeCols];
  __shared__ float qk_part[kDecodeWarps];
  // The state is read before the wait (launch.cuh: no kernel of the step before this one writes
  // it), so its trip to memory overlaps the kernel before; so are the norm's weights.
  float* S = a.state + (int64_t{b.slot[s]} * a.n_v_heads + h) * a.d_k * a.d_v;
  const bool col = j < a.d_v;
  float reg[kDecodeRows];
#pragma unroll
  for (int m = 0; m < kDecodeRows; ++m) {
    const int i = w * kDecodeRows + m;
    reg[m] = col && i < a.d_k ? S[int64_t{i} * a.d_v + j] : 0.0f;
  }
  const float norm_w = NORM && w == 0 ? n.w[j] : 0.0f;
  pdl_enter();
  const int64_t gi = int64_t{t} * a.n_v_heads + h;
  const float g = a.g[gi], beta = a.beta[gi];
  const float v = col ? a.v[int64_t{t} * a.v_stride + int64_t{h} * a.d_v + j] : 0.0f;
  const float z = NORM && w == 0 ? n.z[gi * a.d_v + j] : 0.0f;
  const int row = w * kDecodeRows + lane;
  const int64_t qk_at = int64_t{t} * a.qk_stride + int64_t{kh} * a.d_k + row;
  const float q_row = row < a.d_k ? a.q[qk_at] : 0.0f, k_row = row < a.d_k ? a.k[qk_at] : 0.0f;
  float ks = 0.0f, qs = 0.0f;
#pragma unroll
  for (int m = 0; m < kDecodeRows; ++m) {
    ks = fmaf(__shfl_sync(0xffffffffu, k_row, m), reg[m], ks);
    qs = fmaf(__shfl_sync(0xffffffffu, q_row, m), reg[m], qs);
  }
  const float qk_w = warp_sum(q_row * k_row);
  part[0][w][lane] = ks;
  part[1][w][lane] = qs;
  if (lane == 0) qk_part[w] = qk_w;
  __syncthreads();
  ks = qs = 0.0f;
  float qk = 0.0f;
#pragma unroll
  for (int u = 0; u < kDecodeWarps; ++u) {
    ks += part[0][u][lane];
    qs += part[1][u][lane];
    qk += qk_part[u];
  }
  const float decay = expf(g);
  const float delta = beta * (v - decay * ks);
  const float o = decay * qs + qk * delta;
  if (!NORM && w == 0 && col) a.out[gi * a.d_v + j] = o;
#pragma unroll
  for (int m = 0; m < kDecodeRows; ++m) {
    const int i = w * kDecodeRows + m;
    if (col && i < a.d_k) S[int64_t{i} * a.d_v + j] = fmaf(__shfl_sync(0xffffffffu, k_row, m), delta, decay * reg[m]);
  }
  if constexpr (NORM) {
    __shared__ float o_cols[kDecodeCols];
    if (w == 0) o_cols[lane] = o;
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();  // every CTA of the head has its columns' o in shared memory
    if (w == 0) {
      double sum = 0.0;
#pragma unroll
      for (int c = 0; c < kNormCtas; ++c) {
        const float x = cluster.map_shared_rank(o_cols, c)[lane];
        sum += double(x) * x;
      }
      const float scale = static_cast<float>(1.0 / sqrt(warp_sum(sum) / double(a.d_v) + n.eps));
      const float y = __fmul_rn(__fmul_rn(__fmul_rn(o, scale), norm_w), silu(z));
      a.out[gi * a.d_v + j] = y;
      const int64_t grp = (gi * a.d_v + j) / 32;
      quantize_group_q8(y, lane, n.act_q + grp * 32, n.act_s + grp);
    }
    cluster.sync();  // no CTA leaves while another reads its columns
  }
}

__global__ void __launch_bounds__(32 * kDecodeWarps) delta_decode_kernel(DeltaArgs a, SeqBatch b) {
  delta_decode<false>(a, b, DeltaNorm{});
}
__global__ void __cluster_dims__(kNormCtas, 1, 1) __launch_bounds__(32 * kDecodeWarps)
    delta_decode_norm_kernel(DeltaArgs a, SeqBatch b, DeltaNorm n) {
  delta_decode<true>(a, b, n);
}

}  // namespace

void gated_delta(const DeltaArgs& a, const SeqBatch& b, void* workspace, cudaStream_t stream) {
  if (b.n_seqs <= 0 || b.n_chunks <= 0) return;
  if (!gated_delta_supports(a.d_k, a.d_v) || a.n_k_heads <= 0 || a.n_v_heads % a.n_k_heads != 0)
    throw Error("the CUDA gated delta rule takes heads of at most " + std::to_string(D) + " dims; this model's are " +
                    std::to_string(a.d_k) + " (keys) and " + std::to_string(a.d_v) + " (values)",
                ErrorKind::usage);
  static const bool configured = [] {
    check(cudaFuncSetAttribute(delta_prep_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(PrepSmem::BYTES)),
          "cudaFuncSetAttribute (gated_delta prep)");
    check(cudaFuncSetAttribute(delta_scan_kernel<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(ScanSmem::BYTES)),
          "cudaFuncSetAttribute (gated_delta scan)");
    check(cudaFuncSetAttribute(delta_scan_kernel<4>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(ScanSmem::BYTES)),
          "cudaFuncSetAttribute (gated_delta scan)");
    return true;
  }();
  (void)configured;
  if (b.n_tokens == b.n_seqs && b.n_chunks == b.n_seqs) {  // every sequence decodes one token
    const dim3 grid(unsigned(a.n_v_heads * ((a.d_v + kDecodeCols - 1) / kDecodeCols)), unsigned(b.n_seqs));
    launch(delta_decode_kernel, grid, 32 * kDecodeWarps, 0, stream, a, b);
    return;
  }
  const DeltaWork work = carve(static_cast<float*>(workspace), b.n_tokens, a.n_v_heads, a.d_k, a.d_v);
  launch(delta_prep_kernel, dim3(unsigned(b.n_chunks), unsigned(a.n_v_heads)), kThreads, PrepSmem::BYTES, stream, a,
         b, work);
  const dim3 grid(unsigned(a.n_v_heads * ((a.d_v + BV - 1) / BV)), unsigned(b.n_seqs));
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const bool vec4 = aligned(a.q) && aligned(a.k) && aligned(work.w) && aligned(work.u) && aligned(work.p) &&
                    a.qk_stride % 4 == 0 && a.d_k % 4 == 0 && a.d_v % 4 == 0;
  if (vec4) launch(delta_scan_kernel<4>, grid, kScanThreads, ScanSmem::BYTES, stream, a, b, work);
  else launch(delta_scan_kernel<1>, grid, kScanThreads, ScanSmem::BYTES, stream, a, b, work);
}

bool gated_delta_norm_fits(const DeltaArgs& a, const SeqBatch& b) {
  return b.n_seqs > 0 && b.n_tokens == b.n_seqs && b.n_chunks == b.n_seqs && a.d_v == kNormCtas * kDecodeCols &&
         gated_delta_supports(a.d_k, a.d_v) && a.n_k_heads > 0 && a.n_v_heads % a.n_k_heads == 0;
}

void gated_delta_norm(const DeltaArgs& a, const SeqBatch& b, const float* z, const float* w, float eps, int8_t* act_q,
                      float2* act_s, cudaStream_t stream) {
  if (!gated_delta_norm_fits(a, b) || !act_q || !act_s)
    throw Error("internal: gated_delta_norm takes one token per sequence, heads of 128 values, 8-bit activations");
  DeltaNorm n;
  n.z = z;
  n.w = w;
  n.eps = eps;
  n.act_q = act_q;
  n.act_s = act_s;
  const dim3 grid(unsigned(a.n_v_heads * kNormCtas), unsigned(b.n_seqs));
  launch(delta_decode_norm_kernel, grid, 32 * kDecodeWarps, 0, stream, a, b, n);
}

}  // namespace keel::cuda
