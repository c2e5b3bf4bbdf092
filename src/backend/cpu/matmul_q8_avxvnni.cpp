// AVX-VNNI micro-kernel of the fast path (compiled with -mavx2 -mfma -mf16c -mbmi2 -mavxvnni;
// reached only at the avxvnni level). One ymm holds 4 inputs of 8 of the panel's 16 rows, and the
// VEX vpdpbusd multiplies it with 4 broadcast activation bytes of a token into 8 int32 row sums,
// where AVX2 takes vpmaddubsw, a 16-bit add and vpmaddwd (Q8_0: two vpmaddwd on widened quants).
// No product saturates on either path, so the integer sums are the other kernels' and each
// type's float steps are copied from one of them: the results are that kernel's, bit for bit.
// Measured on a Zen 5 VM (KEEL_CPU_ISA=avx2 -> avxvnni, keel bench pp512, 2 threads, in turn,
// Qwen3-0.6B-shaped files): Q8_0 227 / 236 -> 294 / 327 tok/s, Q4_K_M 252 / 244 -> 297 / 300,
// Q5_K_M 256 / 242 -> 292 / 277. (K-quant groups summed in float, as micro_vnni does, measured
// Q4_K_M and Q5_K_M at +12% only: a conversion and an FMA per group and token.)
#include <immintrin.h>

#include <cstring>

#include "backend/cpu/matmul_q8.h"

namespace keel::cpu {
namespace {

inline __m256i bcast4(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

inline __m256i load8(const void* p) { return _mm256_load_si256(static_cast<const __m256i*>(p)); }

// Rows [0, n) of 16 into y (added to it with accumulate).
void store_rows(float* y, const float* v, int n, bool accumulate) {
  for (int r = 0; r < n; ++r) y[r] = accumulate ? y[r] + v[r] : v[r];
}

// A Q4_0 or Q8_0 panel against 4 tokens, as micro_vnni multiplies it: each group of 32 inputs'
// integer sums (started from −offset) scaled and added in float, y = Σ_g d_g · (scale_g · c_g).
void groups(const PanelQ8& p, int64_t kc, const ActBlockQ8* const (&a)[kQ8Tokens], int n_tok, float* y, int64_t ldy,
            int n_rows, bool accumulate) {
  constexpr int kTok = kQ8Tokens, kGroup = 32, kQuads = kGroup / 4;
  const int n_groups = static_cast<int>(kc / kGroup);
  alignas(32) float s[kTok][kQ8Rows] = {};
  for (int g = 0; g < n_groups; ++g) {
    const int8_t* wq = &p.q[g * kQuads][0][0];
    const int k = g * kGroup;
    __m256i c[kTok][2];
    for (int h = 0; h < 2; ++h) {
      const __m256i neg_off = _mm256_sub_epi32(_mm256_setzero_si256(), load8(&p.offset[g][8 * h]));
      for (int t = 0; t < kTok; ++t) c[t][h] = neg_off;
    }
    for (int i = 0; i < kQuads; ++i) {
      const __m256i w0 = load8(wq + 64 * i), w1 = load8(wq + 64 * i + 32);  // rows 0-7, 8-15
      for (int t = 0; t < kTok; ++t) {
        const __m256i xt = bcast4(a[t]->q + k + 4 * i);
        c[t][0] = _mm256_dpbusd_avx_epi32(c[t][0], xt, w0);
        c[t][1] = _mm256_dpbusd_avx_epi32(c[t][1], xt, w1);
      }
    }
    for (int h = 0; h < 2; ++h) {
      const __m256 sc = _mm256_load_ps(&p.scale[g][8 * h]);
      for (int t = 0; t < kTok; ++t)
        _mm256_store_ps(&s[t][8 * h], _mm256_fmadd_ps(_mm256_set1_ps(a[t]->d[g]), _mm256_mul_ps(sc, _mm256_cvtepi32_ps(c[t][h])),
                                                      _mm256_load_ps(&s[t][8 * h])));
    }
  }
  for (int t = 0; t < n_tok; ++t) store_rows(y + t * ldy, s[t], n_rows, accumulate);
}

// Rows [8·half, 8·half + 8) of a K-quant panel against 4 tokens, as scaled_half_avx2 sums them: a
// group's vpdpbusd sums times the rows' integer group scales (vpmulld) into one exact int32 sum per
// row and token over the block, started from −block_offset; then y = d_x · (d_w · Σ) − Σ_g dsum_g ·
// min_g, once per block. Same integers, same float steps: the AVX2 kernel's results, bit for bit
// (the per-group float sums of the VNNI kernel cost a conversion and an FMA per group here).
template <int kGroup, bool kMin>
void scaled_half(const PanelQ8& p, int half, int64_t kc, const ActBlockQ8* const (&a)[kQ8Tokens], int n_tok, float* y,
                 int64_t ldy, int n_rows, bool accumulate) {
  constexpr int kTok = kQ8Tokens, kQuads = kGroup / 4;
  const int n_groups = static_cast<int>(kc / kGroup);
  const __m256i start = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&p.block_offset[8 * half])));
  __m256i c[kTok];
  for (int t = 0; t < kTok; ++t) c[t] = start;
  __m256 m[kTok];
  for (int t = 0; t < kTok; ++t) m[t] = _mm256_setzero_ps();
  for (int g = 0; g < n_groups; ++g) {
    const int8_t* wq = &p.q[g * kQuads][8 * half][0];
    const int k = g * kGroup;
    const __m256i sc = _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(&p.group_scale[g][8 * half])));
    __m256i e[kTok];
    for (int t = 0; t < kTok; ++t) e[t] = _mm256_setzero_si256();
    for (int i = 0; i < kQuads; ++i) {
      const __m256i w = load8(wq + 64 * i);
      for (int t = 0; t < kTok; ++t) e[t] = _mm256_dpbusd_avx_epi32(e[t], bcast4(a[t]->q + k + 4 * i), w);
    }
    for (int t = 0; t < kTok; ++t) c[t] = _mm256_add_epi32(c[t], _mm256_mullo_epi32(e[t], sc));
    if constexpr (kMin) {
      const __m256 mn = _mm256_load_ps(&p.min[g][8 * half]);
      for (int t = 0; t < kTok; ++t) m[t] = _mm256_fmadd_ps(_mm256_set1_ps(a[t]->dsum[g]), mn, m[t]);
    }
  }
  const __m256 dw = _mm256_loadu_ps(&p.block_d[8 * half]);
  const int n = n_rows - 8 * half < 8 ? n_rows - 8 * half : 8;
  for (int t = 0; t < n_tok; ++t) {
    alignas(32) float v[8];
    _mm256_store_ps(v, _mm256_fmsub_ps(_mm256_set1_ps(a[t]->d[0]), _mm256_mul_ps(dw, _mm256_cvtepi32_ps(c[t])), m[t]));
    store_rows(y + t * ldy + 8 * half, v, n, accumulate);
  }
}

void micro_avxvnni(const PanelQ8& p, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok, float* y,
                   int64_t ldy, int n_rows, bool accumulate) {
  static_assert(kQ8Rows == 16 && kQ8Tokens == 4, "the kernel is written for 16 rows x 4 tokens");
  // Missing tokens of a partial tile read token 0 and are not stored.
  const ActBlockQ8* const a[kQ8Tokens] = {x, n_tok > 1 ? x + ldx : x, n_tok > 2 ? x + 2 * ldx : x,
                                          n_tok > 3 ? x + 3 * ldx : x};
  if (!p.block_scale) {  // Q4_0, Q8_0
    groups(p, kc, a, n_tok, y, ldy, n_rows, accumulate);
    return;
  }
  for (int half = 0; half < 2 && 8 * half < n_rows; ++half) {
    if (p.group == 16)  // Q6_K
      scaled_half<16, false>(p, half, kc, a, n_tok, y, ldy, n_rows, accumulate);
    else  // Q4_K, Q5_K
      scaled_half<32, true>(p, half, kc, a, n_tok, y, ldy, n_rows, accumulate);
  }
}

}  // namespace

Q8MicroFn q8_micro_avxvnni() { return micro_avxvnni; }

}  // namespace keel::cpu
