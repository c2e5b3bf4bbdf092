#include <cublas_v2.h>
#include <dlfcn.h>

#include <algorithm>
#include <string>
#include <type_traits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/dequant.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/matmul.cuh"
#include "backend/cuda/warp.cuh"

namespace keel::cuda {
namespace {

using quant::Type;

constexpr int kGemvWarps = 4;  // rows per CTA (one warp each)

// ---- per type, how one lane reads its share of a block -------------------------------------
// A warp walks a row block by block; `lanes` consecutive lanes share one block. A lane first
// fetches its raw bytes (fetch: wide loads only, so that several blocks' loads are in flight at
// once), then decodes them into runs of 8 consecutive elements (run r starts at run_start(sub,
// r) within the block). decode does the scalar reference's float operations without FMA
// contraction, so the values are bit-identical with quant::dequantize_row (the dequant kernel
// below relies on it; the GEMV could contract, but the cost is one instruction per element).
template <Type T> struct LaneBlock;

template <> struct LaneBlock<Type::Q8_0> {
  static constexpr int lanes = 4, runs = 1, elems = 32, bytes = 34, unroll = 4, unroll1 = 4;
  struct Raw { uint32_t d, q0, q1; };
  __device__ static int run_start(int sub, int) { return 8 * sub; }
  __device__ static Raw fetch(const uint8_t* b, int sub) {
    return {load_u16(b), load_u32_a2(b + 2 + 8 * sub), load_u32_a2(b + 6 + 8 * sub)};
  }
  __device__ static void decode(const Raw& r, int, float* w) {
    const float d = f16_bits_to_f32(uint16_t(r.d));
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      w[i] = __fmul_rn(d, float(int8_t(r.q0 >> (8 * i))));
      w[4 + i] = __fmul_rn(d, float(int8_t(r.q1 >> (8 * i))));
    }
  }
};

template <> struct LaneBlock<Type::Q4_0> {
  static constexpr int lanes = 2, runs = 2, elems = 32, bytes = 18, unroll = 4, unroll1 = 4;
  struct Raw { uint32_t d, q0, q1; };
  __device__ static int run_start(int sub, int r) { return 16 * r + 8 * sub; }
  __device__ static Raw fetch(const uint8_t* b, int sub) {
    return {load_u16(b), load_u32_a2(b + 2 + 8 * sub), load_u32_a2(b + 6 + 8 * sub)};
  }
  __device__ static void decode(const Raw& r, int, float* w) {
    const float d = f16_bits_to_f32(uint16_t(r.d));
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int q = int(((i < 4 ? r.q0 : r.q1) >> (8 * (i % 4))) & 0xFF);
      w[i] = __fmul_rn(d, float((q & 0x0F) - 8));
      w[8 + i] = __fmul_rn(d, float((q >> 4) - 8));
    }
  }
};

// Q4_K / Q5_K: lane sub (0..7) takes qs bytes [16 sub, 16 sub + 16) (group j = sub / 2, half
// h = sub % 2): low nibbles are elements 64j + 16h + [0,16), high nibbles 64j + 32 + 16h + [0,16).
template <Type T> struct LaneBlockK45 {
  static constexpr bool five = T == Type::Q5_K;
  static constexpr int lanes = 8, runs = 4, elems = 256, bytes = five ? 176 : 144, unroll = 2, unroll1 = 2;
  struct Raw { uint32_t dm, sc[3]; uint4 qs, qh; };
  __device__ static int run_start(int sub, int r) { return 64 * (sub / 2) + 16 * (sub % 2) + 32 * (r / 2) + 8 * (r % 2); }
  __device__ static Raw fetch(const uint8_t* b, int sub) {
    Raw r;
    const uint32_t* w32 = reinterpret_cast<const uint32_t*>(b);  // blocks are 16-byte aligned
    r.dm = w32[0];
    r.sc[0] = w32[1]; r.sc[1] = w32[2]; r.sc[2] = w32[3];
    r.qs = *reinterpret_cast<const uint4*>(b + (five ? 48 : 16) + 16 * sub);
    if constexpr (five) r.qh = *reinterpret_cast<const uint4*>(b + 16 + 16 * (sub % 2));
    return r;
  }
  __device__ static void decode(const Raw& r, int sub, float* w) {
    const float d = f16_bits_to_f32(uint16_t(r.dm)), dmin = f16_bits_to_f32(uint16_t(r.dm >> 16));
    const int j = sub / 2;
    int sc0, m0, sc1, m1;
    scale_min_k4_regs(2 * j, r.sc, sc0, m0);
    scale_min_k4_regs(2 * j + 1, r.sc, sc1, m1);
    const float d0 = __fmul_rn(d, float(sc0)), min0 = __fmul_rn(dmin, float(m0));
    const float d1 = __fmul_rn(d, float(sc1)), min1 = __fmul_rn(dmin, float(m1));
    const uint8_t* q = reinterpret_cast<const uint8_t*>(&r.qs);
    const uint8_t* qh = reinterpret_cast<const uint8_t*>(&r.qh);
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      int lo = q[i] & 0x0F, hi = q[i] >> 4;
      if constexpr (five) {
        lo |= ((qh[i] >> (2 * j)) & 1) << 4;
        hi |= ((qh[i] >> (2 * j + 1)) & 1) << 4;
      }
      w[i] = __fsub_rn(__fmul_rn(d0, float(lo)), min0);
      w[16 + i] = __fsub_rn(__fmul_rn(d1, float(hi)), min1);
    }
  }
};
template <> struct LaneBlock<Type::Q4_K> : LaneBlockK45<Type::Q4_K> {};
template <> struct LaneBlock<Type::Q5_K> : LaneBlockK45<Type::Q5_K> {};

// Q6_K: lane sub (0..7) takes half sub / 4, positions l in [8 (sub % 4), +8) of that half: four
// runs (quarters) 128 half + 32 qq + 8 (sub % 4).
template <> struct LaneBlock<Type::Q6_K> {
  static constexpr int lanes = 8, runs = 4, elems = 256, bytes = 210, unroll = 2, unroll1 = 2;
  struct Raw { uint32_t l0[2], l1[2], h[2], sc, d; };
  __device__ static int run_start(int sub, int r) { return 128 * (sub / 4) + 32 * r + 8 * (sub % 4); }
  __device__ static Raw fetch(const uint8_t* b, int sub) {
    const int half = sub / 4, lq = sub % 4;
    const uint8_t* ql0 = b + 64 * half + 8 * lq;
    const uint8_t* qh = b + 128 + 32 * half + 8 * lq;
    const uint8_t* sc = b + 192 + 8 * half + lq / 2;
    Raw r;
    r.l0[0] = load_u32_a2(ql0); r.l0[1] = load_u32_a2(ql0 + 4);
    r.l1[0] = load_u32_a2(ql0 + 32); r.l1[1] = load_u32_a2(ql0 + 36);
    r.h[0] = load_u32_a2(qh); r.h[1] = load_u32_a2(qh + 4);
    r.sc = uint32_t(sc[0]) | uint32_t(sc[2]) << 8 | uint32_t(sc[4]) << 16 | uint32_t(sc[6]) << 24;
    r.d = load_u16(b + 208);
    return r;
  }
  __device__ static void decode(const Raw& r, int, float* w) {
    const float d = f16_bits_to_f32(uint16_t(r.d));
    float s[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) s[k] = __fmul_rn(d, float(int8_t(r.sc >> (8 * k))));
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int l0 = (r.l0[i / 4] >> (8 * (i % 4))) & 0xFF, l1 = (r.l1[i / 4] >> (8 * (i % 4))) & 0xFF;
      const int h = (r.h[i / 4] >> (8 * (i % 4))) & 0xFF;
      w[i] = __fmul_rn(s[0], float(((l0 & 0x0F) | ((h & 3) << 4)) - 32));
      w[8 + i] = __fmul_rn(s[1], float(((l1 & 0x0F) | (((h >> 2) & 3) << 4)) - 32));
      w[16 + i] = __fmul_rn(s[2], float(((l0 >> 4) | (((h >> 4) & 3) << 4)) - 32));
      w[24 + i] = __fmul_rn(s[3], float(((l1 >> 4) | (((h >> 6) & 3) << 4)) - 32));
    }
  }
};

// Float types, rows whose length is a multiple of 8 (16-byte aligned runs).
template <Type T> struct LaneBlockFloat {
  static constexpr int esize = T == Type::F32 ? 4 : 2;
  static constexpr int lanes = 1, runs = 1, elems = 8, bytes = 8 * esize, unroll = 4, unroll1 = 4;
  struct Raw { uint4 a, b; };
  __device__ static int run_start(int, int) { return 0; }
  __device__ static Raw fetch(const uint8_t* p, int) {
    const uint4* v = reinterpret_cast<const uint4*>(p);
    if constexpr (T == Type::F32) return {v[0], v[1]};
    else return {v[0], make_uint4(0, 0, 0, 0)};
  }
  __device__ static void decode(const Raw& r, int, float* w) {
    if constexpr (T == Type::F32) {
      const float* f = reinterpret_cast<const float*>(&r);
#pragma unroll
      for (int i = 0; i < 8; ++i) w[i] = f[i];
    } else {
      const uint16_t* h = reinterpret_cast<const uint16_t*>(&r.a);
#pragma unroll
      for (int i = 0; i < 8; ++i) w[i] = T == Type::F16 ? f16_bits_to_f32(h[i]) : bf16_bits_to_f32(h[i]);
    }
  }
};
template <> struct LaneBlock<Type::F32> : LaneBlockFloat<Type::F32> {};
template <> struct LaneBlock<Type::F16> : LaneBlockFloat<Type::F16> {};
template <> struct LaneBlock<Type::BF16> : LaneBlockFloat<Type::BF16> {};

// One warp per row; up to NT tokens (n_tok <= NT) share every dequantized weight. The raw bytes
// of `unroll` blocks per lane are fetched before any is decoded (memory parallelism). NT = 1 (one
// decode token) keeps the registers, hence the occupancy, of a plain GEMV.
// w: [n_out][row_bytes]; x: [n_tok, n_in]; y: [n_tok, n_out].
template <Type T, int NT>
__global__ void __launch_bounds__(32 * kGemvWarps) gemv_kernel(const uint8_t* __restrict__ w, size_t row_bytes, int n_in,
                                                               int n_out, const float* __restrict__ x, int n_tok,
                                                               float* __restrict__ y) {
  pdl_enter();
  using B = LaneBlock<T>;
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * kGemvWarps + threadIdx.x / 32;
  if (row >= n_out) return;
  const uint8_t* wr = w + static_cast<size_t>(row) * row_bytes;
  float acc[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = 0.0f;
  const int n_blocks = n_in / B::elems;
  const int sub = lane % B::lanes;
  constexpr int step = 32 / B::lanes;  // blocks per warp per unrolled slot
  // Blocks in flight per lane (unroll1: for one token). Measured on the H200: doubling unroll1
  // (8 for Q8_0, 4 for the K-quants) raised the registers to 72-96 and lowered decode from 143
  // to 125 tok/s on Qwen3-8B Q8_0, so it stays equal to the multi-token unroll.
  constexpr int unroll = NT == 1 ? B::unroll1 : B::unroll;
  for (int ib0 = lane / B::lanes; ib0 < n_blocks; ib0 += unroll * step) {
    typename B::Raw raw[unroll];
#pragma unroll
    for (int u = 0; u < unroll; ++u) {
      const int ib = ib0 + u * step;
      if (ib < n_blocks) raw[u] = B::fetch(wr + static_cast<size_t>(ib) * B::bytes, sub);
    }
#pragma unroll
    for (int u = 0; u < unroll; ++u) {
      const int ib = ib0 + u * step;
      if (ib >= n_blocks) break;
      float wv[8 * B::runs];
      B::decode(raw[u], sub, wv);
#pragma unroll
      for (int r = 0; r < B::runs; ++r) {
        const int k0 = ib * B::elems + B::run_start(sub, r);
#pragma unroll
        for (int t = 0; t < NT; ++t) {
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
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) {
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
  pdl_enter();
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

// ---- dequantization into f32 / f16 rows ----------------------------------------------------

__device__ __forceinline__ void store_out(float* out, float v) { *out = v; }
__device__ __forceinline__ void store_out(__half* out, float v) { *out = __float2half_rn(v); }

__device__ __forceinline__ void store_run(float* out, const float* v) {
  reinterpret_cast<float4*>(out)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(out)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ void store_run(__half* out, const float* v) {
  uint4 packed;
  uint32_t* p = reinterpret_cast<uint32_t*>(&packed);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const __half2 two = __floats2half2_rn(v[2 * i], v[2 * i + 1]);
    p[i] = *reinterpret_cast<const uint32_t*>(&two);
  }
  *reinterpret_cast<uint4*>(out) = packed;
}

// One thread per (row, block, lane share): the GEMV's fetch + decode, then 8-element vector
// stores. out: [n_rows, n_in] (rows 16-byte aligned: n_in is a multiple of 8 here).
template <Type T, class Out>
__global__ void dequant_rows_kernel(const uint8_t* __restrict__ w, size_t row_bytes, int64_t n_in, const int32_t* rows,
                                    int64_t n_rows, Out* __restrict__ out) {
  pdl_enter();
  using B = LaneBlock<T>;
  const int64_t blocks = n_in / B::elems;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= blocks * B::lanes * n_rows) return;
  const int sub = static_cast<int>(i % B::lanes);
  const int64_t ib = (i / B::lanes) % blocks, r = i / (B::lanes * blocks);
  const int64_t src_row = rows ? rows[r] : r;
  const auto raw = B::fetch(w + src_row * row_bytes + ib * B::bytes, sub);
  float v[8 * B::runs];
  B::decode(raw, sub, v);
  Out* o = out + r * n_in + ib * B::elems;
#pragma unroll
  for (int run = 0; run < B::runs; ++run) store_run(o + B::run_start(sub, run), v + 8 * run);
}

// One thread per element (float types).
template <Type T, class Out>
__global__ void convert_rows_kernel(const uint8_t* __restrict__ w, size_t row_bytes, int64_t n_in, const int32_t* rows,
                                    int64_t n_rows, Out* __restrict__ out) {
  pdl_enter();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n_in * n_rows) return;
  const int64_t r = i / n_in, k = i % n_in;
  const int64_t src_row = rows ? rows[r] : r;
  store_out(out + i, load_float_elem<T>(w + src_row * row_bytes, k));
}

__global__ void f32_to_f16_kernel(const float* __restrict__ x, int64_t n, __half* __restrict__ out) {
  pdl_enter();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = __float2half_rn(x[i]);
}

unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

template <Type T>
void launch_gemv(const DeviceWeight& w, const float* x, int64_t n_tokens, float* y, cudaStream_t stream) {
  const size_t rb = quant::row_bytes(w.type, static_cast<uint64_t>(w.n_in));
  const dim3 grid(blocks_for(w.n_out, kGemvWarps));
  const auto* wp = static_cast<const uint8_t*>(w.data);
  constexpr bool is_float = T == Type::F32 || T == Type::F16 || T == Type::BF16;
  if (is_float && w.n_in % 8 != 0)
    launch(gemv_float_any_kernel<T>, grid, 32 * kGemvWarps, 0, stream, wp, rb, int(w.n_in), int(w.n_out), x,
           int(n_tokens), y);
  else
    if (n_tokens == 1)
      launch(gemv_kernel<T, 1>, grid, 32 * kGemvWarps, 0, stream, wp, rb, int(w.n_in), int(w.n_out), x, 1, y);
    else
      launch(gemv_kernel<T, kGemvMaxTokens>, grid, 32 * kGemvWarps, 0, stream, wp, rb, int(w.n_in), int(w.n_out), x,
             int(n_tokens), y);
}

template <class Out>
void launch_dequant(const DeviceWeight& w, const int32_t* rows, int64_t n_rows, Out* out, cudaStream_t stream) {
  const size_t rb = quant::row_bytes(w.type, static_cast<uint64_t>(w.n_in));
  const auto* wp = static_cast<const uint8_t*>(w.data);
  constexpr int threads = 256;
  // The vector kernel: a thread per lane share of a block (n_in / 8 for every type); rows of
  // floats not a multiple of 8 take one thread per element.
  auto go = [&](auto type) {
    constexpr Type T = decltype(type)::value;
    if (w.n_in % 8 == 0)
      launch(dequant_rows_kernel<T, Out>, blocks_for(w.n_in / 8 * n_rows, threads), threads, 0, stream, wp, rb, w.n_in,
             rows, n_rows, out);
    else if constexpr (T == Type::F32 || T == Type::F16 || T == Type::BF16)
      launch(convert_rows_kernel<T, Out>, blocks_for(w.n_in * n_rows, threads), threads, 0, stream, wp, rb, w.n_in, rows,
             n_rows, out);
    else
      throw Error("internal: a quantized row of whole blocks is a multiple of 8 inputs");
  };
  switch (w.type) {
    case Type::F32: return go(std::integral_constant<Type, Type::F32>{});
    case Type::F16: return go(std::integral_constant<Type, Type::F16>{});
    case Type::BF16: return go(std::integral_constant<Type, Type::BF16>{});
    case Type::Q4_0: return go(std::integral_constant<Type, Type::Q4_0>{});
    case Type::Q8_0: return go(std::integral_constant<Type, Type::Q8_0>{});
    case Type::Q4_K: return go(std::integral_constant<Type, Type::Q4_K>{});
    case Type::Q5_K: return go(std::integral_constant<Type, Type::Q5_K>{});
    case Type::Q6_K: return go(std::integral_constant<Type, Type::Q6_K>{});
    default: throw Error("the CUDA backend cannot read tensor type " + std::string(quant::type_name(w.type)));
  }
}

// cuBLAS is opened at run time (dlopen) by the first Blas, not linked: its libraries are large,
// and every keel process (CPU sessions, tools) would otherwise map them at start (measured: the
// peak RSS of `keel synth` went from below 100 MB to 170 MB).
struct BlasApi {
  decltype(&cublasCreate_v2) create;
  decltype(&cublasDestroy_v2) destroy;
  decltype(&cublasSetStream_v2) set_stream;
  decltype(&cublasSetWorkspace_v2) set_workspace;
  decltype(&cublasSetMathMode) set_math_mode;
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                            const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*,
                            cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
  decltype(&cublasGetStatusString) status_string;
};

BlasApi load_blas() {
  void* lib = nullptr;
  for (const char* name : {"libcublas.so.13", "libcublas.so"})
    if ((lib = dlopen(name, RTLD_NOW | RTLD_LOCAL))) break;
  if (!lib) throw Error(std::string("the CUDA backend needs cuBLAS (libcublas.so.13), which could not be loaded: ") + dlerror());
  auto sym = [&](const char* name) {
    void* f = dlsym(lib, name);
    if (!f) throw Error(std::string("cuBLAS has no ") + name);
    return f;
  };
  BlasApi api;
  api.create = reinterpret_cast<decltype(api.create)>(sym("cublasCreate_v2"));
  api.destroy = reinterpret_cast<decltype(api.destroy)>(sym("cublasDestroy_v2"));
  api.set_stream = reinterpret_cast<decltype(api.set_stream)>(sym("cublasSetStream_v2"));
  api.set_workspace = reinterpret_cast<decltype(api.set_workspace)>(sym("cublasSetWorkspace_v2"));
  api.set_math_mode = reinterpret_cast<decltype(api.set_math_mode)>(sym("cublasSetMathMode"));
  api.gemm_ex = reinterpret_cast<decltype(api.gemm_ex)>(sym("cublasGemmEx"));
  api.status_string = reinterpret_cast<decltype(api.status_string)>(sym("cublasGetStatusString"));
  return api;
}

// Loaded once per process (immutable afterwards; never unloaded).
const BlasApi& blas_api() {
  static const BlasApi api = load_blas();
  return api;
}

void check_blas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuBLAS: ") + what + " failed: " + blas_api().status_string(status));
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
  const BlasApi& api = blas_api();
  cublasHandle_t h = nullptr;
  check_blas(api.create(&h), "cublasCreate");
  handle_ = h;
  check_blas(api.set_stream(h, stream), "cublasSetStream");
  check_blas(api.set_workspace(h, workspace, workspace_bytes), "cublasSetWorkspace");
  check_blas(api.set_math_mode(h, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
}

Blas::~Blas() {
  if (handle_) blas_api().destroy(handle_);
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

void gemm_f16(const Blas& blas, const DeviceWeight& w, const float* x, int64_t n_tokens, float* y, void* scratch,
              bool x_in_scratch) {
  const float one = 1.0f, zero = 0.0f;
  if (w.type == Type::F32) {  // f32 weights (small test models): plain f32 GEMM, no rounding
    check_blas(blas_api().gemm_ex(blas.handle(), CUBLAS_OP_T, CUBLAS_OP_N, int(w.n_out), int(n_tokens), int(w.n_in), &one,
                            w.data, CUDA_R_32F, int(w.n_in), x, CUDA_R_32F, int(w.n_in), &zero, y, CUDA_R_32F,
                            int(w.n_out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx (f32)");
    return;
  }
  const int64_t prows = panel_rows(w.n_in, w.n_out);
  auto* xb = static_cast<__half*>(scratch);  // first, where the next product of the same x finds it
  auto* wb = reinterpret_cast<__half*>(static_cast<uint8_t*>(scratch) +
                                       (static_cast<size_t>(n_tokens * w.n_in) * 2 + 255) / 256 * 256);
  if (!x_in_scratch) f32_to_f16(x, n_tokens * w.n_in, xb, blas.stream());
  const size_t rb = quant::row_bytes(w.type, static_cast<uint64_t>(w.n_in));
  for (int64_t r0 = 0; r0 < w.n_out; r0 += prows) {
    const int64_t m = std::min(prows, w.n_out - r0);
    DeviceWeight panel{w.type, static_cast<const uint8_t*>(w.data) + r0 * rb, w.n_in, m};
    launch_dequant(panel, nullptr, m, wb, blas.stream());
    // Column-major view: Y (n_out x n_tok, ld n_out) = W^T (W is n_in x n_out col-major) * X (n_in x n_tok).
    check_blas(blas_api().gemm_ex(blas.handle(), CUBLAS_OP_T, CUBLAS_OP_N, int(m), int(n_tokens), int(w.n_in), &one, wb,
                            CUDA_R_16F, int(w.n_in), xb, CUDA_R_16F, int(w.n_in), &zero, y + r0, CUDA_R_32F,
                            int(w.n_out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx");
  }
}

void matmul(const Blas& blas, const DeviceWeight& w, const float* x, int64_t n_tokens, float* y, void* scratch,
            bool x_in_scratch) {
  if (n_tokens <= kGemvMaxTokens) return gemv(w, x, n_tokens, y, blas.stream());
  gemm_f16(blas, w, x, n_tokens, y, scratch, x_in_scratch);
}

void dequant_rows_f32(const DeviceWeight& w, const int32_t* rows, int64_t n_rows, float* out, cudaStream_t stream) {
  launch_dequant(w, rows, n_rows, out, stream);
}

void dequant_rows_f16(const DeviceWeight& w, const int32_t* rows, int64_t n_rows, void* out, cudaStream_t stream) {
  launch_dequant(w, rows, n_rows, static_cast<__half*>(out), stream);
}

void f32_to_f16(const float* x, int64_t n, void* out, cudaStream_t stream) {
  launch(f32_to_f16_kernel, blocks_for(n, 256), 256, 0, stream, x, n, static_cast<__half*>(out));
}

}  // namespace keel::cuda
