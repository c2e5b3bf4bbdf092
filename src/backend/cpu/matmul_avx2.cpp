// AVX2/FMA/F16C twins of the dequant and GEMM kernels (the GEMV ones are in
// matmul_gemv_avx2.cpp), compiled with -mavx2 -mfma -mf16c -mbmi2; only
// reached after best_isa() saw avx2 and fma).
//
// The dequant kernels are bit-exact with quant::dequantize_row: they do the same float operations
// in the same order (d·sc as a float, then ·q, then −dmin·m as a separate subtraction).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "backend/cpu/matmul.h"
#include "backend/cpu/simd_avx2.h"
#include "quant/blocks.h"

namespace keel::cpu {
namespace {

using quant::Type;

inline float f16(quant::f16_bits h) { return _cvtsh_ss(h); }

// 8 bytes -> 8 floats (unsigned or signed).
inline __m256 u8_to_ps(__m128i b) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)); }
inline __m256 i8_to_ps(__m128i b) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)); }

// y[0..32) = scale·q − min for 32 unsigned bytes q.
inline void store_u8x32(__m256i q, __m256 scale, __m256 min, float* y) {
  const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
  _mm256_storeu_ps(y + 0, _mm256_sub_ps(_mm256_mul_ps(scale, u8_to_ps(lo)), min));
  _mm256_storeu_ps(y + 8, _mm256_sub_ps(_mm256_mul_ps(scale, u8_to_ps(_mm_srli_si128(lo, 8))), min));
  _mm256_storeu_ps(y + 16, _mm256_sub_ps(_mm256_mul_ps(scale, u8_to_ps(hi)), min));
  _mm256_storeu_ps(y + 24, _mm256_sub_ps(_mm256_mul_ps(scale, u8_to_ps(_mm_srli_si128(hi, 8))), min));
}

// y[0..16) = scale·q for 16 signed bytes q.
inline void store_i8x16(__m128i q, __m256 scale, float* y) {
  _mm256_storeu_ps(y + 0, _mm256_mul_ps(scale, i8_to_ps(q)));
  _mm256_storeu_ps(y + 8, _mm256_mul_ps(scale, i8_to_ps(_mm_srli_si128(q, 8))));
}

// ---- dequantization of a row (or a block-aligned part of one) -------------------------------

void dequant_f32(const void* src, float* y, int64_t n) {
  std::copy_n(static_cast<const float*>(src), n, y);
}

void dequant_f16(const void* src, float* y, int64_t n) {
  const auto* h = static_cast<const quant::f16_bits*>(src);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
  for (; i < n; ++i) y[i] = f16(h[i]);
}

void dequant_bf16(const void* src, float* y, int64_t n) {
  const auto* h = static_cast<const quant::bf16_bits*>(src);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i)));
    _mm256_storeu_ps(y + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
  }
  for (; i < n; ++i) y[i] = quant::bf16_to_f32(h[i]);
}

void dequant_q8_0(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const quant::BlockQ8_0*>(src);
  for (int64_t i = 0; i < n / quant::QK8_0; ++i, y += quant::QK8_0) {
    const __m256 d = _mm256_set1_ps(f16(b[i].d));
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs));
    store_i8x16(_mm256_castsi256_si128(q), d, y);
    store_i8x16(_mm256_extracti128_si256(q, 1), d, y + 16);
  }
}

void dequant_q4_0(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const quant::BlockQ4_0*>(src);
  const __m128i low4 = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
  for (int64_t i = 0; i < n / quant::QK4_0; ++i, y += quant::QK4_0) {
    const __m256 d = _mm256_set1_ps(f16(b[i].d));
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs));
    store_i8x16(_mm_sub_epi8(_mm_and_si128(q, low4), eight), d, y);
    store_i8x16(_mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), low4), eight), d, y + 16);
  }
}

// The 8 sub-block scales d·sc and mins dmin·m of a Q4_K / Q5_K block, as floats, unpacked from
// the 12-byte field (quants.md 3.3) with 32-bit operations: the low 6 bits of bytes 0-3 are
// sc0-3 and of bytes 4-7 m0-3; sc4-7 are the low nibbles of bytes 8-11 with the top 2 bits of
// bytes 0-3 above them, m4-7 the high nibbles with the top 2 bits of bytes 4-7.
inline void k4_scales(quant::f16_bits d_bits, quant::f16_bits dmin_bits, const uint8_t* packed,
                      float* scale, float* min) {
  uint32_t u0, u1, u2;
  std::memcpy(&u0, packed, 4);
  std::memcpy(&u1, packed + 4, 4);
  std::memcpy(&u2, packed + 8, 4);
  const uint32_t six = 0x3F3F3F3F, nib = 0x0F0F0F0F, two = 0x03030303;
  const uint64_t sc = (u0 & six) | (uint64_t{(u2 & nib) | (((u0 >> 6) & two) << 4)} << 32);
  const uint64_t mn = (u1 & six) | (uint64_t{((u2 >> 4) & nib) | (((u1 >> 6) & two) << 4)} << 32);
  const auto to_ps = [](uint64_t bytes) {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(bytes))));
  };
  _mm256_storeu_ps(scale, _mm256_mul_ps(_mm256_set1_ps(f16(d_bits)), to_ps(sc)));
  _mm256_storeu_ps(min, _mm256_mul_ps(_mm256_set1_ps(f16(dmin_bits)), to_ps(mn)));
}

void dequant_q4_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const quant::BlockQ4_K*>(src);
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  for (int64_t i = 0; i < n / quant::QK_K; ++i) {
    float scale[8], min[8];
    k4_scales(b[i].d, b[i].dmin, b[i].scales, scale, min);
    for (int j = 0; j < 4; ++j, y += 64) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs + 32 * j));
      store_u8x32(_mm256_and_si256(q, low4), _mm256_set1_ps(scale[2 * j]),
                  _mm256_set1_ps(min[2 * j]), y);
      store_u8x32(_mm256_and_si256(_mm256_srli_epi16(q, 4), low4), _mm256_set1_ps(scale[2 * j + 1]),
                  _mm256_set1_ps(min[2 * j + 1]), y + 32);
    }
  }
}

void dequant_q5_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const quant::BlockQ5_K*>(src);
  const __m256i low4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  for (int64_t i = 0; i < n / quant::QK_K; ++i) {
    float scale[8], min[8];
    k4_scales(b[i].d, b[i].dmin, b[i].scales, scale, min);
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qh));
    for (int j = 0; j < 4; ++j, y += 64) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs + 32 * j));
      // bit 2j of qh[l] is the 5th bit of element 64j + l, bit 2j+1 that of 64j + 32 + l
      const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * j), one), 4);
      const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * j + 1), one), 4);
      store_u8x32(_mm256_or_si256(_mm256_and_si256(q, low4), h0), _mm256_set1_ps(scale[2 * j]),
                  _mm256_set1_ps(min[2 * j]), y);
      store_u8x32(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), low4), h1),
                  _mm256_set1_ps(scale[2 * j + 1]), _mm256_set1_ps(min[2 * j + 1]), y + 32);
    }
  }
}

void dequant_q6_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const quant::BlockQ6_K*>(src);
  const __m256i low4 = _mm256_set1_epi8(0x0F), three = _mm256_set1_epi8(3),
                bias = _mm256_set1_epi8(32);
  for (int64_t i = 0; i < n / quant::QK_K; ++i) {
    const float d = f16(b[i].d);
    for (int half = 0; half < 2; ++half, y += 128) {
      const uint8_t* ql = b[i].ql + 64 * half;
      const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
      const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qh + 32 * half));
      const int8_t* sc = b[i].scales + 8 * half;
      // elements 32m + l take the low/high nibble of ql0/ql1 and bits 2m, 2m+1 of qh[l]
      const __m256i q[4] = {
          _mm256_or_si256(_mm256_and_si256(ql0, low4), _mm256_slli_epi16(_mm256_and_si256(qh, three), 4)),
          _mm256_or_si256(_mm256_and_si256(ql1, low4),
                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), three), 4)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), three), 4)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), three), 4)),
      };
      for (int m = 0; m < 4; ++m) {
        const __m256i s = _mm256_sub_epi8(q[m], bias);
        store_i8x16(_mm256_castsi256_si128(s), _mm256_set1_ps(d * sc[2 * m]), y + 32 * m);
        store_i8x16(_mm256_extracti128_si256(s, 1), _mm256_set1_ps(d * sc[2 * m + 1]), y + 32 * m + 16);
      }
    }
  }
}

// ---- GEMM: panel packing and the 6 × 16 micro-kernel -----------------------------------------

inline void transpose8(__m256 (&r)[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

void pack_panel_avx2(const float* rows, int64_t ld, int n_rows, int64_t kc, float* panel) {
  const int64_t kc8 = kc / 8 * 8;
  for (int jb = 0; jb < kTileRows; jb += 8) {
    for (int64_t k = 0; k < kc8; k += 8) {
      __m256 r[8];
      for (int j = 0; j < 8; ++j)
        r[j] = jb + j < n_rows ? _mm256_loadu_ps(rows + (jb + j) * ld + k) : _mm256_setzero_ps();
      transpose8(r);
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(panel + (k + i) * kTileRows + jb, r[i]);
    }
  }
  for (int64_t k = kc8; k < kc; ++k)
    for (int j = 0; j < kTileRows; ++j) panel[k * kTileRows + j] = j < n_rows ? rows[j * ld + k] : 0.0f;
}

// Adds (or stores) one token's 16 results; a partial tile goes through a stack copy.
inline void store_row(float* y, __m256 lo, __m256 hi, int n_rows, bool accumulate) {
  if (n_rows == kTileRows) {
    if (accumulate) {
      lo = _mm256_add_ps(lo, _mm256_loadu_ps(y));
      hi = _mm256_add_ps(hi, _mm256_loadu_ps(y + 8));
    }
    _mm256_storeu_ps(y, lo);
    _mm256_storeu_ps(y + 8, hi);
    return;
  }
  alignas(32) float tile[kTileRows];
  _mm256_store_ps(tile, lo);
  _mm256_store_ps(tile + 8, hi);
  for (int j = 0; j < n_rows; ++j) y[j] = (accumulate ? y[j] : 0.0f) + tile[j];
}

// 12 named accumulators: GCC keeps them in registers (an array of them ends up on the stack).
void micro_avx2(int64_t kc, const float* xp, const float* wp, float* y, int64_t ldy, int n_tok,
                int n_rows, bool accumulate) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t k = 0; k < kc; ++k, xp += kTileTokens, wp += kTileRows) {
    const __m256 w0 = _mm256_loadu_ps(wp), w1 = _mm256_loadu_ps(wp + 8);
    __m256 b = _mm256_broadcast_ss(xp + 0);
    c00 = _mm256_fmadd_ps(b, w0, c00);
    c01 = _mm256_fmadd_ps(b, w1, c01);
    b = _mm256_broadcast_ss(xp + 1);
    c10 = _mm256_fmadd_ps(b, w0, c10);
    c11 = _mm256_fmadd_ps(b, w1, c11);
    b = _mm256_broadcast_ss(xp + 2);
    c20 = _mm256_fmadd_ps(b, w0, c20);
    c21 = _mm256_fmadd_ps(b, w1, c21);
    b = _mm256_broadcast_ss(xp + 3);
    c30 = _mm256_fmadd_ps(b, w0, c30);
    c31 = _mm256_fmadd_ps(b, w1, c31);
    b = _mm256_broadcast_ss(xp + 4);
    c40 = _mm256_fmadd_ps(b, w0, c40);
    c41 = _mm256_fmadd_ps(b, w1, c41);
    b = _mm256_broadcast_ss(xp + 5);
    c50 = _mm256_fmadd_ps(b, w0, c50);
    c51 = _mm256_fmadd_ps(b, w1, c51);
  }
  store_row(y, c00, c01, n_rows, accumulate);
  if (n_tok > 1) store_row(y + ldy, c10, c11, n_rows, accumulate);
  if (n_tok > 2) store_row(y + 2 * ldy, c20, c21, n_rows, accumulate);
  if (n_tok > 3) store_row(y + 3 * ldy, c30, c31, n_rows, accumulate);
  if (n_tok > 4) store_row(y + 4 * ldy, c40, c41, n_rows, accumulate);
  if (n_tok > 5) store_row(y + 5 * ldy, c50, c51, n_rows, accumulate);
}

DequantRowFn dequant_kernel(Type type) {
  switch (type) {
    case Type::F32: return dequant_f32;
    case Type::F16: return dequant_f16;
    case Type::BF16: return dequant_bf16;
    case Type::Q4_0: return dequant_q4_0;
    case Type::Q8_0: return dequant_q8_0;
    case Type::Q4_K: return dequant_q4_k;
    case Type::Q5_K: return dequant_q5_k;
    case Type::Q6_K: return dequant_q6_k;
    default: return nullptr;
  }
}

}  // namespace

GemvFn gemv_kernel_avx2(Type type);  // matmul_gemv_avx2.cpp

TypeKernels type_kernels_avx2(Type type) { return {dequant_kernel(type), gemv_kernel_avx2(type)}; }

GemmKernels gemm_kernels_avx2() { return {pack_panel_avx2, micro_avx2}; }

}  // namespace keel::cpu
