#include "tools_lib/synth_random.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>

#include "keel/error.h"
#include "quant/blocks.h"
#include "quant/pack.h"

namespace keel::tools {
namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

constexpr int kLevelBits = 12;
constexpr int kTableSize = 1 << kLevelBits;
constexpr int kLevelsPerDraw = 64 / kLevelBits;  // 5, from the top 60 bits

// Per type: the level range, its centre, and the range of scale codes.
struct TypeDraw {
  quant::Type type;
  int lo, hi;
  double center;
  int code_lo, code_hi;
};
constexpr std::array<TypeDraw, 5> kTypeDraws = {{
    {quant::Type::Q8_0, -127, 127, 0.0, 48, 80},
    {quant::Type::Q4_0, -7, 7, 0.0, 48, 80},
    {quant::Type::Q4_K, 0, 15, 7.5, 40, 63},
    {quant::Type::Q5_K, 0, 31, 15.5, 40, 63},
    {quant::Type::Q6_K, -31, 31, 0.0, 80, 127},
}};

const TypeDraw* find_type_draw(quant::Type type) {
  for (const TypeDraw& t : kTypeDraws)
    if (t.type == type) return &t;
  return nullptr;
}

// Φ⁻¹(p) by bisection on Φ(z) = erfc(−z/√2)/2: only used to build the tables, once.
double inverse_normal_cdf(double p) {
  double lo = -10, hi = 10;
  for (int i = 0; i < 80; ++i) {
    const double mid = 0.5 * (lo + hi);
    (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

// A code c = lo + ⌊byte · (hi − lo + 1) / 256⌋ of a random byte: E[c²] over the 256 bytes.
double code_mean_square(int lo, int hi) {
  double sum = 0;
  for (int b = 0; b < 256; ++b) {
    const double c = lo + ((b * (hi - lo + 1)) >> 8);
    sum += c * c;
  }
  return sum / 256;
}

}  // namespace

struct QuantRowDrawer::Levels {
  int8_t level[kTableSize];
  double mean = 0, variance = 0;
};

namespace {

QuantRowDrawer::Levels make_levels(const TypeDraw& t) {
  QuantRowDrawer::Levels L;
  const double spread = (t.hi - t.lo + 1) / 2.0 / 2.5;
  double sum = 0, sum_sq = 0;
  for (int u = 0; u < kTableSize; ++u) {
    const double z = inverse_normal_cdf((u + 0.5) / kTableSize);
    const int l = std::clamp(static_cast<int>(std::floor(t.center + 0.5 + spread * z)), t.lo, t.hi);
    L.level[u] = static_cast<int8_t>(l);
    sum += l;
    sum_sq += double{1} * l * l;
  }
  L.mean = sum / kTableSize;
  L.variance = sum_sq / kTableSize - L.mean * L.mean;
  return L;
}

const QuantRowDrawer::Levels& levels_of(const TypeDraw& t) {
  static const std::array<QuantRowDrawer::Levels, kTypeDraws.size()> tables = [] {
    std::array<QuantRowDrawer::Levels, kTypeDraws.size()> out;
    for (size_t i = 0; i < kTypeDraws.size(); ++i) out[i] = make_levels(kTypeDraws[i]);
    return out;
  }();
  return tables[&t - kTypeDraws.data()];
}

// n levels (any n): kLevelsPerDraw per 64-bit draw, from its top bits (xoshiro256+'s lowest
// bits are its weakest).
template <typename T>
void draw_levels(const QuantRowDrawer::Levels& L, RowRng& rng, T* out, int n) {
  for (int i = 0; i < n; i += kLevelsPerDraw) {
    uint64_t r = rng.next() >> (64 - kLevelsPerDraw * kLevelBits);
    const int m = std::min(kLevelsPerDraw, n - i);
    for (int k = 0; k < m; ++k, r >>= kLevelBits) out[i + k] = static_cast<T>(L.level[r & (kTableSize - 1)]);
  }
}

// n scale codes (n ≤ 8) uniform in [lo, hi], one byte of a draw each.
template <typename T>
void draw_codes(RowRng& rng, int lo, int hi, T* out, int n) {
  uint64_t r = rng.next();
  for (int k = 0; k < n; ++k, r >>= 8) out[k] = static_cast<T>(lo + ((static_cast<int>(r & 0xFF) * (hi - lo + 1)) >> 8));
}

}  // namespace

RowRng::RowRng(uint64_t seed, uint64_t tensor, uint64_t row) {
  uint64_t sm = seed ^ (tensor * 0xD1B54A32D192ED03ull) ^ (row * 0xABC98388FB8FAC03ull);
  for (auto& w : s_) w = splitmix64(sm);
}

void RowRng::normal(float* x, uint64_t n) {
  for (uint64_t i = 0; i < n; i += 2) {
    const float u1 = 1.0f - uniform(), u2 = uniform();  // u1 in (0, 1]
    const float r = std::sqrt(-2.0f * std::log(u1));
    x[i] = r * std::cos(6.2831853f * u2);
    if (i + 1 < n) x[i + 1] = r * std::sin(6.2831853f * u2);
  }
}

bool QuantRowDrawer::supports(quant::Type type) { return find_type_draw(type) != nullptr; }

QuantRowDrawer::QuantRowDrawer(quant::Type type, float std) : type_(type) {
  const TypeDraw* t = find_type_draw(type);
  if (!t) throw Error("keel synth cannot draw blocks of type " + std::string(quant::type_name(type)));
  levels_ = &levels_of(*t);
  code_lo_ = t->code_lo;
  code_hi_ = t->code_hi;
  const double d = std / std::sqrt(code_mean_square(code_lo_, code_hi_) * levels_->variance);
  d_ = quant::f16_to_f32(quant::f32_to_f16(static_cast<float>(d)));  // as the K types store it
}

void QuantRowDrawer::draw(RowRng& rng, void* dst, int64_t n) const {
  const Levels& L = *levels_;
  switch (type_) {
    case quant::Type::Q8_0:
    case quant::Type::Q4_0: {
      const int64_t n_blocks = n / 32;
      int8_t q[32];
      int codes[8];
      for (int64_t b0 = 0; b0 < n_blocks; b0 += 8) {
        const int m = static_cast<int>(std::min<int64_t>(8, n_blocks - b0));
        draw_codes(rng, code_lo_, code_hi_, codes, m);
        for (int k = 0; k < m; ++k) {
          draw_levels(L, rng, q, 32);
          if (type_ == quant::Type::Q8_0) quant::pack_q8_0(d_ * codes[k], q, static_cast<quant::BlockQ8_0*>(dst) + b0 + k);
          else quant::pack_q4_0(d_ * codes[k], q, static_cast<quant::BlockQ4_0*>(dst) + b0 + k);
        }
      }
      return;
    }
    case quant::Type::Q4_K:
    case quant::Type::Q5_K: {
      const float dmin = d_ * static_cast<float>(L.mean);  // min code = scale code: mean 0 per group
      uint8_t q[quant::QK_K], codes[8];
      for (int64_t b = 0; b < n / quant::QK_K; ++b) {
        draw_codes(rng, code_lo_, code_hi_, codes, 8);
        draw_levels(L, rng, q, quant::QK_K);
        if (type_ == quant::Type::Q4_K) quant::pack_q4_k(d_, dmin, codes, codes, q, static_cast<quant::BlockQ4_K*>(dst) + b);
        else quant::pack_q5_k(d_, dmin, codes, codes, q, static_cast<quant::BlockQ5_K*>(dst) + b);
      }
      return;
    }
    case quant::Type::Q6_K: {
      int8_t q[quant::QK_K], codes[16];
      for (int64_t b = 0; b < n / quant::QK_K; ++b) {
        draw_codes(rng, code_lo_, code_hi_, codes, 8);
        draw_codes(rng, code_lo_, code_hi_, codes + 8, 8);
        draw_levels(L, rng, q, quant::QK_K);
        quant::pack_q6_k(d_, codes, q, static_cast<quant::BlockQ6_K*>(dst) + b);
      }
      return;
    }
    default:
      throw Error("internal error: QuantRowDrawer for " + std::string(quant::type_name(type_)));
  }
}

}  // namespace keel::tools
