// AVX-512F micro-kernel for the prefill GEMM (compiled with -mavx512f; reached only when
// best_isa() finds AVX-512F). Same packing and contract as micro_avx2: xp [kc][6] tokens,
// wp [kc][16] weights. One zmm holds a token's 16 outputs; even and odd k accumulate separately
// so 12 independent FMA chains keep both AVX-512 FMA ports busy.
#include <immintrin.h>

#include "backend/cpu/matmul.h"
#include "backend/cpu/simd_avx512.h"

namespace keel::cpu {
namespace {

void micro_avx512(int64_t kc, const float* xp, const float* wp, float* y, int64_t ldy, int n_tok, int n_rows,
                  bool accumulate) {
  static_assert(kTileTokens == 6 && kTileRows == 16, "the kernel is written for 6 x 16 tiles");
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
  __m512 b0 = a0, b1 = a0, b2 = a0, b3 = a0, b4 = a0, b5 = a0;
  int64_t k = 0;
  for (; k + 2 <= kc; k += 2, xp += 2 * kTileTokens, wp += 2 * kTileRows) {
    const __m512 w0 = _mm512_loadu_ps(wp), w1 = _mm512_loadu_ps(wp + kTileRows);
    a0 = _mm512_fmadd_ps(_mm512_set1_ps(xp[0]), w0, a0);
    a1 = _mm512_fmadd_ps(_mm512_set1_ps(xp[1]), w0, a1);
    a2 = _mm512_fmadd_ps(_mm512_set1_ps(xp[2]), w0, a2);
    a3 = _mm512_fmadd_ps(_mm512_set1_ps(xp[3]), w0, a3);
    a4 = _mm512_fmadd_ps(_mm512_set1_ps(xp[4]), w0, a4);
    a5 = _mm512_fmadd_ps(_mm512_set1_ps(xp[5]), w0, a5);
    b0 = _mm512_fmadd_ps(_mm512_set1_ps(xp[6]), w1, b0);
    b1 = _mm512_fmadd_ps(_mm512_set1_ps(xp[7]), w1, b1);
    b2 = _mm512_fmadd_ps(_mm512_set1_ps(xp[8]), w1, b2);
    b3 = _mm512_fmadd_ps(_mm512_set1_ps(xp[9]), w1, b3);
    b4 = _mm512_fmadd_ps(_mm512_set1_ps(xp[10]), w1, b4);
    b5 = _mm512_fmadd_ps(_mm512_set1_ps(xp[11]), w1, b5);
  }
  if (k < kc) {
    const __m512 w0 = _mm512_loadu_ps(wp);
    a0 = _mm512_fmadd_ps(_mm512_set1_ps(xp[0]), w0, a0);
    a1 = _mm512_fmadd_ps(_mm512_set1_ps(xp[1]), w0, a1);
    a2 = _mm512_fmadd_ps(_mm512_set1_ps(xp[2]), w0, a2);
    a3 = _mm512_fmadd_ps(_mm512_set1_ps(xp[3]), w0, a3);
    a4 = _mm512_fmadd_ps(_mm512_set1_ps(xp[4]), w0, a4);
    a5 = _mm512_fmadd_ps(_mm512_set1_ps(xp[5]), w0, a5);
  }
  store_lanes(y, _mm512_add_ps(a0, b0), n_rows, accumulate);
  if (n_tok > 1) store_lanes(y + ldy, _mm512_add_ps(a1, b1), n_rows, accumulate);
  if (n_tok > 2) store_lanes(y + 2 * ldy, _mm512_add_ps(a2, b2), n_rows, accumulate);
  if (n_tok > 3) store_lanes(y + 3 * ldy, _mm512_add_ps(a3, b3), n_rows, accumulate);
  if (n_tok > 4) store_lanes(y + 4 * ldy, _mm512_add_ps(a4, b4), n_rows, accumulate);
  if (n_tok > 5) store_lanes(y + 5 * ldy, _mm512_add_ps(a5, b5), n_rows, accumulate);
}

}  // namespace

GemmKernels gemm_kernels_avx512() { return {gemm_kernels_avx2().pack_panel, micro_avx512}; }

}  // namespace keel::cpu
