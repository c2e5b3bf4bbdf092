// Element-wise and row-wise device operations of the transformer forward pass (f32, raw
// launchers). Each matches its CPU twin in backend/cpu/ops.cpp: rms_norm sums squares in double
// as the CPU does; rope computes its angles in double and rotates with unfused f32 multiplies,
// as the CPU does; silu_mul and sigmoid_gate use the accurate expf.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "backend/cuda/attention.cuh"
#include "backend/cuda/qk_heads.cuh"

namespace keel::cuda {

// out[r] = x[r] * w / sqrt(mean(x[r]^2) + eps)   x, out: [n_rows, dim] (out may alias x); w: [dim].
// f16 (optional, 8-byte aligned): out rounded to f16 there too, as f32_to_f16 would (the input
// of the prefill GEMM the op feeds; the same for add_rms_norm, silu_mul and gated_rms_norm).
void rms_norm(const float* x, const float* w, float* out, int64_t n_rows, int64_t dim, float eps, cudaStream_t stream,
              void* f16 = nullptr);
// The same, also writing out's 8-bit activations into act (gemv_q8.cuh's layout for n_rows rows
// of dim inputs, the same bits quantize_act_q8 gives): the norm feeding a matmul quantizes once.
void rms_norm_q8(const float* x, const float* w, float* out, int64_t n_rows, int64_t dim, float eps, void* act,
                 cudaStream_t stream);

// y += x, then out = rms_norm(y) (the residual add and the next norm in one pass, the same bits as
// add_inplace then rms_norm); with act non-null, out's 8-bit activations too (as rms_norm_q8).
void add_rms_norm(float* y, const float* x, const float* w, float* out, int64_t n_rows, int64_t dim, float eps, void* act,
                  cudaStream_t stream, void* f16 = nullptr);

// The same for chosen rows: out[i] = rms_norm(x[rows[i]])   rows: device int32 [n_rows]; out: [n_rows, dim]
void rms_norm_rows(const float* x, const int32_t* rows, const float* w, float* out, int64_t n_rows, int64_t dim,
                   float eps, cudaStream_t stream);

// In place on x: [n_tokens, n_heads, head_dim]; token t at position pos[t] (device int32).
void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const int32_t* pos, const RopeArgs& args,
          cudaStream_t stream);

// In place on q [n_tokens, n_q, head_dim] and k [n_tokens, n_k, head_dim]: each head's RMSNorm
// (weights q_norm / k_norm; none when q_norm is null), then RoPE: rms_norm then rope on each.
// Fits head sizes of a multiple of 64 (norm_rope_qk_fits).
bool norm_rope_qk_fits(int64_t head_dim, int n_rot);
void norm_rope_qk(float* q, int64_t n_q, float* k, int64_t n_k, int64_t n_tokens, int64_t head_dim, const float* q_norm,
                  const float* k_norm, float eps, const int32_t* pos, const RopeArgs& args, cudaStream_t stream);
// The same for the batch's tokens (positions batch.pos), then kv_write of the results and of v
// [n_tokens, n_k, head_dim] into the pool at `base`, in one kernel: the same bytes as the two.
void norm_rope_kv_write(float* q, int64_t n_q, float* k, const float* v, int64_t n_k, int64_t head_dim,
                        const float* q_norm, const float* k_norm, float eps, const RopeArgs& args, const KvLayout& kv,
                        void* base, const AttentionBatch& batch, cudaStream_t stream, const float* q_src = nullptr,
                        int64_t q_src_stride = 0);

// gate[i] = silu(gate[i]) * up[i]
void silu_mul(float* gate, const float* up, int64_t n, cudaStream_t stream, void* f16 = nullptr);
// The same over n_rows rows of dim, also writing gate's 8-bit activations into act (as rms_norm_q8).
void silu_mul_q8(float* gate, const float* up, int64_t n_rows, int64_t dim, void* act, cudaStream_t stream);
// y[i] += x[i]
void add_inplace(float* y, const float* x, int64_t n, cudaStream_t stream);
// x[r, :] += bias   x: [n_rows, dim]
void add_bias(float* x, const float* bias, int64_t n_rows, int64_t dim, cudaStream_t stream);
// x[r * x_stride + i] /= 1 + exp(-gate[r * gate_stride + i])  for i < width (sigmoid output gate);
// f16 (optional): the results as packed rows of width (rms_norm's f16); act (optional, width a
// multiple of 32): their 8-bit activations, as quantize_act_q8 gives them for the packed rows
// read as any [tokens, n_in] of the same size (silu_mul_q8's)
void sigmoid_gate(float* x, int64_t x_stride, const float* gate, int64_t gate_stride, int64_t n_rows, int64_t width,
                  cudaStream_t stream, void* f16 = nullptr, void* act = nullptr);

}  // namespace keel::cuda
