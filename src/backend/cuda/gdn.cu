#include <cmath>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gdn.cuh"
#include "keel/error.h"

namespace keel::cuda {
namespace {

constexpr int kThreads = 256;
unsigned blocks_for(int64_t n, int threads = kThreads) { return static_cast<unsigned>((n + threads - 1) / threads); }

__device__ __forceinline__ float silu(float x) { return __fdiv_rn(x, __fadd_rn(1.0f, expf(-x))); }

// ---- causal conv1d + SiLU ------------------------------------------------------------------------

// Row i of sequence s's extended input e = [state ; x].
__device__ __forceinline__ float conv_row(const float* x, const float* state, int64_t channels, int n_state,
                                          int64_t first, int64_t i, int64_t c) {
  return i < n_state ? state[i * channels + c] : x[(first + i - n_state) * channels + c];
}

// One thread per (token, channel).
__global__ void conv1d_silu_kernel(const float* x, int64_t channels, const float* __restrict__ w, int kernel,
                                   const float* state, float* out, SeqBatch b) {
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

// One thread per (sequence, channel): the state becomes the last kernel-1 rows of e. Row m reads
// e[n + m] >= m, so ascending order never reads a state row it already overwrote.
__global__ void conv_state_kernel(const float* x, int64_t channels, int kernel, float* state, SeqBatch b) {
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
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= n) return;
  const int64_t h = i % n_heads;
  beta[i] = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-beta[i])));
  const float x = __fadd_rn(alpha[i], dt_bias[h]);
  const float softplus = x > 20.0f ? x : log1pf(expf(x));
  alpha[i] = __fmul_rn(ssm_a[h], softplus);
}

// One CTA per row; squares summed in double as the CPU twin does.
__global__ void gated_rms_norm_kernel(float* o, const float* z, const float* __restrict__ w, int64_t dim, float eps) {
  float* x = o + blockIdx.x * dim;
  const float* zr = z + blockIdx.x * dim;
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) sum += double(x[i]) * x[i];
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
  const float scale = static_cast<float>(1.0 / sqrt(partial[0] / double(dim) + eps));
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    x[i] = __fmul_rn(__fmul_rn(__fmul_rn(x[i], scale), w[i]), silu(zr[i]));
}

// ---- the gated delta rule, chunked ------------------------------------------------------------------

constexpr int C = kGdnChunkTokens;  // chunk rows
constexpr int DK = kGdnMaxKeyDim;   // key columns (zero-padded up to DK)
constexpr int BV = kGdnColumns;     // value columns per CTA
constexpr int SK = DK + 1;          // padded row strides (conflict-free column walks)
constexpr int SC = C + 1;
static_assert(kThreads == 256 && C == 64 && BV == 64, "the 16 x 16 thread tiling below assumes these");

// Shared-memory layout of one CTA, in floats.
struct DeltaSmem {
  static constexpr int S = 0;              // [DK][BV]   state block
  static constexpr int Q = S + DK * BV;    // [C][DK]    queries
  static constexpr int K = Q + C * DK;     // [C][SK]    keys
  static constexpr int KB = K + C * SK;    // [C][DK]    diag(β e^γ) K, then W = T KB
  static constexpr int VB = KB + C * DK;   // [C][BV]    diag(β) V, then U = T VB, then V_new
  static constexpr int A = VB + C * BV;    // [C][SC]    β_r (k_r·k_s) e^{γ_r−γ_s}, strictly lower
  static constexpr int P = A + C * SC;     // [C][SC]    (q_r·k_s) e^{γ_r−γ_s}, lower
  static constexpr int T = P + C * SC;     // [C][SC]    (I + A)⁻¹
  static constexpr int BETA = T + C * SC;  // [C]
  static constexpr int EG = BETA + C;      // [C] e^{γ_r}
  static constexpr int TO_END = EG + C;    // [C] e^{γ_last − γ_r}
  static constexpr int GRAW = TO_END + C;  // [C] g
  static constexpr int GAMMA = GRAW + C;   // [C] doubles (8-byte aligned: every offset above is even)
  static constexpr int FLOATS = GAMMA + 2 * C;
  static constexpr size_t BYTES = size_t(FLOATS) * sizeof(float);
};

// Grid: (n_v_heads * column blocks, n_seqs); 256 threads as a 16 x 16 tile grid (ty, tx): a
// thread owns rows ty + 16a and columns tx + 16b of each product.
__global__ void __launch_bounds__(kThreads, 1) gated_delta_kernel(DeltaArgs a, SeqBatch b) {
  extern __shared__ float sm[];
  float* S = sm + DeltaSmem::S;
  float* Qs = sm + DeltaSmem::Q;
  float* Ks = sm + DeltaSmem::K;
  float* KB = sm + DeltaSmem::KB;
  float* VB = sm + DeltaSmem::VB;
  float* As = sm + DeltaSmem::A;
  float* Ps = sm + DeltaSmem::P;
  float* Ts = sm + DeltaSmem::T;
  float* beta = sm + DeltaSmem::BETA;
  float* eg = sm + DeltaSmem::EG;
  float* to_end = sm + DeltaSmem::TO_END;
  float* graw = sm + DeltaSmem::GRAW;
  double* gamma = reinterpret_cast<double*>(sm + DeltaSmem::GAMMA);

  const int n_col_blocks = (a.d_v + BV - 1) / BV;
  const int h = blockIdx.x / n_col_blocks, j0 = (blockIdx.x % n_col_blocks) * BV;
  const int s = blockIdx.y;
  const int kh = h % a.n_k_heads, dk = a.d_k, dv = a.d_v, nv = a.n_v_heads;
  const int64_t first = b.q_start[s], n = b.q_start[s + 1] - first;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  float* state = a.state + (int64_t{b.slot[s]} * nv + h) * dk * dv;

  for (int idx = tid; idx < DK * BV; idx += kThreads) {
    const int i = idx / BV, j = idx % BV;
    S[idx] = i < dk && j0 + j < dv ? state[int64_t{i} * dv + j0 + j] : 0.0f;
  }

  for (int64_t c0 = 0; c0 < n; c0 += C) {
    const int L = static_cast<int>(n - c0 < C ? n - c0 : C);
    // 1. Gather the chunk (zero-padded to C rows, DK key columns, BV value columns).
    for (int idx = tid; idx < C * DK; idx += kThreads) {
      const int r = idx / DK, i = idx % DK;
      float qv = 0.0f, kv = 0.0f;
      if (r < L && i < dk) {
        const int64_t at = (first + c0 + r) * a.qk_stride + int64_t{kh} * dk + i;
        qv = a.q[at];
        kv = a.k[at];
      }
      Qs[r * DK + i] = qv;
      Ks[r * SK + i] = kv;
    }
    for (int idx = tid; idx < C * BV; idx += kThreads) {
      const int r = idx / BV, j = idx % BV;
      VB[idx] = r < L && j0 + j < dv ? a.v[(first + c0 + r) * a.v_stride + int64_t{h} * dv + j0 + j] : 0.0f;
    }
    if (tid < C) {
      const int64_t at = (first + c0 + tid) * nv + h;
      graw[tid] = tid < L ? a.g[at] : 0.0f;
      beta[tid] = tid < L ? a.beta[at] : 0.0f;
    }
    __syncthreads();
    if (tid == 0) {  // γ in double, as the CPU: differences of long sums keep their precision
      double acc = 0.0;
      for (int r = 0; r < C; ++r) gamma[r] = acc += graw[r];
    }
    __syncthreads();
    if (tid < C) {
      eg[tid] = tid < L ? static_cast<float>(exp(gamma[tid])) : 0.0f;
      to_end[tid] = tid < L ? static_cast<float>(exp(gamma[L - 1] - gamma[tid])) : 0.0f;
    }
    __syncthreads();
    for (int idx = tid; idx < C * DK; idx += kThreads) {
      const int r = idx / DK, i = idx % DK;
      KB[idx] = beta[r] * eg[r] * Ks[r * SK + i];
    }
    for (int idx = tid; idx < C * BV; idx += kThreads) VB[idx] *= beta[idx / BV];

    // 2. A = K Kᵀ and P = Q Kᵀ with decay, β and the causal masks.
    {
      float acc_a[4][4] = {}, acc_p[4][4] = {};
      for (int i = 0; i < dk; ++i) {
        float kr[4], qr[4], ks[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          kr[u] = Ks[(ty + 16 * u) * SK + i];
          qr[u] = Qs[(ty + 16 * u) * DK + i];
          ks[u] = Ks[(tx + 16 * u) * SK + i];
        }
#pragma unroll
        for (int u = 0; u < 4; ++u)
#pragma unroll
          for (int w = 0; w < 4; ++w) {
            acc_a[u][w] = fmaf(kr[u], ks[w], acc_a[u][w]);
            acc_p[u][w] = fmaf(qr[u], ks[w], acc_p[u][w]);
          }
      }
#pragma unroll
      for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int w = 0; w < 4; ++w) {
          const int r = ty + 16 * u, c = tx + 16 * w;
          const float decay = c <= r && r < L ? expf(static_cast<float>(gamma[r] - gamma[c])) : 0.0f;
          As[r * SC + c] = c < r ? acc_a[u][w] * beta[r] * decay : 0.0f;
          Ps[r * SC + c] = acc_p[u][w] * decay;
        }
    }
    __syncthreads();

    // 3. T = (I + A)⁻¹ by forward substitution, column by column: T_rc = −Σ_{c<=s<r} A_rs T_sc.
    // Warp w solves columns 8w..8w+7, four lanes per column.
    {
      const int lane = tid % 32, c = (tid / 32) * 8 + lane / 4, part = lane % 4;
      for (int r = part; r < C; r += 4) Ts[r * SC + c] = r == c ? 1.0f : 0.0f;
      __syncwarp();
      for (int r = 1; r < L; ++r) {
        float sum = 0.0f;
        if (r > c)
          for (int k = c + part; k < r; k += 4) sum = fmaf(As[r * SC + k], Ts[k * SC + c], sum);
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        if (r > c && part == 0) Ts[r * SC + c] = -sum;
        __syncwarp();
      }
    }
    __syncthreads();

    // 4. U = T diag(β) V and W = T diag(β e^γ) K (T lower: s <= r).
    {
      float acc_u[4][4] = {}, acc_w[4][8] = {};
      for (int k = 0; k < L; ++k) {
        float t[4], vb[4], kb[8];
#pragma unroll
        for (int u = 0; u < 4; ++u) t[u] = Ts[(ty + 16 * u) * SC + k];
#pragma unroll
        for (int w = 0; w < 4; ++w) vb[w] = VB[k * BV + tx + 16 * w];
#pragma unroll
        for (int w = 0; w < 8; ++w) kb[w] = KB[k * DK + tx + 16 * w];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
#pragma unroll
          for (int w = 0; w < 4; ++w) acc_u[u][w] = fmaf(t[u], vb[w], acc_u[u][w]);
#pragma unroll
          for (int w = 0; w < 8; ++w) acc_w[u][w] = fmaf(t[u], kb[w], acc_w[u][w]);
        }
      }
      __syncthreads();
#pragma unroll
      for (int u = 0; u < 4; ++u) {
#pragma unroll
        for (int w = 0; w < 4; ++w) VB[(ty + 16 * u) * BV + tx + 16 * w] = acc_u[u][w];
#pragma unroll
        for (int w = 0; w < 8; ++w) KB[(ty + 16 * u) * DK + tx + 16 * w] = acc_w[u][w];
      }
    }
    __syncthreads();

    // 5. V_new = U − W S (each thread its own elements).
    {
      float acc[4][4] = {};
      for (int i = 0; i < dk; ++i) {
        float wr[4], sv[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) wr[u] = KB[(ty + 16 * u) * DK + i];
#pragma unroll
        for (int w = 0; w < 4; ++w) sv[w] = S[i * BV + tx + 16 * w];
#pragma unroll
        for (int u = 0; u < 4; ++u)
#pragma unroll
          for (int w = 0; w < 4; ++w) acc[u][w] = fmaf(wr[u], sv[w], acc[u][w]);
      }
#pragma unroll
      for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int w = 0; w < 4; ++w) VB[(ty + 16 * u) * BV + tx + 16 * w] -= acc[u][w];
    }
    __syncthreads();

    // 6. O = diag(e^γ) Q S + P V_new, straight into the output rows.
    {
      float qs[4][4] = {}, pv[4][4] = {};
      for (int i = 0; i < dk; ++i) {
        float qr[4], sv[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) qr[u] = Qs[(ty + 16 * u) * DK + i];
#pragma unroll
        for (int w = 0; w < 4; ++w) sv[w] = S[i * BV + tx + 16 * w];
#pragma unroll
        for (int u = 0; u < 4; ++u)
#pragma unroll
          for (int w = 0; w < 4; ++w) qs[u][w] = fmaf(qr[u], sv[w], qs[u][w]);
      }
      for (int k = 0; k < L; ++k) {
        float pr[4], uv[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) pr[u] = Ps[(ty + 16 * u) * SC + k];
#pragma unroll
        for (int w = 0; w < 4; ++w) uv[w] = VB[k * BV + tx + 16 * w];
#pragma unroll
        for (int u = 0; u < 4; ++u)
#pragma unroll
          for (int w = 0; w < 4; ++w) pv[u][w] = fmaf(pr[u], uv[w], pv[u][w]);
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int r = ty + 16 * u;
        if (r >= L) continue;
        float* o = a.out + ((first + c0 + r) * nv + h) * dv + j0;
#pragma unroll
        for (int w = 0; w < 4; ++w) {
          const int j = tx + 16 * w;
          if (j0 + j < dv) o[j] = eg[r] * qs[u][w] + pv[u][w];
        }
      }
    }
    __syncthreads();

    // 7. S ← e^{γ_last} S + (diag(e^{γ_last−γ}) K)ᵀ V_new.
    {
      float acc[8][4] = {};
      for (int k = 0; k < L; ++k) {
        float kr[8], uv[4];
        const float te = to_end[k];
#pragma unroll
        for (int u = 0; u < 8; ++u) kr[u] = te * Ks[k * SK + ty + 16 * u];
#pragma unroll
        for (int w = 0; w < 4; ++w) uv[w] = VB[k * BV + tx + 16 * w];
#pragma unroll
        for (int u = 0; u < 8; ++u)
#pragma unroll
          for (int w = 0; w < 4; ++w) acc[u][w] = fmaf(kr[u], uv[w], acc[u][w]);
      }
      const float eg_last = eg[L - 1];
#pragma unroll
      for (int u = 0; u < 8; ++u)
#pragma unroll
        for (int w = 0; w < 4; ++w) {
          float& sv = S[(ty + 16 * u) * BV + tx + 16 * w];
          sv = fmaf(eg_last, sv, acc[u][w]);
        }
    }
    __syncthreads();
  }

  for (int idx = tid; idx < DK * BV; idx += kThreads) {
    const int i = idx / BV, j = idx % BV;
    if (i < dk && j0 + j < dv) state[int64_t{i} * dv + j0 + j] = S[idx];
  }
}

}  // namespace

void conv1d_silu(const float* x, int64_t channels, const float* w, int kernel, float* state, float* out,
                 const SeqBatch& b, cudaStream_t stream) {
  if (b.n_tokens <= 0 || channels <= 0) return;
  conv1d_silu_kernel<<<blocks_for(b.n_tokens * channels), kThreads, 0, stream>>>(x, channels, w, kernel, state, out, b);
  check_launch("conv1d_silu");
  if (kernel <= 1) return;
  conv_state_kernel<<<blocks_for(b.n_seqs * channels), kThreads, 0, stream>>>(x, channels, kernel, state, b);
  check_launch("conv1d_silu (state)");
}

void l2_norm_heads(float* x, int64_t n_rows, int64_t row_stride, int64_t n_heads, int64_t dim, float eps, float scale,
                   cudaStream_t stream) {
  const int64_t warps = n_rows * n_heads;
  if (warps <= 0) return;
  l2_norm_heads_kernel<<<blocks_for(warps * 32), kThreads, 0, stream>>>(x, n_rows, row_stride, n_heads, dim, eps, scale);
  check_launch("l2_norm_heads");
}

void gdn_gates(float* beta, float* alpha, const float* ssm_a, const float* dt_bias, int64_t n_tokens, int64_t n_heads,
               cudaStream_t stream) {
  const int64_t n = n_tokens * n_heads;
  if (n <= 0) return;
  gdn_gates_kernel<<<blocks_for(n), kThreads, 0, stream>>>(beta, alpha, ssm_a, dt_bias, n, n_heads);
  check_launch("gdn_gates");
}

void gated_rms_norm(float* o, const float* z, const float* w, int64_t n_rows, int64_t dim, float eps,
                    cudaStream_t stream) {
  if (n_rows <= 0) return;
  const int threads = dim >= 1024 ? 512 : dim >= 256 ? 256 : dim > 64 ? 128 : 64;
  gated_rms_norm_kernel<<<static_cast<unsigned>(n_rows), threads, 0, stream>>>(o, z, w, dim, eps);
  check_launch("gated_rms_norm");
}

bool gated_delta_supports(int d_k) { return d_k > 0 && d_k <= DK; }

void gated_delta(const DeltaArgs& a, const SeqBatch& b, cudaStream_t stream) {
  if (b.n_seqs <= 0) return;
  if (!gated_delta_supports(a.d_k) || a.d_v <= 0 || a.n_k_heads <= 0 || a.n_v_heads % a.n_k_heads != 0)
    throw Error("the CUDA gated delta rule takes key heads of at most " + std::to_string(DK) + " dims; this model's are " +
                    std::to_string(a.d_k),
                ErrorKind::usage);
  static const bool configured = [] {
    check(cudaFuncSetAttribute(gated_delta_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(DeltaSmem::BYTES)),
          "cudaFuncSetAttribute (gated_delta)");
    return true;
  }();
  (void)configured;
  const dim3 grid(unsigned(a.n_v_heads * ((a.d_v + BV - 1) / BV)), unsigned(b.n_seqs));
  gated_delta_kernel<<<grid, kThreads, DeltaSmem::BYTES, stream>>>(a, b);
  check_launch("gated_delta");
}

}  // namespace keel::cuda
