// The 4/5/6-bit encoders. Each group of values gets the scale (and, for Q4_K/Q5_K, the min) that
// minimises the weighted squared error of its dequantized values, found the way llama.cpp's
// reference quantizers find it (a sweep of candidate scales around the range-based one, each
// followed by the closed-form least-squares fit for the levels it produced), plus two steps
// this file adds: alternating refit (levels <-> scale) until it stops improving, and, once the
// per-group scales are themselves quantized to 6 or 8 bits, a choice among the neighbouring
// codes of each group by its actual error. Weights favour large values (|x| and x²), as the
// reference does: those dominate the dot products.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/blocks.h"
#include "quant/pack.h"
#include "quant/quantize.h"

namespace keel::quant {
namespace {

// Round half to even without a libm call: adding 1.5·2^23 leaves the integer in the mantissa.
// Inputs are clamped first (callers clamp the result to a few bits anyway).
inline int round_int(float v) {
  v = v < -4194303.0f ? -4194303.0f : (v > 4194303.0f ? 4194303.0f : v);
  const float shifted = v + 12582912.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  return (bits & 0x007FFFFF) - 0x00400000;
}
inline int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// ---- symmetric groups: x ≈ scale·q, q ∈ [-nmax, nmax-1] (Q4_0, Q6_K) ----

// Weighted error of the levels q (in [-nmax, nmax)) for x with the least-squares scale; returns
// the scale. The error is Σw·x² − (Σw·x·q)² / Σw·q², so only the second term is compared.
struct SymFit {
  double sum_xq = 0, sum_qq = 0;
  double gain() const { return sum_qq > 0 ? sum_xq * sum_xq / sum_qq : 0; }
  float scale() const { return sum_qq > 0 ? static_cast<float>(sum_xq / sum_qq) : 0.0f; }
};

SymFit levels_for_scale(const float* x, const float* w, int n, int nmax, float inv_scale, int8_t* q) {
  SymFit f;
  for (int i = 0; i < n; ++i) {
    const int l = clamp_int(round_int(inv_scale * x[i]), -nmax, nmax - 1);
    q[i] = static_cast<int8_t>(l);
    f.sum_xq += double{w[i]} * x[i] * l;
    f.sum_qq += double{w[i]} * l * l;
  }
  return f;
}

// Best scale for one group; q receives its levels. 0 for an all-zero group.
float fit_symmetric(const float* x, const float* w, int n, int nmax, int8_t* q) {
  float amax = 0, extreme = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      extreme = x[i];
    }
  if (amax < 1e-30f) {
    std::fill(q, q + n, int8_t{0});
    return 0.0f;
  }
  // The signed extreme maps to -nmax, the level that has no positive twin: one more step of range.
  int8_t trial[QK_K];
  SymFit best = levels_for_scale(x, w, n, nmax, -nmax / extreme, q);
  for (int step = -9; step <= 9; ++step) {
    if (step == 0) continue;
    SymFit f = levels_for_scale(x, w, n, nmax, -(nmax + 0.1f * step) / extreme, trial);
    if (f.gain() > best.gain()) {
      best = f;
      std::copy(trial, trial + n, q);
    }
  }
  for (int iter = 0; iter < 4 && best.sum_qq > 0; ++iter) {  // refit: levels for the fitted scale
    SymFit f = levels_for_scale(x, w, n, nmax, 1.0f / best.scale(), trial);
    if (!(f.gain() > best.gain())) break;
    best = f;
    std::copy(trial, trial + n, q);
  }
  return best.scale();
}

// ---- asymmetric groups: x ≈ scale·q − min, q ∈ [0, nmax], min ≥ 0 (Q4_K, Q5_K) ----

struct AffineFit {
  float scale = 0, min = 0;  // value = scale·q − min
  double error = 0;          // Σ w·(value − x)²
};

double affine_error(const float* x, const float* w, int n, const uint8_t* q, float scale, float min) {
  float e = 0;
  for (int i = 0; i < n; ++i) {
    const float d = scale * q[i] - min - x[i];
    e += w[i] * d * d;
  }
  return e;
}

// Levels for (1/scale, min) and the least-squares (scale, offset) they admit, with the offset
// kept ≤ 0 (min ≥ 0). The error comes from the sums in closed form: Σw·(s·l + o − x)².
struct GroupSums {
  float sw = 0, sx = 0, sxx = 0;  // Σw, Σw·x, Σw·x²
};

AffineFit fit_levels(const float* x, const float* w, int n, int nmax, float inv_scale, float min,
                     const GroupSums& g, uint8_t* q) {
  float sl = 0, sll = 0, sxl = 0;
  for (int i = 0; i < n; ++i) {
    const int l = clamp_int(round_int(inv_scale * (x[i] + min)), 0, nmax);
    q[i] = static_cast<uint8_t>(l);
    sl += w[i] * l;
    sll += w[i] * l * l;
    sxl += w[i] * x[i] * l;
  }
  const double det = double{g.sw} * sll - double{sl} * sl;
  if (det <= 0) return {0, 0, INFINITY};
  double scale = (double{g.sw} * sxl - double{g.sx} * sl) / det;
  double offset = (double{sll} * g.sx - double{sl} * sxl) / det;
  if (offset > 0) {  // a positive offset is not representable: fit the scale alone
    offset = 0;
    scale = sll > 0 ? sxl / sll : 0;
  }
  AffineFit f;
  f.scale = static_cast<float>(scale);
  f.min = static_cast<float>(-offset);
  f.error = g.sxx + scale * scale * sll + offset * offset * g.sw + 2 * scale * offset * sl - 2 * scale * sxl -
            2 * offset * g.sx;
  return f;
}

void affine_levels(const float* x, int n, int nmax, float inv_scale, float min, uint8_t* q) {
  for (int i = 0; i < n; ++i) q[i] = static_cast<uint8_t>(clamp_int(round_int(inv_scale * (x[i] + min)), 0, nmax));
}

// Sweep: inverse scales (nmax + rmin + rdelta·k) / range for k in [0, nstep].
AffineFit fit_affine(const float* x, const float* w, int n, int nmax, float rmin, float rdelta, int nstep,
                     uint8_t* q) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  lo = std::min(lo, 0.0f);
  if (hi == lo) {
    std::fill(q, q + n, uint8_t{0});
    return {0, -lo, 0};
  }
  GroupSums g;
  for (int i = 0; i < n; ++i) {
    g.sw += w[i];
    g.sx += w[i] * x[i];
    g.sxx += w[i] * x[i] * x[i];
  }
  uint8_t trial[32];
  AffineFit best;
  best.scale = (hi - lo) / nmax;
  best.min = -lo;
  affine_levels(x, n, nmax, nmax / (hi - lo), -lo, q);
  best.error = affine_error(x, w, n, q, best.scale, best.min);
  auto consider = [&](const AffineFit& f) {
    if (f.error < best.error) {
      best = f;
      std::copy(trial, trial + n, q);
      return true;
    }
    return false;
  };
  for (int k = 0; k <= nstep; ++k) {
    consider(fit_levels(x, w, n, nmax, (nmax + rmin + rdelta * k) / (hi - lo), -lo, g, trial));
  }
  for (int iter = 0; iter < 4 && best.scale > 0; ++iter) {
    if (!consider(fit_levels(x, w, n, nmax, 1.0f / best.scale, best.min, g, trial))) break;
  }
  return best;
}

// ---- Q4_K / Q5_K shared super-block logic ----

// Quantizes a super-block of 256 values into 8 groups of 32 with 6-bit scales and mins.
// Outputs d, dmin (before their rounding to f16), the 6-bit codes ls[8], lm[8] and the levels
// q[256] in [0, nmax].
void encode_k_super_block(const float* x, int nmax, float rmin, int nstep, float* d_out, float* dmin_out,
                          uint8_t* ls, uint8_t* lm, uint8_t* q) {
  float weights[32];
  AffineFit fits[8];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xs[l]);
    fits[j] = fit_affine(xs, weights, 32, nmax, rmin, 0.1f, nstep, q + 32 * j);
    max_scale = std::max(max_scale, fits[j].scale);
    max_min = std::max(max_min, fits[j].min);
  }
  const float d = f16_to_f32(f32_to_f16(max_scale / 63.0f));
  const float dmin = f16_to_f32(f32_to_f16(max_min / 63.0f));
  *d_out = max_scale / 63.0f;
  *dmin_out = max_min / 63.0f;
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xs[l]);
    // Neighbouring 6-bit codes of the fitted scale and min, judged by the error they give.
    const int s0 = d > 0 ? clamp_int(round_int(fits[j].scale / d), 0, 63) : 0;
    const int m0 = dmin > 0 ? clamp_int(round_int(fits[j].min / dmin), 0, 63) : 0;
    double best = INFINITY;
    uint8_t trial[32];
    ls[j] = static_cast<uint8_t>(s0);
    lm[j] = static_cast<uint8_t>(m0);
    for (int s = std::max(0, s0 - 1); s <= std::min(63, s0 + 1); ++s) {
      for (int m = std::max(0, m0 - 1); m <= std::min(63, m0 + 1); ++m) {
        const float sc = d * s, mn = dmin * m;
        if (sc > 0) {
          affine_levels(xs, 32, nmax, 1.0f / sc, mn, trial);
        } else {
          std::fill(trial, trial + 32, uint8_t{0});
        }
        const double e = affine_error(xs, weights, 32, trial, sc, mn);
        if (e < best) {
          best = e;
          ls[j] = static_cast<uint8_t>(s);
          lm[j] = static_cast<uint8_t>(m);
          std::copy(trial, trial + 32, q + 32 * j);
        }
      }
    }
  }
}

}  // namespace

void quantize_row_q4_0(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<BlockQ4_0*>(dst);
  float weights[QK4_0];
  int8_t q[QK4_0];
  for (int64_t b = 0; b < n / QK4_0; ++b, x += QK4_0) {
    for (int l = 0; l < QK4_0; ++l) weights[l] = x[l] * x[l];
    const float scale = fit_symmetric(x, weights, QK4_0, 8, q);
    const float d = f16_to_f32(f32_to_f16(scale));  // levels for the scale as stored
    const float id = d != 0 ? 1.0f / d : 0.0f;
    for (int l = 0; l < QK4_0; ++l) q[l] = static_cast<int8_t>(clamp_int(round_int(x[l] * id), -8, 7));
    pack_q4_0(scale, q, &out[b]);
  }
}

void quantize_row_q4_k(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<BlockQ4_K*>(dst);
  uint8_t q[QK_K], ls[8], lm[8];
  float d, dmin;
  for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
    encode_k_super_block(x, 15, -1.0f, 20, &d, &dmin, ls, lm, q);
    pack_q4_k(d, dmin, ls, lm, q, &out[b]);
  }
}

void quantize_row_q5_k(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<BlockQ5_K*>(dst);
  uint8_t q[QK_K], ls[8], lm[8];
  float d, dmin;
  for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
    encode_k_super_block(x, 31, -0.5f, 15, &d, &dmin, ls, lm, q);
    pack_q5_k(d, dmin, ls, lm, q, &out[b]);
  }
}

void quantize_row_q6_k(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<BlockQ6_K*>(dst);
  float weights[16];
  int8_t q[QK_K];
  float group_scale[16];
  for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
    float max_scale = 0, max_abs = 0;
    for (int g = 0; g < 16; ++g) {
      const float* xs = x + 16 * g;
      for (int l = 0; l < 16; ++l) weights[l] = xs[l] * xs[l];
      group_scale[g] = fit_symmetric(xs, weights, 16, 32, q + 16 * g);
      if (std::fabs(group_scale[g]) > max_abs) {
        max_abs = std::fabs(group_scale[g]);
        max_scale = group_scale[g];
      }
    }
    int8_t scales[16] = {};
    float d_stored = 0;  // the f16 value pack_q6_k will write
    if (max_abs < 1e-30f) {
      std::fill(q, q + QK_K, int8_t{0});
    } else {
      // The group scale of largest magnitude maps to code -128 (the int8 code without a twin).
      d_stored = -max_scale / 128.0f;
      const float d = f16_to_f32(f32_to_f16(d_stored));
      for (int g = 0; g < 16; ++g) {
        const float* xs = x + 16 * g;
        for (int l = 0; l < 16; ++l) weights[l] = xs[l] * xs[l];
        const int c0 = clamp_int(round_int(group_scale[g] / d), -128, 127);
        double best = INFINITY;
        scales[g] = static_cast<int8_t>(c0);
        for (int c = std::max(-128, c0 - 1); c <= std::min(127, c0 + 1); ++c) {
          const float sc = d * c;
          const float inv = sc != 0 ? 1.0f / sc : 0.0f;
          double e = 0;
          int8_t trial[16];
          for (int l = 0; l < 16; ++l) {
            trial[l] = static_cast<int8_t>(clamp_int(round_int(xs[l] * inv), -32, 31));
            const double diff = double{sc} * trial[l] - xs[l];
            e += weights[l] * diff * diff;
          }
          if (e < best) {
            best = e;
            scales[g] = static_cast<int8_t>(c);
            std::copy(trial, trial + 16, q + 16 * g);
          }
        }
      }
    }
    pack_q6_k(d_stored, scales, q, &out[b]);
  }
}

}  // namespace keel::quant
