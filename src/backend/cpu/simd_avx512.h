// Small AVX-512F helpers shared by the *_avx512*.cpp translation units (include it only there).
// Those files differ in flags (-mavx512f alone, or with BW/VL/BF16): the anonymous namespace keeps
// each file's copies its own, so none is lent to a file whose CPU may lack the other's extensions.
#pragma once
#include <immintrin.h>

namespace keel::cpu {
namespace {

// f32 vectors of 16 lanes for the tile templates (attention_tiles.h): an FMA sums one product
// per lane.
struct F32x16 {
  using Vec = __m512;
  using Element = float;
  using Operands = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kPack = 1;
  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static Vec splat(float x) { return _mm512_set1_ps(x); }
  static Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
  static Operands load_operands(const float* p) { return _mm512_loadu_ps(p); }
  static Operands broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static Vec dot(Vec acc, Operands a, Operands b) { return _mm512_fmadd_ps(a, b, acc); }
};

}  // namespace
}  // namespace keel::cpu
