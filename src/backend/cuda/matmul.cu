#include <cublas_v2.h>

#include <algorithm>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/dequant.cuh"
#include "backend/cuda/matmul.cuh"

namespace keel::cuda {
namespace {

using quant::Type;

constexpr int kGemvWarps = 4;  // rows per CTA (one warp each)

// ---- GEMV: per type, how one lane reads its share of a block -------------------------------
// A warp walks a row block by block; `lanes` consecutive lanes share one block, each lane
// dequantizing runs of 8 consecutive elements into registers (run r starts at run_start(sub, r)
// within the block).
template <Type T> struct GemvBlock;

template <> struct GemvBlock<Type::Q8_0> {
  static constexpr int lanes = 4, runs = 1, elems = 32, bytes = 34;
  __device__ static int run_start(int sub, int) { return 8 * sub; }
  __device__ static void load(const uint8_t* b, int sub, float* w) {
    const float d = f16_bits_to_f32(load_u16(b));
    const uint8_t* q = b + 2 + 8 * sub;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint16_t v = load_u16(q + 2 * i);
      w[2 * i] = d * static_cast<float>(static_cast<int8_t>(v & 0xFF));
      w[2 * i + 1] = d * static_cast<float>(static_cast<int8_t>(v >> 8));
    }
  }
};

template <> struct GemvBlock<Type::Q4_0> {
  static constexpr int lanes = 2, runs = 2, elems = 32, bytes = 18;
  __device__ static int run_start(int sub, int r) { return 16 * r + 8 * sub; }
  __device__ static void load(const uint8_t* b, int sub, float* w) {
    const float d = f16_bits_to_f32(load_u16(b));
    const uint8_t* q = b + 2 + 8 * sub;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint16_t v = load_u16(q + 2 * i);
      const int q0 = v & 0xFF, q1 = v >> 8;
      w[2 * i] = d * static_cast<float>((q0 & 0x0F) - 8);
      w[2 * i + 1] = d * static_cast<float>((q1 & 0x0F) - 8);
      w[8 + 2 * i] = d * static_cast<float>((q0 >> 4) - 8);
      w[8 + 2 * i + 1] = d * static_cast<float>((q1 >> 4) - 8);
    }
  }
};

// Q4_K / Q5_K: lane sub (0..7) takes qs bytes [16 sub, 16 sub + 16) (group j = sub / 2, half
// h = sub % 2): low nibbles are elements 64j + 16h + [0,16), high nibbles 64j + 32 + 16h + [0,16).
template <Type T> struct GemvBlockK45 {
  static constexpr bool five = T == Type::Q5_K;
  static constexpr int lanes = 8, runs = 4, elems = 256, bytes = five ? 176 : 144;
  __device__ static int run_start(int sub, int r) { return 64 * (sub / 2) + 16 * (sub % 2) + 32 * (r / 2) + 8 * (r % 2); }
  __device__ static void load(const uint8_t* b, int sub, float* w) {
    const float d = f16_bits_to_f32(load_u16(b));
    const float dmin = f16_bits_to_f32(load_u16(b + 2));
    const int j = sub / 2, h = sub % 2;
    int sc0, m0, sc1, m1;
    scale_min_k4(2 * j, b + 4, sc0, m0);
    scale_min_k4(2 * j + 1, b + 4, sc1, m1);
    const float d0 = d * sc0, min0 = dmin * m0, d1 = d * sc1, min1 = dmin * m1;
    const uint4 qv = *reinterpret_cast<const uint4*>(b + (five ? 48 : 16) + 16 * sub);
    const uint8_t* q = reinterpret_cast<const uint8_t*>(&qv);
    if constexpr (five) {
      const uint4 hv = *reinterpret_cast<const uint4*>(b + 16 + 16 * h);
      const uint8_t* qh = reinterpret_cast<const uint8_t*>(&hv);
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        w[i] = d0 * static_cast<float>((q[i] & 0x0F) | (((qh[i] >> (2 * j)) & 1) << 4)) - min0;
        w[16 + i] = d1 * static_cast<float>((q[i] >> 4) | (((qh[i] >> (2 * j + 1)) & 1) << 4)) - min1;
      }
    } else {
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        w[i] = d0 * static_cast<float>(q[i] & 0x0F) - min0;
        w[16 + i] = d1 * static_cast<float>(q[i] >> 4) - min1;
      }
    }
  }
};
template <> struct GemvBlock<Type::Q4_K> : GemvBlockK45<Type::Q4_K> {};
template <> struct GemvBlock<Type::Q5_K> : GemvBlockK45<Type::Q5_K> {};

// Q6_K: lane sub (0..7) takes half sub / 4, positions l in [8 (sub % 4), +8) of that half: four
// runs (quarters) 128 half + 32 qq + 8 (sub % 4).
template <> struct GemvBlock<Type::Q6_K> {
  static constexpr int lanes = 8, runs = 4, elems = 256, bytes = 210;
  __device__ static int run_start(int sub, int r) { return 128 * (sub / 4) + 32 * r + 8 * (sub % 4); }
  __device__ static void load(const uint8_t* b, int sub, float* w) {
    const int half = sub / 4, lq = sub % 4;
    const uint8_t* ql0 = b + 64 * half + 8 * lq;
    const uint8_t* ql1 = ql0 + 32;
    const uint8_t* qh = b + 128 + 32 * half + 8 * lq;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192) + 8 * half + lq / 2;
    const float d = f16_bits_to_f32(load_u16(b + 208));
    const float s0 = d * sc[0], s1 = d * sc[2], s2 = d * sc[4], s3 = d * sc[6];
#pragma unroll
    for (int i = 0; i < 8; i += 2) {
      const uint16_t a = load_u16(ql0 + i), c = load_u16(ql1 + i), hh = load_u16(qh + i);
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int l0 = (a >> (8 * k)) & 0xFF, l1 = (c >> (8 * k)) & 0xFF, h = (hh >> (8 * k)) & 0xFF;
        w[i + k] = s0 * static_cast<float>(((l0 & 0x0F) | ((h & 3) << 4)) - 32);
        w[8 + i + k] = s1 * static_cast<float>(((l1 & 0x0F) | (((h >> 2) & 3) << 4)) - 32);
        w[16 + i + k] = s2 * static_cast<float>(((l0 >> 4) | (((h >> 4) & 3) << 4)) - 32);
        w[24 + i + k] = s3 * static_cast<float>(((l1 >> 4) | (((h >> 6) & 3) << 4)) - 32);
      }
    }
  }
};

// Float types, rows whose length is a multiple of 8 (16-byte aligned runs).
template <Type T> struct GemvBlockFloat {
  static constexpr int esize = T == Type::F32 ? 4 : 2;
  static constexpr int lanes = 1, runs = 1, elems = 8, bytes = 8 * esize;
  __device__ static int run_start(int, int) { return 0; }
  __device__ static void load(const uint8_t* b, int, float* w) {
    if constexpr (T == Type::F32) {
      const float4 a = reinterpret_cast<const float4*>(b)[0], c = reinterpret_cast<const float4*>(b)[1];
      w[0] = a.x; w[1] = a.y; w[2] = a.z; w[3] = a.w; w[4] = c.x; w[5] = c.y; w[6] = c.z; w[7] = c.w;
    } else {
      const uint4 v = *reinterpret_cast<const uint4*>(b);
      const uint16_t* h = reinterpret_cast<const uint16_t*>(&v);
#pragma unroll
      for (int i = 0; i < 8; ++i) w[i] = T == Type::F16 ? f16_bits_to_f32(h[i]) : bf16_bits_to_f32(h[i]);
    }
  }
};
template <> struct GemvBlock<Type::F32> : GemvBlockFloat<Type::F32> {};
template <> struct GemvBlock<Type::F16> : GemvBlockFloat<Type::F16> {};
template <> struct GemvBlock<Type::BF16> : GemvBlockFloat<Type::BF16> {};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// One warp per row; up to kGemvMaxTokens tokens share every dequantized weight.
// w: [n_out][row_bytes]; x: [n_tok, n_in]; y: [n_tok, n_out].
template <Type T>
__global__ void __launch_bounds__(32 * kGemvWarps) gemv_kernel(const uint8_t* __restrict__ w, size_t row_bytes, int n_in,
                                                               int n_out, const float* __restrict__ x, int n_tok,
                                                               float* __restrict__ y) {
  using B = GemvBlock<T>;
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * kGemvWarps + threadIdx.x / 32;
  if (row >= n_out) return;
  const uint8_t* wr = w + static_cast<size_t>(row) * row_bytes;
  float acc[kGemvMaxTokens];
#pragma unroll
  for (int t = 0; t < kGemvMaxTokens; ++t) acc[t] = 0.0f;
  const int n_blocks = n_in / B::elems;
  const int sub = lane % B::lanes;
#pragma unroll 2
  for (int ib = lane / B::lanes; ib < n_blocks; ib += 32 / B::lanes) {
    float wv[8 * B::runs];
    B::load(wr + static_cast<size_t>(ib) * B::bytes, sub, wv);
#pragma unroll
    for (int r = 0; r < B::runs; ++r) {
      const int k0 = ib * B::elems + B::run_start(sub, r);
#pragma unroll
      for (int t = 0; t < kGemvMaxTokens; ++t) {
        if (t < n_tok) {
          const float4* xp = reinterpret_cast<const float4*>(x + static_cast<size_t>(t) * n_in + k0);
          const float4 a = __ldg(xp), c = __ldg(xp + 1);
          float s = acc[t];
          s = fmaf(wv[8 * r + 0], a.x, s); s = fmaf(wv[8 * r + 1], a.y, s);
          s = fmaf(wv[8 * r + 2], a.z, s); s = fmaf(wv[8 * r + 3], a.w, s);
          s = fmaf(wv[8 * r + 4], c.x, s); s = fmaf(wv[8 * r + 5], c.y, s);
          s = fmaf(wv[8 * r + 6], c.z, s); s = fmaf(wv[8 * r + 7], c.w, s);
          acc[t] = s;
        }
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kGemvMaxTokens; ++t) {
    if (t < n_tok) {
      const float s = warp_sum(acc[t]);
      if (lane == 0) y[static_cast<size_t>(t) * n_out + row] = s;
    }
  }
}

// Float rows of any length (no alignment): lanes stride over elements.
template <Type T>
__global__ void __launch_bounds__(32 * kGemvWarps) gemv_float_any_kernel(const uint8_t* __restrict__ w, size_t row_bytes,
                                                                         int n_in, int n_out, const float* __restrict__ x,
                                                                         int n_tok, float* __restrict__ y) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * kGemvWarps + threadIdx.x / 32;
  if (row >= n_out) return;
  const uint8_t* wr = w + static_cast<size_t>(row) * row_bytes;
  float acc[kGemvMaxTokens];
#pragma unroll
  for (int t = 0; t < kGemvMaxTokens; ++t) acc[t] = 0.0f;
  for (int k = lane; k < n_in; k += 32) {
    const float wk = load_float_elem<T>(wr, k);
#pragma unroll
    for (int t = 0; t < kGemvMaxTokens; ++t)
      if (t < n_tok) acc[t] = fmaf(wk, x[static_cast<size_t>(t) * n_in + k], acc[t]);
  }
#pragma unroll
  for (int t = 0; t < kGemvMaxTokens; ++t) {
    if (t < n_tok) {
      const float s = warp_sum(acc[t]);
      if (lane == 0) y[static_cast<size_t>(t) * n_out + row] = s;
    }
  }
}

// ---- dequantization into f32 / bf16 rows ------------------------------------------------------

__device__ __forceinline__ void store_out(float* out, float v) { *out = v; }
__device__ __forceinline__ void store_out(__nv_bfloat16* out, float v) { *out = __float2bfloat16_rn(v); }

// One thread per 32-element unit. out: [n_rows, n_in].
template <Type T, class Out>
__global__ void dequant_rows_kernel(const uint8_t* __restrict__ w, size_t row_bytes, int64_t n_in, const int32_t* rows,
                                    int64_t n_rows, Out* __restrict__ out) {
  const int64_t units = n_in / 32;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= units * n_rows) return;
  const int64_t r = i / units, u = i % units;
  const int64_t src_row = rows ? rows[r] : r;
  float v[32];
  dequant32<T>(w + src_row * row_bytes, u, v);
  Out* o = out + r * n_in + u * 32;
#pragma unroll
  for (int j = 0; j < 32; ++j) store_out(o + j, v[j]);
}

// One thread per element (float types).
template <Type T, class Out>
__global__ void convert_rows_kernel(const uint8_t* __restrict__ w, size_t row_bytes, int64_t n_in, const int32_t* rows,
                                    int64_t n_rows, Out* __restrict__ out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n_in * n_rows) return;
  const int64_t r = i / n_in, k = i % n_in;
  const int64_t src_row = rows ? rows[r] : r;
  store_out(out + i, load_float_elem<T>(w + src_row * row_bytes, k));
}

__global__ void f32_to_bf16_kernel(const float* __restrict__ x, int64_t n, __nv_bfloat16* __restrict__ out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16_rn(x[i]);
}

unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

template <Type T>
void launch_gemv(const DeviceWeight& w, const float* x, int64_t n_tokens, float* y, cudaStream_t stream) {
  const size_t rb = quant::row_bytes(w.type, static_cast<uint64_t>(w.n_in));
  const dim3 grid(blocks_for(w.n_out, kGemvWarps));
  const auto* wp = static_cast<const uint8_t*>(w.data);
  constexpr bool is_float = T == Type::F32 || T == Type::F16 || T == Type::BF16;
  if (is_float && w.n_in % 8 != 0)
    gemv_float_any_kernel<T><<<grid, 32 * kGemvWarps, 0, stream>>>(wp, rb, int(w.n_in), int(w.n_out), x, int(n_tokens), y);
  else
    gemv_kernel<T><<<grid, 32 * kGemvWarps, 0, stream>>>(wp, rb, int(w.n_in), int(w.n_out), x, int(n_tokens), y);
  check_launch("gemv");
}

template <class Out>
void launch_dequant(const DeviceWeight& w, const int32_t* rows, int64_t n_rows, Out* out, cudaStream_t stream) {
  const size_t rb = quant::row_bytes(w.type, static_cast<uint64_t>(w.n_in));
  const auto* wp = static_cast<const uint8_t*>(w.data);
  constexpr int threads = 256;
  const unsigned grid_units = blocks_for(w.n_in / 32 * n_rows, threads);
  const unsigned grid_elems = blocks_for(w.n_in * n_rows, threads);
  switch (w.type) {
    case Type::F32: convert_rows_kernel<Type::F32, Out><<<grid_elems, threads, 0, stream>>>(wp, rb, w.n_in, rows, n_rows, out); break;
    case Type::F16: convert_rows_kernel<Type::F16, Out><<<grid_elems, threads, 0, stream>>>(wp, rb, w.n_in, rows, n_rows, out); break;
    case Type::BF16: convert_rows_kernel<Type::BF16, Out><<<grid_elems, threads, 0, stream>>>(wp, rb, w.n_in, rows, n_rows, out); break;
    case Type::Q4_0: dequant_rows_kernel<Type::Q4_0, Out><<<grid_units, threads, 0, stream>>>(wp, rb, w.n_in, rows, n_rows, out); break;
    case Type::Q8_0: dequant_rows_kernel<Type::Q8_0, Out><<<grid_units, threads, 0, stream>>>(wp, rb, w.n_in, rows, n_rows, out); break;
    case Type::Q4_K: dequant_rows_kernel<Type::Q4_K, Out><<<grid_units, threads, 0, stream>>>(wp, rb, w.n_in, rows, n_rows, out); break;
    case Type::Q5_K: dequant_rows_kernel<Type::Q5_K, Out><<<grid_units, threads, 0, stream>>>(wp, rb, w.n_in, rows, n_rows, out); break;
    case Type::Q6_K: dequant_rows_kernel<Type::Q6_K, Out><<<grid_units, threads, 0, stream>>>(wp, rb, w.n_in, rows, n_rows, out); break;
    default: throw Error("the CUDA backend cannot read tensor type " + std::string(quant::type_name(w.type)));
  }
  check_launch("dequant_rows");
}

void check_blas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuBLAS: ") + what + " failed: " + cublasGetStatusString(status));
}

int64_t panel_rows(int64_t n_in, int64_t n_out) {
  return std::max<int64_t>(1, std::min<int64_t>(n_out, static_cast<int64_t>(kGemmPanelBytes / (2 * n_in)) / 128 * 128));
}

}  // namespace

bool device_matmul_supports(quant::Type type) {
  switch (type) {
    case Type::F32: case Type::F16: case Type::BF16: case Type::Q4_0: case Type::Q8_0:
    case Type::Q4_K: case Type::Q5_K: case Type::Q6_K: return true;
    default: return false;
  }
}

Blas::Blas(void* workspace, size_t workspace_bytes, cudaStream_t stream) : stream_(stream) {
  cublasHandle_t h = nullptr;
  check_blas(cublasCreate(&h), "cublasCreate");
  handle_ = h;
  check_blas(cublasSetStream(h, stream), "cublasSetStream");
  check_blas(cublasSetWorkspace(h, workspace, workspace_bytes), "cublasSetWorkspace");
  check_blas(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
}

Blas::~Blas() {
  if (handle_) cublasDestroy(handle_);
}

size_t matmul_scratch_bytes(quant::Type type, int64_t n_in, int64_t n_out, int64_t max_tokens) {
  if (max_tokens <= kGemvMaxTokens) return 0;
  const size_t panel = static_cast<size_t>(panel_rows(n_in, n_out) * n_in) * 2;
  const size_t acts = static_cast<size_t>(max_tokens * n_in) * 2;
  return (panel + 255) / 256 * 256 + (acts + 255) / 256 * 256;
}

void gemv(const DeviceWeight& w, const float* x, int64_t n_tokens, float* y, cudaStream_t stream) {
  if (n_tokens > kGemvMaxTokens) throw Error("internal: gemv takes at most 8 tokens");
  switch (w.type) {
    case Type::F32: return launch_gemv<Type::F32>(w, x, n_tokens, y, stream);
    case Type::F16: return launch_gemv<Type::F16>(w, x, n_tokens, y, stream);
    case Type::BF16: return launch_gemv<Type::BF16>(w, x, n_tokens, y, stream);
    case Type::Q4_0: return launch_gemv<Type::Q4_0>(w, x, n_tokens, y, stream);
    case Type::Q8_0: return launch_gemv<Type::Q8_0>(w, x, n_tokens, y, stream);
    case Type::Q4_K: return launch_gemv<Type::Q4_K>(w, x, n_tokens, y, stream);
    case Type::Q5_K: return launch_gemv<Type::Q5_K>(w, x, n_tokens, y, stream);
    case Type::Q6_K: return launch_gemv<Type::Q6_K>(w, x, n_tokens, y, stream);
    default: throw Error("the CUDA backend cannot multiply tensor type " + std::string(quant::type_name(w.type)));
  }
}

void gemm_bf16(const Blas& blas, const DeviceWeight& w, const float* x, int64_t n_tokens, float* y, void* scratch) {
  const int64_t prows = panel_rows(w.n_in, w.n_out);
  auto* wb = static_cast<__nv_bfloat16*>(scratch);
  auto* xb = reinterpret_cast<__nv_bfloat16*>(static_cast<uint8_t*>(scratch) +
                                              (static_cast<size_t>(prows * w.n_in) * 2 + 255) / 256 * 256);
  f32_to_bf16(x, n_tokens * w.n_in, xb, blas.stream());
  const size_t rb = quant::row_bytes(w.type, static_cast<uint64_t>(w.n_in));
  const float one = 1.0f, zero = 0.0f;
  for (int64_t r0 = 0; r0 < w.n_out; r0 += prows) {
    const int64_t m = std::min(prows, w.n_out - r0);
    DeviceWeight panel{w.type, static_cast<const uint8_t*>(w.data) + r0 * rb, w.n_in, m};
    launch_dequant(panel, nullptr, m, wb, blas.stream());
    // Column-major view: Y (n_out x n_tok, ld n_out) = W^T (W is n_in x n_out col-major) * X (n_in x n_tok).
    check_blas(cublasGemmEx(blas.handle(), CUBLAS_OP_T, CUBLAS_OP_N, int(m), int(n_tokens), int(w.n_in), &one, wb,
                            CUDA_R_16BF, int(w.n_in), xb, CUDA_R_16BF, int(w.n_in), &zero, y + r0, CUDA_R_32F,
                            int(w.n_out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx");
  }
}

void matmul(const Blas& blas, const DeviceWeight& w, const float* x, int64_t n_tokens, float* y, void* scratch) {
  if (n_tokens <= kGemvMaxTokens) return gemv(w, x, n_tokens, y, blas.stream());
  gemm_bf16(blas, w, x, n_tokens, y, scratch);
}

void dequant_rows_f32(const DeviceWeight& w, const int32_t* rows, int64_t n_rows, float* out, cudaStream_t stream) {
  launch_dequant(w, rows, n_rows, out, stream);
}

void dequant_rows_bf16(const DeviceWeight& w, const int32_t* rows, int64_t n_rows, void* out, cudaStream_t stream) {
  launch_dequant(w, rows, n_rows, static_cast<__nv_bfloat16*>(out), stream);
}

void f32_to_bf16(const float* x, int64_t n, void* out, cudaStream_t stream) {
  f32_to_bf16_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(x, n, static_cast<__nv_bfloat16*>(out));
  check_launch("f32_to_bf16");
}

}  // namespace keel::cuda
