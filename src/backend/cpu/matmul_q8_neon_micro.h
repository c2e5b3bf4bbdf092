// The loops of the AArch64 8-bit GEMM micro-kernels, written once: matmul_q8_neon.cpp (SMULL +
// SADALP), matmul_q8_dotprod.cpp (SDOT) and matmul_q8_i8mm.cpp (SMMLA) each include this header
// under their own -march with a Dot policy for the integer dot product of one group, the only part
// that differs. Internal linkage throughout: each file keeps its own copy, compiled for its level
// (an inline function shared between them could be linked from the i8mm file into NEON-only code).
//
// Dot::group<kGroup>(p, half, g, a, rows): rows[t][q] = the int32 sums Σ_{k∈group g} xq[t][k]·wq[k][r]
// for the 4 rows r = 8·half + 4q + [0, 4) of the panel and token t < 4 (signed activations: no offset).
//
// Two halves of 8 rows against 4 tokens; per group the integer sums become floats once, times the
// rows' scales and the token's scale, less the min terms (matmul_q8.h).
#pragma once
#include "backend/cpu/matmul_q8.h"
#include "backend/cpu/simd_neon.h"

namespace keel::cpu {
namespace {

template <class Dot, int kGroup, bool kMin>
void half_kernel(const PanelQ8& p, int half, int64_t kc, const ActBlockQ8* const (&a)[4], int n_tok, float* y,
                 int64_t ldy, int n_rows, bool accumulate) {
  const int n_groups = static_cast<int>(kc / kGroup);
  float32x4_t s[4][2];
  for (auto& st : s) st[0] = st[1] = vdupq_n_f32(0.0f);
  for (int g = 0; g < n_groups; ++g) {
    int32x4_t rows[4][2];
    Dot::template group<kGroup>(p, half, g, a, rows);
    const float32x4_t sc0 = vld1q_f32(&p.scale[g][8 * half]), sc1 = vld1q_f32(&p.scale[g][8 * half + 4]);
    for (int t = 0; t < 4; ++t) {
      s[t][0] = vfmaq_n_f32(s[t][0], vmulq_f32(sc0, vcvtq_f32_s32(rows[t][0])), a[t]->d[g]);
      s[t][1] = vfmaq_n_f32(s[t][1], vmulq_f32(sc1, vcvtq_f32_s32(rows[t][1])), a[t]->d[g]);
    }
    if constexpr (kMin) {
      const float32x4_t mn0 = vld1q_f32(&p.min[g][8 * half]), mn1 = vld1q_f32(&p.min[g][8 * half + 4]);
      for (int t = 0; t < 4; ++t) {
        s[t][0] = vfmsq_f32(s[t][0], mn0, vdupq_n_f32(a[t]->dsum[g]));
        s[t][1] = vfmsq_f32(s[t][1], mn1, vdupq_n_f32(a[t]->dsum[g]));
      }
    }
  }
  const int n = n_rows - 8 * half;
  for (int t = 0; t < n_tok; ++t) {
    float* yt = y + t * ldy + 8 * half;
    neon::store_partial(yt, s[t][0], n, accumulate);
    if (n > 4) neon::store_partial(yt + 4, s[t][1], n - 4, accumulate);
  }
}

template <class Dot, int kGroup, bool kMin>
void micro_impl(const PanelQ8& p, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
                int n_rows, bool accumulate) {
  // Missing tokens of a partial tile read token 0 and are not stored.
  const ActBlockQ8* const a[4] = {x, n_tok > 1 ? x + ldx : x, n_tok > 2 ? x + 2 * ldx : x,
                                  n_tok > 3 ? x + 3 * ldx : x};
  half_kernel<Dot, kGroup, kMin>(p, 0, kc, a, n_tok, y, ldy, n_rows, accumulate);
  if (n_rows > 8) half_kernel<Dot, kGroup, kMin>(p, 1, kc, a, n_tok, y, ldy, n_rows, accumulate);
}

// The Q8MicroFn of a Dot policy.
template <class Dot>
void micro(const PanelQ8& p, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok, float* y, int64_t ldy,
           int n_rows, bool accumulate) {
  static_assert(kQ8Rows == 16 && kQ8Tokens == 4, "the kernel is written for 16 rows x 4 tokens");
  if (p.group == 16)
    micro_impl<Dot, 16, false>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
  else if (p.has_min)
    micro_impl<Dot, 32, true>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
  else
    micro_impl<Dot, 32, false>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
}

}  // namespace
}  // namespace keel::cpu
