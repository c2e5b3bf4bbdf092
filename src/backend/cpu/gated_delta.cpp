// The gated delta rule entry points and the small GDN ops; the generic twin of the head kernels
// is gated_delta_impl.h compiled here with the baseline instruction set.
#include "backend/cpu/gated_delta.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/gated_delta_impl.h"
#include "backend/cpu/ops.h"
#include "keel/error.h"

namespace keel::cpu {
namespace {

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

constexpr int64_t kConvBlock = 64;  // channels per conv task (weights transposed on the stack)

void check_args(const GatedDeltaArgs& a) {
  if (a.n_k_heads <= 0 || a.n_v_heads <= 0 || a.n_v_heads % a.n_k_heads != 0 || a.d_k <= 0 || a.d_v <= 0)
    throw Error("internal: gated delta rule with " + std::to_string(a.n_v_heads) + " value heads over " +
                std::to_string(a.n_k_heads) + " key heads");
}

size_t per_thread_floats(int64_t d_k, int64_t d_v, int64_t chunk) {
  return std::max<size_t>(chunk_work_floats(d_k, d_v, chunk), 2 * static_cast<size_t>(d_v) + 16);
}

void recurrent_generic(const GatedDeltaArgs& a, int64_t h, float* ws) { recurrent_head(a, h, ws); }
void chunked_generic(const GatedDeltaArgs& a, int64_t h, int64_t chunk, float* ws) {
  chunked_head(a, h, chunk, carve_chunk_work(ws, a.d_k, a.d_v, chunk));
}

}  // namespace

void causal_conv1d_silu(const float* x, int64_t n_tokens, int64_t channels, const float* w, int kernel,
                        float* state, float* out, ThreadPool& pool) {
  if (kernel < 1 || kernel > kMaxConvKernel)
    throw Error("internal: conv1d kernel " + std::to_string(kernel) + " is outside 1.." +
                std::to_string(kMaxConvKernel));
  const int64_t n_state = kernel - 1;
  const int64_t n_blocks = (channels + kConvBlock - 1) / kConvBlock;
  pool.parallel_for(n_blocks, 1, [&](int64_t b0, int64_t b1) {
    float wt[kMaxConvKernel][kConvBlock];  // [tap][channel] of this block
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t c0 = b * kConvBlock, nc = std::min(kConvBlock, channels - c0);
      for (int64_t c = 0; c < nc; ++c)
        for (int j = 0; j < kernel; ++j) wt[j][c] = w[(c0 + c) * kernel + j];
      // row i of the extended sequence e = [state ; x]
      auto row = [&](int64_t i) { return i < n_state ? state + i * channels + c0 : x + (i - n_state) * channels + c0; };
      for (int64_t t = 0; t < n_tokens; ++t) {
        float* o = out + t * channels + c0;
        std::fill(o, o + nc, 0.0f);
        for (int j = 0; j < kernel; ++j) {
          const float* e = row(t + j);
#pragma omp simd
          for (int64_t c = 0; c < nc; ++c) o[c] += wt[j][c] * e[c];
        }
        for (int64_t c = 0; c < nc; ++c) o[c] = silu(o[c]);
      }
      // New state: the last n_state rows of e. Row m reads e[n_tokens + m] >= m, so ascending
      // order never reads a state row it already overwrote.
      for (int64_t m = 0; m < n_state; ++m) std::copy_n(row(n_tokens + m), nc, state + m * channels + c0);
    }
  });
}

void l2_norm_heads(float* x, int64_t n_tokens, int64_t row_stride, int64_t n_heads, int64_t dim, float eps,
                   float scale) {
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = x + t * row_stride + h * dim;
      const double sum = sum_of_squares(v, dim);
      const float f = static_cast<float>(scale / std::sqrt(sum + eps));
      for (int64_t i = 0; i < dim; ++i) v[i] *= f;
    }
}

void gdn_gates(float* beta, float* alpha, const float* ssm_a, const float* dt_bias, int64_t n_tokens,
               int64_t n_heads) {
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t h = 0; h < n_heads; ++h) {
      const int64_t i = t * n_heads + h;
      beta[i] = sigmoid(beta[i]);
      const float x = alpha[i] + dt_bias[h];
      const float softplus = x > 20.0f ? x : std::log1p(std::exp(x));
      alpha[i] = ssm_a[h] * softplus;
    }
}

void gated_rms_norm(float* o, const float* z, const float* w, int64_t n_rows, int64_t dim, float eps) {
  for (int64_t r = 0; r < n_rows; ++r) {
    float* x = o + r * dim;
    const float* zr = z + r * dim;
    const double sum = sum_of_squares(x, dim);
    const float scale = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(dim) + eps));
    for (int64_t i = 0; i < dim; ++i) x[i] = x[i] * scale * w[i] * silu(zr[i]);
  }
}

size_t gated_delta_workspace_bytes(int64_t d_k, int64_t d_v, int n_threads, int64_t chunk) {
  return sizeof(float) * per_thread_floats(d_k, d_v, chunk) * static_cast<size_t>(std::max(1, n_threads));
}

GdnHeadKernels gdn_head_kernels_generic() { return {recurrent_generic, chunked_generic}; }

GdnHeadKernels gdn_head_kernels(Isa isa) {
#if defined(__x86_64__)
  if (is_x86_simd(isa)) return gdn_head_kernels_avx2();
#endif
  return gdn_head_kernels_generic();
}

void gated_delta_recurrent_with(Isa isa, const GatedDeltaArgs& a, float* workspace, ThreadPool& pool) {
  check_args(a);
  const auto kernel = gdn_head_kernels(isa).recurrent;
  const size_t stride = per_thread_floats(a.d_k, a.d_v, kGdnChunk);
  pool.run([&](int ith, int nth) {
    for (int64_t h = ith; h < a.n_v_heads; h += nth) kernel(a, h, workspace + stride * static_cast<size_t>(ith));
  });
}

void gated_delta_chunked_with(Isa isa, const GatedDeltaArgs& a, float* workspace, ThreadPool& pool, int64_t chunk) {
  check_args(a);
  if (chunk <= 0) throw Error("internal: gated delta chunk must be positive");
  const auto kernel = gdn_head_kernels(isa).chunked;
  const size_t stride = per_thread_floats(a.d_k, a.d_v, chunk);
  pool.run([&](int ith, int nth) {
    for (int64_t h = ith; h < a.n_v_heads; h += nth) kernel(a, h, chunk, workspace + stride * static_cast<size_t>(ith));
  });
}

void gated_delta_recurrent(const GatedDeltaArgs& a, float* workspace, ThreadPool& pool) {
  gated_delta_recurrent_with(best_isa(), a, workspace, pool);
}

void gated_delta_chunked(const GatedDeltaArgs& a, float* workspace, ThreadPool& pool, int64_t chunk) {
  gated_delta_chunked_with(best_isa(), a, workspace, pool, chunk);
}

}  // namespace keel::cpu
