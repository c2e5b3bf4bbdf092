// Test helpers shared by the matmul tests: random valid weights of every type, random
// activations, the scale of the rounding error, sentinel-guarded output buffers.
#pragma once
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/matmul.h"
#include "quant/blocks.h"
#include "quant/dequant.h"

namespace keel::test {

using keel::cpu::WeightView;
using keel::quant::Type;
namespace quant = keel::quant;

// Every SIMD kernel level (both architectures); tests skip those this CPU or build lacks.
constexpr keel::cpu::Isa kSimdIsas[] = {keel::cpu::Isa::avx2,   keel::cpu::Isa::avxvnni, keel::cpu::Isa::avx512,
                                        keel::cpu::Isa::neon,   keel::cpu::Isa::dotprod, keel::cpu::Isa::i8mm};

constexpr float kSentinel = -7777.25f;
constexpr int64_t kGuard = 37;  // sentinel floats on each side of an output buffer

inline void put_f16(uint8_t* p, float v) {
  const quant::f16_bits h = quant::f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

// Random but valid weights: random quant bytes, finite positive f16 scales.
inline std::vector<uint8_t> random_weights(Type type, int64_t n_in, int64_t n_out, std::mt19937& rng) {
  const size_t bytes = quant::row_bytes(type, static_cast<uint64_t>(n_in)) * static_cast<size_t>(n_out);
  std::vector<uint8_t> w(bytes);
  std::uniform_int_distribution<int> byte(0, 255);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> scale(0.001f, 0.02f);
  const int64_t elems = n_in * n_out;
  switch (type) {
    case Type::F32:
      for (int64_t i = 0; i < elems; ++i) {
        const float v = normal(rng);
        std::memcpy(w.data() + 4 * i, &v, 4);
      }
      return w;
    case Type::F16:
      for (int64_t i = 0; i < elems; ++i) put_f16(w.data() + 2 * i, normal(rng));
      return w;
    case Type::BF16:
      for (int64_t i = 0; i < elems; ++i) {
        const quant::bf16_bits h = quant::f32_to_bf16(normal(rng));
        std::memcpy(w.data() + 2 * i, &h, 2);
      }
      return w;
    default:
      break;
  }
  for (auto& b : w) b = static_cast<uint8_t>(byte(rng));
  const size_t block = quant::info(type).block_bytes;
  for (size_t off = 0; off < bytes; off += block) {
    uint8_t* b = w.data() + off;
    switch (type) {
      case Type::Q4_0: case Type::Q8_0: put_f16(b, scale(rng)); break;
      case Type::Q4_K: case Type::Q5_K: put_f16(b, scale(rng)); put_f16(b + 2, scale(rng)); break;
      case Type::Q6_K: put_f16(b + 208, scale(rng)); break;
      default: break;
    }
  }
  return w;
}

inline std::vector<float> random_floats(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& f : v) f = normal(rng);
  return v;
}

// Σ_k |w_rk · x_tk| for every output, the scale of the rounding error.
inline std::vector<double> abs_products(const WeightView& w, const float* x, int64_t n_tokens) {
  std::vector<float> row(static_cast<size_t>(w.n_in));
  std::vector<double> out(static_cast<size_t>(n_tokens * w.n_out));
  const size_t rb = quant::row_bytes(w.type, static_cast<uint64_t>(w.n_in));
  for (int64_t r = 0; r < w.n_out; ++r) {
    quant::dequantize_row(w.type, static_cast<const char*>(w.data) + r * rb, row.data(), w.n_in);
    for (int64_t t = 0; t < n_tokens; ++t) {
      double s = 0;
      for (int64_t k = 0; k < w.n_in; ++k) s += std::fabs(double(row[k]) * x[t * w.n_in + k]);
      out[t * w.n_out + r] = s;
    }
  }
  return out;
}

// An output buffer with kGuard sentinels on both sides.
struct Guarded {
  explicit Guarded(int64_t n) : buf(static_cast<size_t>(n + 2 * kGuard), kSentinel), n(n) {}
  float* data() { return buf.data() + kGuard; }
  bool guards_intact() const {
    for (int64_t i = 0; i < kGuard; ++i)
      if (buf[i] != kSentinel || buf[kGuard + n + i] != kSentinel) return false;
    return true;
  }
  std::vector<float> buf;
  int64_t n;
};

}  // namespace keel::test
