// Small AVX2/FMA helpers shared by the *_avx2.cpp translation units (include it only there).
//
// exp_avx2: exp(x) on 8 floats, x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial for e^r (relative error < 2e-7), 2^n built in
// the exponent field; x is clamped to [-87, 87].
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace keel::cpu {

// The sum of the 8 lanes.
inline float hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256 exp_avx2(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

// f32 vectors of 8 lanes for the kernel templates of attention_simd.h: an FMA sums one product per
// lane.
struct F32x8 {
  using Vec = __m256;
  using Element = float;
  using Operands = __m256;
  using Ints = __m256i;
  using Mask = __m256;  // all ones or all zeros per lane
  static constexpr int kLanes = 8;
  static constexpr int kPack = 1;
  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec load(const float* p) { return _mm256_loadu_ps(p); }
  static Vec load_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static float f16_scalar(uint16_t h) { return _cvtsh_ss(h); }  // exact, as quant::f16_to_f32
  static Vec load_i8(const int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  static void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  static Vec splat(float x) { return _mm256_set1_ps(x); }
  static Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
  static Operands load_operands(const float* p) { return _mm256_loadu_ps(p); }
  static Operands broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static Vec dot(Vec acc, Operands a, Operands b) { return _mm256_fmadd_ps(a, b, acc); }
  static Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static Vec sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
  static Vec max(Vec a, Vec b) { return _mm256_max_ps(a, b); }
  static float reduce_add(Vec v) { return hsum_avx2(v); }
  static Vec exp_nonpositive(Vec x) { return exp_avx2(x); }
  static Ints load_ints(const int32_t* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); }
  static Mask greater(Ints a, int32_t b) { return _mm256_castsi256_ps(_mm256_cmpgt_epi32(a, _mm256_set1_epi32(b))); }
  static Vec max_where(Mask m, Vec a, Vec b) { return _mm256_blendv_ps(a, _mm256_max_ps(a, b), m); }
  static Vec zero_unless(Mask m, Vec a) { return _mm256_and_ps(m, a); }
};

}  // namespace keel::cpu
