// Matrix multiply of a GGUF weight on the device by f32 activations (raw launchers).
//
//   y[t * n_out + r] = sum_k W[r][k] * x[t * n_in + k]      x: [n_tokens, n_in] f32, y: [n_tokens, n_out] f32
//
// Two paths, chosen by the token count:
//   - GEMV (n_tokens <= kGemvMaxTokens, decode): one warp per weight row reads every weight byte
//     once, dequantizes in registers and accumulates f32 FMAs against f32 activations for up to
//     8 tokens at once. Error: f32 summation only.
//   - GEMM (prefill): a panel of weight rows is dequantized into a planned f16 scratch, the
//     activations are rounded to f16, and cuBLAS multiplies on the tensor cores with f32
//     accumulation and f32 output. Error: the f16 rounding of W and x (2^-11 relative each).
//     bf16 (2^-9) measured 0.084 / 0.117 max |d log-softmax| on the qwen3 / qwen2 fixtures
//     against their 2e-2 bound (f16: see tests/cuda/test_cuda_models.cpp); f16's price is its
//     range: activations or weights beyond 65504 would overflow (none in the models tested).
//     F32 weights (small test models) take a plain f32 cuBLAS GEMM instead (no rounding).
// Weights are uploaded as-is (types F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q5_K, Q6_K); a row is
// quant::row_bytes(type, n_in) bytes, rows are contiguous.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "quant/types.h"

struct cublasContext;  // cuBLAS's handle type, kept out of this header

namespace keel::cuda {

struct DeviceWeight {
  quant::Type type;
  const void* data;  // device: [n_out rows] of row_bytes(type, n_in)
  int64_t n_in;      // ne[0]: elements per row (multiple of the block size)
  int64_t n_out;     // ne[1]: rows
};

constexpr int64_t kGemvMaxTokens = 8;
// Largest f16 weight panel the GEMM path dequantizes at once (bytes of scratch).
constexpr size_t kGemmPanelBytes = size_t{128} << 20;
// cuBLAS workspace every Blas needs (planned; cuBLAS then allocates nothing per call).
constexpr size_t kBlasWorkspaceBytes = size_t{32} << 20;

// True for the weight types the device kernels read.
bool device_matmul_supports(quant::Type type);

// A cuBLAS handle bound to a stream and to a planned workspace (RAII). Creating it allocates
// cuBLAS's own small state: do it at session start.
class Blas {
 public:
  Blas(void* workspace, size_t workspace_bytes, cudaStream_t stream);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  cublasContext* handle() const { return handle_; }
  cudaStream_t stream() const { return stream_; }

 private:
  cublasContext* handle_ = nullptr;
  cudaStream_t stream_;
};

// Device scratch `matmul` needs for up to max_tokens tokens (0 when they all take the GEMV path).
size_t matmul_scratch_bytes(quant::Type type, int64_t n_in, int64_t n_out, int64_t max_tokens);

// y = W x as above, on blas.stream(). scratch: matmul_scratch_bytes(...) device bytes, 256-aligned.
// The GEMM path first writes x's f16 copy at the start of scratch, where it stays until the next
// call: x_in_scratch (the same x and token count as the GEMM just before, which was not of F32
// weights, and x unchanged since) skips the conversion (Q, K and V of one input; gate and up).
void matmul(const Blas& blas, const DeviceWeight& w, const float* x, int64_t n_tokens, float* y, void* scratch,
            bool x_in_scratch = false);
// Whether the GEMM path leaves x's f16 copy in the scratch (every type but F32).
inline bool gemm_keeps_x_f16(const DeviceWeight& w) { return w.type != quant::Type::F32; }

// The two paths, exposed for tests and benchmarks.
void gemv(const DeviceWeight& w, const float* x, int64_t n_tokens, float* y, cudaStream_t stream);
void gemm_f16(const Blas& blas, const DeviceWeight& w, const float* x, int64_t n_tokens, float* y, void* scratch,
              bool x_in_scratch = false);

// out[i, :] = dequantized row rows[i] of W (rows == nullptr: row i), for i < n_rows.
// out: [n_rows, n_in] f32 (bit-identical with quant::dequantize_row) or f16 (that, rounded to
// nearest even). rows: device int32 (embedding lookups; callers validate the ids).
void dequant_rows_f32(const DeviceWeight& w, const int32_t* rows, int64_t n_rows, float* out, cudaStream_t stream);
void dequant_rows_f16(const DeviceWeight& w, const int32_t* rows, int64_t n_rows, void* out, cudaStream_t stream);

// out[i] = f16(x[i]) (round to nearest even)
void f32_to_f16(const float* x, int64_t n, void* out, cudaStream_t stream);

}  // namespace keel::cuda
