// AVX2 twins of the fast path's weight unpacking (matmul_q8.cpp; compiled with -mavx2, reached
// only for the avx2 and avx512 instruction sets): a row's quants as int8 in input order, and the
// 16 unpacked rows interleaved into a panel's [input / 4][row][4] layout. Same bytes as the scalar
// twins. The scalar Q5_K unpacking, one bit at a time, was 17% of a 512-token prefill of a
// Qwen3-0.6B-shaped Q5_K_M file (Sapphire Rapids VM, AMX kernel), mostly the first touch of the
// weights: with these the step measured 2% faster.
#include <immintrin.h>

#include <cstring>

#include "backend/cpu/matmul_q8.h"
#include "quant/blocks.h"

namespace keel::cpu {
namespace {

using quant::Type;

inline __m256i load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline void store32(void* p, __m256i v) { _mm256_storeu_si256(static_cast<__m256i*>(p), v); }

// Bytes' low and high nibbles.
inline __m256i low4(__m256i v) { return _mm256_and_si256(v, _mm256_set1_epi8(0x0F)); }
inline __m256i high4(__m256i v) { return _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0F)); }
// Bits [shift, shift + width) of each byte, moved to bit `to` (width + to <= 8).
inline __m256i bits(__m256i v, int shift, int mask, int to) {
  const __m256i field = _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(shift)), _mm256_set1_epi8(static_cast<char>(mask)));
  return _mm256_sll_epi16(field, _mm_cvtsi32_si128(to));  // stays inside its byte
}

void q4_0_quants(const char* src, int64_t kc, int8_t* q) {
  const auto* b = reinterpret_cast<const quant::BlockQ4_0*>(src);
  const __m128i eight = _mm_set1_epi8(8), mask = _mm_set1_epi8(0x0F);
  for (int64_t i = 0; i < kc / 32; ++i) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 32 * i), _mm_sub_epi8(_mm_and_si128(raw, mask), eight));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 32 * i + 16),
                     _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), mask), eight));
  }
}

void q4_k_quants(const char* src, int64_t, int8_t* q) {
  const auto& b = *reinterpret_cast<const quant::BlockQ4_K*>(src);
  for (int j = 0; j < 4; ++j) {
    const __m256i v = load32(b.qs + 32 * j);
    store32(q + 64 * j, low4(v));
    store32(q + 64 * j + 32, high4(v));
  }
}

void q5_k_quants(const char* src, int64_t, int8_t* q) {
  const auto& b = *reinterpret_cast<const quant::BlockQ5_K*>(src);
  const __m256i qh = load32(b.qh);
  for (int j = 0; j < 4; ++j) {
    const __m256i v = load32(b.qs + 32 * j);
    store32(q + 64 * j, _mm256_or_si256(low4(v), bits(qh, 2 * j, 1, 4)));
    store32(q + 64 * j + 32, _mm256_or_si256(high4(v), bits(qh, 2 * j + 1, 1, 4)));
  }
}

void q6_k_quants(const char* src, int64_t, int8_t* q) {
  const auto& b = *reinterpret_cast<const quant::BlockQ6_K*>(src);
  const __m256i bias = _mm256_set1_epi8(32);
  for (int n = 0; n < 2; ++n) {
    const __m256i l0 = load32(b.ql + 64 * n), l1 = load32(b.ql + 64 * n + 32), h = load32(b.qh + 32 * n);
    int8_t* out = q + 128 * n;
    store32(out, _mm256_sub_epi8(_mm256_or_si256(low4(l0), bits(h, 0, 3, 4)), bias));
    store32(out + 32, _mm256_sub_epi8(_mm256_or_si256(low4(l1), bits(h, 2, 3, 4)), bias));
    store32(out + 64, _mm256_sub_epi8(_mm256_or_si256(high4(l0), bits(h, 4, 3, 4)), bias));
    store32(out + 96, _mm256_sub_epi8(_mm256_or_si256(high4(l1), bits(h, 6, 3, 4)), bias));
  }
}

// Rows r0..r0+7's 32 bytes at input k (8 groups of 4) as out[k/4 + i][r0 + 0..7][4], i < 8: an
// 8 x 8 transpose of 32-bit lanes.
inline void interleave8(const int8_t* q, size_t stride, int64_t k, int8_t (*out)[kQ8Rows][4], int r0) {
  __m256i v[8], t[8];
  for (int r = 0; r < 8; ++r) v[r] = load32(q + (r0 + r) * stride + k);
  for (int r = 0; r < 8; r += 2) {
    t[r] = _mm256_unpacklo_epi32(v[r], v[r + 1]);      // (r, r+1) lanes 0 1 | 4 5
    t[r + 1] = _mm256_unpackhi_epi32(v[r], v[r + 1]);  // lanes 2 3 | 6 7
  }
  for (int r = 0; r < 8; r += 4)
    for (int h = 0; h < 2; ++h) {
      v[r + h] = _mm256_unpacklo_epi64(t[r + h], t[r + h + 2]);      // rows r..r+3, lane 0+2h | 4+2h
      v[r + h + 2] = _mm256_unpackhi_epi64(t[r + h], t[r + h + 2]);  // lane 1+2h | 5+2h
    }
  // v[0]: rows 0-3 lanes 0|4, v[2]: lanes 1|5, v[1]: 2|6, v[3]: 3|7; v[4..7] the same for rows 4-7.
  const int lane_of[4] = {0, 2, 1, 3};  // v index of lane i (i < 4) for rows 0-3
  for (int i = 0; i < 4; ++i) {
    const __m256i lo = v[lane_of[i]], hi = v[4 + lane_of[i]];
    store32(out[k / 4 + i][r0], _mm256_permute2x128_si256(lo, hi, 0x20));
    store32(out[k / 4 + i + 4][r0], _mm256_permute2x128_si256(lo, hi, 0x31));
  }
}

}  // namespace

Q8QuantsFn q8_unpack_quants_avx2(Type type) {
  switch (type) {
    case Type::Q4_0: return q4_0_quants;
    case Type::Q4_K: return q4_k_quants;
    case Type::Q5_K: return q5_k_quants;
    case Type::Q6_K: return q6_k_quants;
    default: return nullptr;  // Q8_0's quants are a copy
  }
}

void q8_interleave_rows_avx2(const int8_t* q, size_t stride, int64_t kc, int8_t (*out)[kQ8Rows][4]) {
  for (int64_t k = 0; k < kc; k += 32) {
    interleave8(q, stride, k, out, 0);
    interleave8(q, stride, k, out, 8);
  }
}

}  // namespace keel::cpu
