// Small AVX-512F helpers shared by the translation units compiled for AVX-512 (*_avx512*.cpp,
// *_vnni.cpp, *_amx.cpp; include it only there). Those files differ in flags (-mavx512f alone, or
// with BW/VL/BF16/VNNI/AMX): the anonymous namespace keeps each file's copies its own, so none is
// lent to a file whose CPU may lack the other's extensions.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace keel::cpu {
namespace {

// y[0 .. n) = v's first n lanes (n <= 16), added to what y holds where accumulate.
inline void store_lanes(float* y, __m512 v, int n, bool accumulate) {
  const __mmask16 mask = n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
  if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, y));
  _mm512_mask_storeu_ps(y, mask, v);
}

// exp(x) for x <= 0 (score - max): x = n ln2 + r, degree-6 polynomial for e^r, times 2^n.
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  // p * 2^n in one vscalefps rather than 2^n built in the exponent field (convert, add, shift) and
  // a multiply: the same bits, both one rounding of the exact product, which is never subnormal
  // here (n >= -126, where r >= -87 + 126 ln2 makes p > 1).
  return _mm512_scalef_ps(p, n);
}

// f32 vectors of 16 lanes for the kernel templates of attention_simd.h: an FMA sums one product
// per lane.
struct F32x16 {
  using Vec = __m512;
  using Element = float;
  using Operands = __m512;
  using Ints = __m512i;
  using Mask = __mmask16;
  static constexpr int kLanes = 16;
  static constexpr int kPack = 1;
  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec load(const float* p) { return _mm512_loadu_ps(p); }
  static Vec load_f16(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static float f16_scalar(uint16_t h) { return _cvtsh_ss(h); }  // exact, as quant::f16_to_f32
  static Vec load_i8(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static Vec splat(float x) { return _mm512_set1_ps(x); }
  static Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
  static Operands load_operands(const float* p) { return _mm512_loadu_ps(p); }
  static Operands broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static Vec dot(Vec acc, Operands a, Operands b) { return _mm512_fmadd_ps(a, b, acc); }
  static Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static Vec sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
  static Vec max(Vec a, Vec b) { return _mm512_max_ps(a, b); }
  static float reduce_add(Vec v) { return _mm512_reduce_add_ps(v); }
  static Vec exp_nonpositive(Vec x) { return cpu::exp_nonpositive(x); }
  static Ints load_ints(const int32_t* p) { return _mm512_load_si512(p); }
  static Mask greater(Ints a, int32_t b) { return _mm512_cmpgt_epi32_mask(a, _mm512_set1_epi32(b)); }
  static Vec max_where(Mask m, Vec a, Vec b) { return _mm512_mask_max_ps(a, m, a, b); }
  static Vec zero_unless(Mask m, Vec a) { return _mm512_maskz_mov_ps(m, a); }
};

}  // namespace
}  // namespace keel::cpu
