// AVX2 micro-kernel of the fast path (compiled with -mavx2 -mfma; reached only after best_isa()
// saw AVX2). The panel's 16 rows are done as two halves of 8: one ymm holds 4 inputs of 8 rows.
// vpmaddubsw multiplies it with 4 broadcast activation bytes (unsigned, quant + 128) into 16-bit
// pair sums; two of them are added in 16 bits (|sum| <= 2·2·255·32 < 2^15 for every weight type
// but Q8_0) and vpmaddwd widens to int32. Q8_0's full-range quants would saturate that, so "wide"
// panels take the sign trick instead: |w| × (x with w's sign), x back to signed, no offset.
// K-quant panels apply the token's scale once per block (see matmul_q8_vnni.cpp).
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

inline void store_half(float* y, __m256 v, int n, bool accumulate) {
  if (n >= 8) {
    if (accumulate) v = _mm256_add_ps(v, _mm256_loadu_ps(y));
    _mm256_storeu_ps(y, v);
    return;
  }
  alignas(32) float tmp[8];
  _mm256_store_ps(tmp, v);
  for (int j = 0; j < n; ++j) y[j] = (accumulate ? y[j] : 0.0f) + tmp[j];
}

// Rows [8·half, 8·half + 8) of the panel against 4 tokens.
template <int kGroup, bool kMin, bool kWide, bool kBlockScale>
void half_avx2(const PanelQ8& p, int half, int64_t kc, const ActBlockQ8* const (&a)[4], int n_tok,
               float* y, int64_t ldy, int n_rows, bool accumulate) {
  constexpr int kQuads = kGroup / 4;
  static_assert(kBlockScale || !kMin, "min terms come with Q8_K activations");
  const int n_groups = static_cast<int>(kc / kGroup);
  const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8(static_cast<char>(0x80));
  __m256 s[4], m[4];
  for (int t = 0; t < 4; ++t) s[t] = m[t] = _mm256_setzero_ps();
  for (int g = 0; g < n_groups; ++g) {
    const int8_t* wq = &p.q[g * kQuads][8 * half][0];
    const int k = g * kGroup;
    // The sums start from −offset (wide panels have none), so they come out offset-free.
    __m256i start = _mm256_setzero_si256();
    if constexpr (!kWide) {
      const __m256i off = _mm256_load_si256(reinterpret_cast<const __m256i*>(&p.offset[g][8 * half]));
      start = _mm256_sub_epi32(start, off);
    }
    __m256i c[4] = {start, start, start, start};
    if constexpr (kWide) {
      for (int i = 0; i < kQuads; ++i) {
        const __m256i w = _mm256_load_si256(reinterpret_cast<const __m256i*>(wq + 64 * i));
        const __m256i aw = _mm256_abs_epi8(w);
        for (int t = 0; t < 4; ++t) {
          const __m256i xs = _mm256_sign_epi8(_mm256_xor_si256(bcast4(a[t]->q + k + 4 * i), flip), w);
          c[t] = _mm256_add_epi32(c[t], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xs), ones));
        }
      }
    } else {
      for (int i = 0; i < kQuads; i += 2) {
        const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(wq + 64 * i));
        const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(wq + 64 * (i + 1)));
        for (int t = 0; t < 4; ++t) {
          const __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(bcast4(a[t]->q + k + 4 * i), w0),
                                                 _mm256_maddubs_epi16(bcast4(a[t]->q + k + 4 * i + 4), w1));
          c[t] = _mm256_add_epi32(c[t], _mm256_madd_epi16(pairs, ones));
        }
      }
    }
    const __m256 sc = _mm256_load_ps(&p.scale[g][8 * half]);
    for (int t = 0; t < 4; ++t) {
      if constexpr (kBlockScale)
        s[t] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(c[t]), s[t]);
      else
        s[t] = _mm256_fmadd_ps(_mm256_set1_ps(a[t]->d[g]), _mm256_mul_ps(sc, _mm256_cvtepi32_ps(c[t])), s[t]);
    }
    if constexpr (kMin) {
      const __m256 mn = _mm256_load_ps(&p.min[g][8 * half]);
      for (int t = 0; t < 4; ++t) m[t] = _mm256_fmadd_ps(_mm256_set1_ps(a[t]->dsum[g]), mn, m[t]);
    }
  }
  const int n = n_rows - 8 * half;
  for (int t = 0; t < n_tok; ++t) {
    __m256 v = s[t];
    if constexpr (kBlockScale) v = _mm256_fmsub_ps(_mm256_set1_ps(a[t]->d[0]), v, m[t]);
    store_half(y + t * ldy + 8 * half, v, n, accumulate);
  }
}

template <int kGroup, bool kMin, bool kWide, bool kBlockScale>
void micro_impl(const PanelQ8& p, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok, float* y,
                int64_t ldy, int n_rows, bool accumulate) {
  // Missing tokens of a partial tile read token 0 and are not stored.
  const ActBlockQ8* const a[4] = {x, n_tok > 1 ? x + ldx : x, n_tok > 2 ? x + 2 * ldx : x,
                                  n_tok > 3 ? x + 3 * ldx : x};
  half_avx2<kGroup, kMin, kWide, kBlockScale>(p, 0, kc, a, n_tok, y, ldy, n_rows, accumulate);
  if (n_rows > 8) half_avx2<kGroup, kMin, kWide, kBlockScale>(p, 1, kc, a, n_tok, y, ldy, n_rows, accumulate);
}

void micro_avx2(const PanelQ8& p, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok, float* y,
                int64_t ldy, int n_rows, bool accumulate) {
  static_assert(kQ8Rows == 16 && kQ8Tokens == 4, "the kernel is written for 16 rows x 4 tokens");
  if (p.wide)  // Q8_0
    micro_impl<32, false, true, false>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
  else if (!p.block_scale)  // Q4_0
    micro_impl<32, false, false, false>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
  else if (p.group == 16)  // Q6_K
    micro_impl<16, false, false, true>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
  else  // Q4_K, Q5_K
    micro_impl<32, true, false, true>(p, kc, x, ldx, n_tok, y, ldy, n_rows, accumulate);
}

}  // namespace

Q8MicroFn q8_micro_avx2() { return micro_avx2; }

}  // namespace keel::cpu
