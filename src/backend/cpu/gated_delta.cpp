#include "backend/cpu/gated_delta.h"

#include <algorithm>
#include <cmath>

#include "keel/error.h"

namespace keel::cpu {
namespace {

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// y += alpha * x
inline void axpy(float* y, float alpha, const float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

constexpr int64_t kConvBlock = 64;  // channels per conv task (weights transposed on the stack)

// One thread's share of the chunked workspace, in floats (plus the γ cumsum in doubles).
struct ChunkWorkspace {
  float* q;        // [C, d_k] gathered queries
  float* k;        // [C, d_k] gathered keys
  float* w;        // [C, d_k] W = Tm · diag(β e^γ) K
  float* u;        // [C, d_v] U = Tm · diag(β) V, then V_new = U − W S
  float* a;        // [C, C]   A (strictly lower), row-major
  float* p;        // [C, C]   P (lower incl. diagonal)
  float* beta;     // [C]
  float* eg;       // [C]      e^{γ_r}
  float* to_end;   // [C]      e^{γ_last − γ_r}
  double* gamma;   // [C]      in-chunk cumulative log-decay
};

size_t chunk_floats(int64_t d_k, int64_t d_v, int64_t c) {
  // + 2c floats' worth for the doubles, + 16 for alignment slack
  return static_cast<size_t>(c * (3 * d_k + d_v) + 2 * c * c + 3 * c + 2 * c + 16);
}

ChunkWorkspace carve_chunk(float* base, int64_t d_k, int64_t d_v, int64_t c) {
  ChunkWorkspace w{};
  w.q = base;
  w.k = w.q + c * d_k;
  w.w = w.k + c * d_k;
  w.u = w.w + c * d_k;
  w.a = w.u + c * d_v;
  w.p = w.a + c * c;
  w.beta = w.p + c * c;
  w.eg = w.beta + c;
  w.to_end = w.eg + c;
  float* tail = w.to_end + c;
  // align the doubles to 8 bytes
  uintptr_t addr = reinterpret_cast<uintptr_t>(tail);
  addr = (addr + 7) & ~uintptr_t{7};
  w.gamma = reinterpret_cast<double*>(addr);
  return w;
}

void check_args(const GatedDeltaArgs& a) {
  if (a.n_k_heads <= 0 || a.n_v_heads <= 0 || a.n_v_heads % a.n_k_heads != 0 || a.d_k <= 0 || a.d_v <= 0)
    throw Error("internal: gated delta rule with " + std::to_string(a.n_v_heads) + " value heads over " +
                std::to_string(a.n_k_heads) + " key heads");
}

// One v-head over all tokens, token by token.
void recurrent_head(const GatedDeltaArgs& a, int64_t h, float* delta) {
  const int64_t dk = a.d_k, dv = a.d_v, kh = h % a.n_k_heads;
  float* S = a.state + h * dk * dv;
  for (int64_t t = 0; t < a.n_tokens; ++t) {
    const float* q = a.q + t * a.qk_stride + kh * dk;
    const float* k = a.k + t * a.qk_stride + kh * dk;
    const float* v = a.v + t * a.v_stride + h * dv;
    float* o = a.out + (t * a.n_v_heads + h) * dv;
    const float decay = std::exp(a.g[t * a.n_v_heads + h]);
    const float beta = a.beta[t * a.n_v_heads + h];
    std::fill(delta, delta + dv, 0.0f);
    for (int64_t i = 0; i < dk; ++i) {  // S ← e^g S; r = Sᵀk (into delta)
      float* row = S + i * dv;
#pragma omp simd
      for (int64_t j = 0; j < dv; ++j) {
        row[j] *= decay;
        delta[j] += k[i] * row[j];
      }
    }
#pragma omp simd
    for (int64_t j = 0; j < dv; ++j) delta[j] = beta * (v[j] - delta[j]);
    std::fill(o, o + dv, 0.0f);
    for (int64_t i = 0; i < dk; ++i) {  // S += k δᵀ; o = Sᵀq
      float* row = S + i * dv;
#pragma omp simd
      for (int64_t j = 0; j < dv; ++j) {
        row[j] += k[i] * delta[j];
        o[j] += q[i] * row[j];
      }
    }
  }
}

// One v-head over all tokens, chunk by chunk (docs/specs/qwen35.md §2.4). A last chunk shorter
// than C is handled as is: zero-padding would not change any of its rows or the final state.
void chunked_head(const GatedDeltaArgs& a, int64_t h, int64_t C, const ChunkWorkspace& ws) {
  const int64_t dk = a.d_k, dv = a.d_v, kh = h % a.n_k_heads, nv = a.n_v_heads;
  float* S = a.state + h * dk * dv;
  for (int64_t c0 = 0; c0 < a.n_tokens; c0 += C) {
    const int64_t L = std::min(C, a.n_tokens - c0);
    // Gather the chunk; γ_r = Σ_{s<=r} g_s (double: differences of long sums stay exact enough).
    double gamma = 0.0;
    for (int64_t r = 0; r < L; ++r) {
      const int64_t t = c0 + r;
      std::copy_n(a.q + t * a.qk_stride + kh * dk, dk, ws.q + r * dk);
      std::copy_n(a.k + t * a.qk_stride + kh * dk, dk, ws.k + r * dk);
      gamma += a.g[t * nv + h];
      ws.gamma[r] = gamma;
      ws.beta[r] = a.beta[t * nv + h];
      ws.eg[r] = static_cast<float>(std::exp(gamma));
    }
    for (int64_t r = 0; r < L; ++r) ws.to_end[r] = static_cast<float>(std::exp(ws.gamma[L - 1] - ws.gamma[r]));

    // A_rs = β_r (k_r·k_s) e^{γ_r−γ_s} (s < r); P_rs = (q_r·k_s) e^{γ_r−γ_s} (s <= r).
    for (int64_t r = 0; r < L; ++r) {
      const float* kr = ws.k + r * dk;
      const float* qr = ws.q + r * dk;
      float* arow = ws.a + r * C;
      float* prow = ws.p + r * C;
      for (int64_t s = 0; s <= r; ++s) {
        const float decay = static_cast<float>(std::exp(ws.gamma[r] - ws.gamma[s]));
        const float* ks = ws.k + s * dk;
        prow[s] = dot(qr, ks, dk) * decay;
        if (s < r) arow[s] = ws.beta[r] * dot(kr, ks, dk) * decay;
      }
    }

    // (I + A) U = diag(β) V and (I + A) W = diag(β e^γ) K by forward substitution.
    for (int64_t r = 0; r < L; ++r) {
      const float* v = a.v + (c0 + r) * a.v_stride + h * dv;
      float* ur = ws.u + r * dv;
      float* wr = ws.w + r * dk;
      const float* kr = ws.k + r * dk;
      const float bu = ws.beta[r], bw = ws.beta[r] * ws.eg[r];
#pragma omp simd
      for (int64_t j = 0; j < dv; ++j) ur[j] = bu * v[j];
#pragma omp simd
      for (int64_t i = 0; i < dk; ++i) wr[i] = bw * kr[i];
      const float* arow = ws.a + r * C;
      for (int64_t s = 0; s < r; ++s) {
        axpy(ur, -arow[s], ws.u + s * dv, dv);
        axpy(wr, -arow[s], ws.w + s * dk, dk);
      }
    }

    // V_new = U − W S  (in place in U).
    for (int64_t r = 0; r < L; ++r) {
      float* ur = ws.u + r * dv;
      const float* wr = ws.w + r * dk;
      for (int64_t i = 0; i < dk; ++i) axpy(ur, -wr[i], S + i * dv, dv);
    }

    // O = diag(e^γ) Q S + P V_new.
    for (int64_t r = 0; r < L; ++r) {
      float* o = a.out + ((c0 + r) * nv + h) * dv;
      std::fill(o, o + dv, 0.0f);
      const float* qr = ws.q + r * dk;
      for (int64_t i = 0; i < dk; ++i) axpy(o, qr[i], S + i * dv, dv);
#pragma omp simd
      for (int64_t j = 0; j < dv; ++j) o[j] *= ws.eg[r];
      const float* prow = ws.p + r * C;
      for (int64_t s = 0; s <= r; ++s) axpy(o, prow[s], ws.u + s * dv, dv);
    }

    // S ← e^{γ_last} S + (diag(e^{γ_last−γ}) K)ᵀ V_new.
    const float eg_last = ws.eg[L - 1];
    for (int64_t i = 0; i < dk; ++i) {
      float* row = S + i * dv;
#pragma omp simd
      for (int64_t j = 0; j < dv; ++j) row[j] *= eg_last;
      for (int64_t r = 0; r < L; ++r) axpy(row, ws.to_end[r] * ws.k[r * dk + i], ws.u + r * dv, dv);
    }
  }
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
      double sum = 0.0;
      for (int64_t i = 0; i < dim; ++i) sum += static_cast<double>(v[i]) * v[i];
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
    double sum = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum += static_cast<double>(x[i]) * x[i];
    const float scale = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(dim) + eps));
    for (int64_t i = 0; i < dim; ++i) x[i] = x[i] * scale * w[i] * silu(zr[i]);
  }
}

size_t gated_delta_workspace_bytes(int64_t d_k, int64_t d_v, int n_threads, int64_t chunk) {
  const size_t per_thread = std::max<size_t>(chunk_floats(d_k, d_v, chunk), static_cast<size_t>(d_v) + 16);
  return sizeof(float) * per_thread * static_cast<size_t>(std::max(1, n_threads));
}

void gated_delta_recurrent(const GatedDeltaArgs& a, float* workspace, ThreadPool& pool) {
  check_args(a);
  const size_t per_thread = static_cast<size_t>(a.d_v) + 16;
  pool.run([&](int ith, int nth) {
    float* delta = workspace + per_thread * static_cast<size_t>(ith);
    for (int64_t h = ith; h < a.n_v_heads; h += nth) recurrent_head(a, h, delta);
  });
}

void gated_delta_chunked(const GatedDeltaArgs& a, float* workspace, ThreadPool& pool, int64_t chunk) {
  check_args(a);
  if (chunk <= 0) throw Error("internal: gated delta chunk must be positive");
  const size_t per_thread = chunk_floats(a.d_k, a.d_v, chunk);
  pool.run([&](int ith, int nth) {
    const ChunkWorkspace ws = carve_chunk(workspace + per_thread * static_cast<size_t>(ith), a.d_k, a.d_v, chunk);
    for (int64_t h = ith; h < a.n_v_heads; h += nth) chunked_head(a, h, chunk, ws);
  });
}

}  // namespace keel::cpu
