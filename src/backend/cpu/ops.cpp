#include "backend/cpu/ops.h"

#include <cmath>
#include <string>

#include "backend/cpu/matmul.h"  // Isa, isa_supported
#include "keel/error.h"

namespace keel::cpu {

double sum_of_squares(const float* x, int64_t n) {
  double part[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) part[j] += static_cast<double>(x[i + j]) * x[i + j];
  for (int j = 0; i < n; ++i, ++j) part[j] += static_cast<double>(x[i]) * x[i];
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

void rms_norm(const float* x, const float* w, float* out, int64_t n_rows, int64_t dim, float eps) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * dim;
    float* o = out + r * dim;
    const double sum = sum_of_squares(xr, dim);
    const float scale = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(dim) + eps));
    for (int64_t i = 0; i < dim; ++i) o[i] = xr[i] * scale * w[i];
  }
}

namespace {

// A call's RoPE: its pairs' angles per position unit, then one position's cosines and sines at a
// time (the angles in double, rounded to float), and heads rotated by them.
class RopeAngles {
 public:
  explicit RopeAngles(const RopeParams& p) : half_(p.n_rot / 2), type_(p.type) {
    if (half_ < 0 || half_ > kMaxPairs)
      throw Error("internal: RoPE over " + std::to_string(p.n_rot) + " dims (at most " + std::to_string(2 * kMaxPairs) +
                  ")");
    for (int i = 0; i < half_; ++i) {
      inv_freq_[i] = std::pow(static_cast<double>(p.base), -2.0 * i / p.n_rot) * p.freq_scale;
      if (p.freq_factors) inv_freq_[i] /= p.freq_factors[i];
    }
  }
  void at(int32_t position) {
    const double pos = static_cast<double>(position);
    for (int i = 0; i < half_; ++i) {
      const double theta = pos * inv_freq_[i];
      c_[i] = static_cast<float>(std::cos(theta));
      s_[i] = static_cast<float>(std::sin(theta));
    }
  }
  // One token's n_heads heads, rotated by the angles of the last at().
  void rotate(float* x, int64_t n_heads, int64_t head_dim) const {
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = x + h * head_dim;
      for (int i = 0; i < half_; ++i) {
        const int a = type_ == backend::RopeType::norm ? 2 * i : i;
        const int b = type_ == backend::RopeType::norm ? 2 * i + 1 : i + half_;
        const float x0 = v[a], x1 = v[b];
        v[a] = x0 * c_[i] - x1 * s_[i];
        v[b] = x0 * s_[i] + x1 * c_[i];
      }
    }
  }

 private:
  static constexpr int kMaxPairs = 512;  // n_rot / 2 <= head_dim / 2; head sizes above 1024 are refused at load
  int half_;
  backend::RopeType type_;
  double inv_freq_[kMaxPairs];
  float c_[kMaxPairs], s_[kMaxPairs];
};

}  // namespace

void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const int32_t* positions, const RopeParams& p) {
  RopeAngles angles(p);
  for (int64_t t = 0; t < n_tokens; ++t) {
    angles.at(positions[t]);
    angles.rotate(x + t * n_heads * head_dim, n_heads, head_dim);
  }
}

void norm_rope_qk(float* q, int64_t n_q_heads, float* k, int64_t n_kv_heads, int64_t n_tokens, int64_t head_dim,
                  const float* q_norm, const float* k_norm, float eps, const int32_t* positions, const RopeParams& p) {
  RopeAngles angles(p);
  for (int64_t t = 0; t < n_tokens; ++t) {
    float* qt = q + t * n_q_heads * head_dim;
    float* kt = k + t * n_kv_heads * head_dim;
    if (q_norm) {
      rms_norm(qt, q_norm, qt, n_q_heads, head_dim, eps);
      rms_norm(kt, k_norm, kt, n_kv_heads, head_dim, eps);
    }
    angles.at(positions[t]);
    angles.rotate(qt, n_q_heads, head_dim);
    angles.rotate(kt, n_kv_heads, head_dim);
  }
}

#if defined(__x86_64__)
void silu_mul_avx2(float* gate, const float* up, int64_t n);  // ops_avx2.cpp
#elif defined(__aarch64__)
void silu_mul_neon(float* gate, const float* up, int64_t n);  // ops_neon.cpp
#endif

void silu_mul(float* gate, const float* up, int64_t n) {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) return silu_mul_avx2(gate, up, n);
#elif defined(__aarch64__)
  static const bool neon = isa_supported(Isa::neon);  // false only under KEEL_CPU_ISA=generic
  if (neon) return silu_mul_neon(gate, up, n);
#endif
  silu_mul_generic(gate, up, n);
}

void silu_mul_generic(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void add_inplace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void add_bias(float* x, const float* bias, int64_t n_rows, int64_t dim) {
  for (int64_t r = 0; r < n_rows; ++r)
    for (int64_t i = 0; i < dim; ++i) x[r * dim + i] += bias[i];
}

}  // namespace keel::cpu
