// The per-head gated delta rule kernels, written once and compiled twice: by gated_delta.cpp
// (the generic twin, baseline ISA) and by gated_delta_avx2.cpp (-mavx2 -mfma). Everything here
// has internal linkage, so the two compilations never merge; the code calls no inline std::
// templates or overloads either (an unoptimised build could otherwise link the generic twin to an
// AVX2 copy of one). Include only from those two files.
//
// The chunked form follows docs/specs/qwen35.md §2.4 with the small products written as
// register-blocked row-major GEMMs; (I + A)⁻¹ is built explicitly by forward substitution so the
// W and U products are GEMMs too.
#pragma once
#include <math.h>
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

#include <cstdint>

#include "backend/cpu/gated_delta.h"

// The `omp simd` hints below are for GCC; clang reports each loop it does not vectorize as a
// warning (-Wpass-failed), which says nothing about the code's correctness.
#ifdef __clang__
#pragma clang diagnostic ignored "-Wpass-failed"
#endif

namespace keel::cpu {
namespace {

inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

// Strong decay makes e^{γ_r−γ_s}, e^γ and their products underflow; as subnormals every
// operation on them takes a slow microcode path (10× slower chunks were measured). Within a
// kernel call they are flushed to zero (FTZ + DAZ in this thread's MXCSR, restored on exit):
// they are below 1e-38 next to O(1) terms, far under fp32 rounding. On AArch64 FPCR.FZ flushes
// both inputs and results.
class FlushSubnormals {
 public:
#if defined(__x86_64__)
  FlushSubnormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFtz | kDaz); }
  ~FlushSubnormals() { _mm_setcsr(saved_); }
#elif defined(__aarch64__)
  FlushSubnormals() : saved_(get_fpcr()) { set_fpcr(saved_ | kFz); }
  ~FlushSubnormals() { set_fpcr(saved_); }
#else
  FlushSubnormals() = default;
#endif
  FlushSubnormals(const FlushSubnormals&) = delete;
  FlushSubnormals& operator=(const FlushSubnormals&) = delete;

 private:
#if defined(__x86_64__)
  static constexpr unsigned kFtz = 0x8000, kDaz = 0x0040;
  unsigned saved_;
#elif defined(__aarch64__)
  static constexpr uint64_t kFz = uint64_t{1} << 24;
  static uint64_t get_fpcr() {
    uint64_t v;
    asm volatile("mrs %0, fpcr" : "=r"(v));
    return v;
  }
  static void set_fpcr(uint64_t v) { asm volatile("msr fpcr, %0" : : "r"(v)); }
  uint64_t saved_;
#endif
};

constexpr int kTileM = 4;   // rows of the GEMM register tile
constexpr int kTileN = 16;  // columns (two AVX2 vectors)

// One tile of C = (accumulate ? C : 0) + alpha · A[m × K] · B[K × n], m <= kTileM, n <= kTileN.
template <int M, int N>
inline void gemm_tile(int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                      float alpha, bool accumulate) {
  float c[M][N] = {};
  for (int64_t k = 0; k < K; ++k) {
    const float* b = B + k * ldb;
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      const float a = A[i * lda + k];
#pragma omp simd
      for (int j = 0; j < N; ++j) c[i][j] += a * b[j];
    }
  }
  for (int i = 0; i < M; ++i) {
    float* out = C + i * ldc;
    if (accumulate) {
#pragma omp simd
      for (int j = 0; j < N; ++j) out[j] += alpha * c[i][j];
    } else {
#pragma omp simd
      for (int j = 0; j < N; ++j) out[j] = alpha * c[i][j];
    }
  }
}

// The edge tiles (m < kTileM or n < kTileN), sizes known at run time only.
inline void gemm_edge(int64_t m, int64_t n, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                      float* C, int64_t ldc, float alpha, bool accumulate) {
  for (int64_t i = 0; i < m; ++i) {
    float c[kTileN] = {};
    for (int64_t k = 0; k < K; ++k) {
      const float a = A[i * lda + k];
      const float* b = B + k * ldb;
      for (int64_t j = 0; j < n; ++j) c[j] += a * b[j];
    }
    float* out = C + i * ldc;
    for (int64_t j = 0; j < n; ++j) out[j] = (accumulate ? out[j] : 0.0f) + alpha * c[j];
  }
}

// C[M × N] = (accumulate ? C : 0) + alpha · A[M × K] · B[K × N], all row-major with leading
// dimensions. lower: A is lower-triangular (its entries above the diagonal are zero), so the
// row block starting at i0 stops at k = i0 + kTileM.
inline void mini_gemm(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                      int64_t ldb, float* C, int64_t ldc, bool accumulate, bool lower) {
  for (int64_t i0 = 0; i0 < M; i0 += kTileM) {
    const int64_t m = min_i64(kTileM, M - i0);
    const int64_t k_end = lower ? min_i64(K, i0 + kTileM) : K;
    const float* a = A + i0 * lda;
    float* c = C + i0 * ldc;
    for (int64_t j0 = 0; j0 < N; j0 += kTileN) {
      const int64_t n = min_i64(kTileN, N - j0);
      if (m == kTileM && n == kTileN)
        gemm_tile<kTileM, kTileN>(k_end, a, lda, B + j0, ldb, c + j0, ldc, alpha, accumulate);
      else
        gemm_edge(m, n, k_end, a, lda, B + j0, ldb, c + j0, ldc, alpha, accumulate);
    }
  }
}

// One thread's chunk workspace (floats; the γ cumsum in doubles at the end).
struct ChunkWork {
  float* q;       // [C, d_k]  queries, later scaled by e^γ
  float* k;       // [C, d_k]  keys
  float* kt;      // [d_k, C]  keys transposed, later scaled by e^{γ_last − γ}
  float* kb;      // [C, d_k]  diag(β e^γ) K
  float* w;       // [C, d_k]  W = T · kb
  float* vb;      // [C, d_v]  diag(β) V
  float* u;       // [C, d_v]  U = T · vb, then V_new = U − W S
  float* a;       // [C, C]    β_r (k_r·k_s) e^{γ_r−γ_s}, strictly lower
  float* p;       // [C, C]    (q_r·k_s) e^{γ_r−γ_s}, lower incl. diagonal
  float* t;       // [C, C]    T = (I + A)⁻¹, unit lower-triangular
  float* beta;    // [C]
  float* eg;      // [C]       e^{γ_r}
  float* inv_eg;  // [C]       e^{−γ_r}
  float* to_end;  // [C]       e^{γ_last − γ_r}
  double* gamma;  // [C]       γ_r = Σ_{s<=r} g_s
};

inline size_t chunk_work_floats(int64_t d_k, int64_t d_v, int64_t c) {
  return static_cast<size_t>(c * (5 * d_k + 2 * d_v) + 3 * c * c + 4 * c + 2 * c + 16);
}

inline ChunkWork carve_chunk_work(float* base, int64_t d_k, int64_t d_v, int64_t c) {
  ChunkWork w{};
  w.q = base;
  w.k = w.q + c * d_k;
  w.kt = w.k + c * d_k;
  w.kb = w.kt + c * d_k;
  w.w = w.kb + c * d_k;
  w.vb = w.w + c * d_k;
  w.u = w.vb + c * d_v;
  w.a = w.u + c * d_v;
  w.p = w.a + c * c;
  w.t = w.p + c * c;
  w.beta = w.t + c * c;
  w.eg = w.beta + c;
  w.inv_eg = w.eg + c;
  w.to_end = w.inv_eg + c;
  uintptr_t addr = reinterpret_cast<uintptr_t>(w.to_end + c);
  w.gamma = reinterpret_cast<double*>((addr + 7) & ~uintptr_t{7});
  return w;
}

// v-head h over all tokens, one token at a time (decode), reading S twice and writing it once:
//   kS = Sᵀk, qS = Sᵀq;  δ = β (v − e^g kS);  o = e^g qS + (q·k) δ;  S ← e^g S + k δᵀ
// (o = S_newᵀ q expanded). ws: [2 * d_v] scratch.
inline void recurrent_head(const GatedDeltaArgs& a, int64_t h, float* ws) {
  const FlushSubnormals flush;
  const int64_t dk = a.d_k, dv = a.d_v, kh = h % a.n_k_heads;
  float* S = a.state + h * dk * dv;
  float *ks = ws, *qs = ws + dv;
  for (int64_t t = 0; t < a.n_tokens; ++t) {
    const float* q = a.q + t * a.qk_stride + kh * dk;
    const float* k = a.k + t * a.qk_stride + kh * dk;
    const float* v = a.v + t * a.v_stride + h * dv;
    float* o = a.out + (t * a.n_v_heads + h) * dv;
    const float decay = ::expf(a.g[t * a.n_v_heads + h]);
    const float beta = a.beta[t * a.n_v_heads + h];
    for (int64_t j = 0; j < dv; ++j) ks[j] = qs[j] = 0.0f;
    float qk = 0.0f;
    for (int64_t i = 0; i < dk; ++i) {
      const float* row = S + i * dv;
      const float ki = k[i], qi = q[i];
      qk += qi * ki;
#pragma omp simd
      for (int64_t j = 0; j < dv; ++j) {
        ks[j] += ki * row[j];
        qs[j] += qi * row[j];
      }
    }
#pragma omp simd
    for (int64_t j = 0; j < dv; ++j) {
      const float delta = beta * (v[j] - decay * ks[j]);
      ks[j] = delta;
      o[j] = decay * qs[j] + qk * delta;
    }
    for (int64_t i = 0; i < dk; ++i) {
      float* row = S + i * dv;
      const float ki = k[i];
#pragma omp simd
      for (int64_t j = 0; j < dv; ++j) row[j] = decay * row[j] + ki * ks[j];
    }
  }
}

// v-head h over all tokens, chunk by chunk. A last chunk shorter than C is used as is:
// zero-padding it would change none of its rows nor the final state.
inline void chunked_head(const GatedDeltaArgs& a, int64_t h, int64_t C, const ChunkWork& ws) {
  const FlushSubnormals flush;
  const int64_t dk = a.d_k, dv = a.d_v, kh = h % a.n_k_heads, nv = a.n_v_heads;
  float* S = a.state + h * dk * dv;
  for (int64_t c0 = 0; c0 < a.n_tokens; c0 += C) {
    const int64_t L = min_i64(C, a.n_tokens - c0);
    // Gather; γ in double so that differences of long sums keep their precision.
    double gamma = 0.0;
    for (int64_t r = 0; r < L; ++r) {
      const int64_t t = c0 + r;
      const float* q = a.q + t * a.qk_stride + kh * dk;
      const float* k = a.k + t * a.qk_stride + kh * dk;
      const float* v = a.v + t * a.v_stride + h * dv;
      gamma += a.g[t * nv + h];
      ws.gamma[r] = gamma;
      const float beta = a.beta[t * nv + h], eg = static_cast<float>(::exp(gamma));
      ws.beta[r] = beta;
      ws.eg[r] = eg;
      float *qr = ws.q + r * dk, *kr = ws.k + r * dk, *kbr = ws.kb + r * dk, *vbr = ws.vb + r * dv;
      const float bk = beta * eg;
#pragma omp simd
      for (int64_t i = 0; i < dk; ++i) {
        qr[i] = q[i];
        kr[i] = k[i];
        kbr[i] = bk * k[i];
      }
#pragma omp simd
      for (int64_t j = 0; j < dv; ++j) vbr[j] = beta * v[j];
    }
    for (int64_t i = 0; i < dk; ++i)
      for (int64_t r = 0; r < L; ++r) ws.kt[i * L + r] = ws.k[r * dk + i];
    // A ← K Kᵀ and P ← Q Kᵀ, then decay, β and the causal masks (upper parts zeroed).
    mini_gemm(L, L, dk, 1.0f, ws.k, dk, ws.kt, L, ws.a, L, false, false);
    mini_gemm(L, L, dk, 1.0f, ws.q, dk, ws.kt, L, ws.p, L, false, false);
    // e^{γ_r−γ_s} = e^{γ_r} / e^{γ_s} while e^{γ} stays far from underflow (γ is non-increasing,
    // so γ_last is the smallest); otherwise one exp per pair.
    const bool ratio = ws.gamma[L - 1] > -60.0;
    for (int64_t s = 0; s < L && ratio; ++s) ws.inv_eg[s] = 1.0f / ws.eg[s];
    for (int64_t r = 0; r < L; ++r) {
      float *arow = ws.a + r * L, *prow = ws.p + r * L;
      const float br = ws.beta[r], egr = ws.eg[r];
      if (ratio) {
#pragma omp simd
        for (int64_t s = 0; s < r; ++s) {  // the diagonal's decay is exactly 1
          const float decay = egr * ws.inv_eg[s];
          prow[s] *= decay;
          arow[s] *= br * decay;
        }
      } else {
        for (int64_t s = 0; s < r; ++s) {  // the diagonal's decay is exactly 1
          const float decay = static_cast<float>(::exp(ws.gamma[r] - ws.gamma[s]));
          prow[s] *= decay;
          arow[s] *= br * decay;
        }
      }
      arow[r] = 0.0f;
      for (int64_t s = r + 1; s < L; ++s) arow[s] = prow[s] = 0.0f;
    }
    for (int64_t r = 0; r < L; ++r) ws.to_end[r] = static_cast<float>(::exp(ws.gamma[L - 1] - ws.gamma[r]));

    // T = (I + A)⁻¹ by forward substitution: T_r = e_r − Σ_{s<r} A_rs T_s.
    for (int64_t r = 0; r < L; ++r) {
      float* tr = ws.t + r * L;
      const float* arow = ws.a + r * L;
      for (int64_t c = 0; c < L; ++c) tr[c] = c == r ? 1.0f : 0.0f;
      for (int64_t s = 0; s < r; ++s) {
        const float f = -arow[s];
        const float* ts = ws.t + s * L;
#pragma omp simd
        for (int64_t c = 0; c <= s; ++c) tr[c] += f * ts[c];
      }
    }

    // U = T diag(β) V, W = T diag(β e^γ) K, then V_new = U − W S.
    mini_gemm(L, dv, L, 1.0f, ws.t, L, ws.vb, dv, ws.u, dv, false, true);
    mini_gemm(L, dk, L, 1.0f, ws.t, L, ws.kb, dk, ws.w, dk, false, true);
    mini_gemm(L, dv, dk, -1.0f, ws.w, dk, S, dv, ws.u, dv, true, false);

    // O = diag(e^γ) Q S + P V_new, straight into the output rows.
    for (int64_t r = 0; r < L; ++r) {
      float* qr = ws.q + r * dk;
      const float eg = ws.eg[r];
#pragma omp simd
      for (int64_t i = 0; i < dk; ++i) qr[i] *= eg;
    }
    float* out = a.out + (c0 * nv + h) * dv;
    mini_gemm(L, dv, dk, 1.0f, ws.q, dk, S, dv, out, nv * dv, false, false);
    mini_gemm(L, dv, L, 1.0f, ws.p, L, ws.u, dv, out, nv * dv, true, true);

    // S ← e^{γ_last} S + (diag(e^{γ_last−γ}) K)ᵀ V_new.
    for (int64_t i = 0; i < dk; ++i) {
      float* kti = ws.kt + i * L;
      for (int64_t r = 0; r < L; ++r) kti[r] *= ws.to_end[r];
    }
    const float eg_last = ws.eg[L - 1];
    for (int64_t i = 0; i < dk * dv; ++i) S[i] *= eg_last;
    mini_gemm(dk, dv, L, 1.0f, ws.kt, L, ws.u, dv, S, dv, true, false);
  }
}

}  // namespace
}  // namespace keel::cpu
