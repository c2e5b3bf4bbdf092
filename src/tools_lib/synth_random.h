// The random numbers of `keel synth`: a counter-based generator (row r of tensor t depends only
// on (seed, t, r), so any thread may produce any row and a file is the same for every thread
// count), float rows N(0, 1), and rows of quantized blocks drawn directly.
//
// Quantized rows are not random floats run through the quantizers (their scale search took
// ~70 ns per weight, 85% of the time of a K-quant synth, ~9 MB/s per core); their levels and
// scales are drawn, ~1 GB/s per core. Every weight is  w = d · c · (l − μ):
//   l  a level drawn from a discretised normal: a 4096-entry table maps 12 random bits u to
//      clamp(floor(center + ½ + spread · Φ⁻¹((u + ½) / 4096)), lo, hi), with spread = half the
//      level range / 2.5, so the extreme levels take 1-3% of the draws, as in blocks of real
//      weights. The table is symmetric about `center` (the middle of the range).
//   c  the scale code of the block (Q8_0, Q4_0: a multiplier for variety) or of the group (K
//      types: 6-bit codes, Q6_K int8 codes), uniform near the top of its range, as the
//      quantizers leave it (the group with the widest range gets the largest code).
//   μ  0 for the signed types; Q4_K/Q5_K store it as their min: the group's min code is its
//      scale code c and dmin = d · E[l], so every group has mean 0.
//   d  per tensor, std / sqrt(E[c²] · Var[l]) from the exact moments of the tables, so the
//      dequantized weights have mean 0 and standard deviation `std`; stored as f16 (Q8_0 and
//      Q4_0 store d · c per block).
#pragma once
#include <cstdint>

#include "quant/types.h"

namespace keel::tools {

class RowRng {  // xoshiro256+ seeded through splitmix64
 public:
  RowRng(uint64_t seed, uint64_t tensor, uint64_t row);
  uint64_t next() {
    const uint64_t result = s_[0] + s_[3];
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = (s_[3] << 45) | (s_[3] >> 19);
    return result;
  }
  float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }  // [0, 1)
  void normal(float* x, uint64_t n);  // x[0..n) = N(0, 1) (Box-Muller)

 private:
  uint64_t s_[4];
};

// Rows of one quantized type whose dequantized weights have mean 0 and standard deviation `std`
// (over many blocks; see above for how they are drawn).
class QuantRowDrawer {
 public:
  static bool supports(quant::Type type);  // Q8_0, Q4_0, Q4_K, Q5_K, Q6_K
  QuantRowDrawer(quant::Type type, float std);  // throws keel::Error for another type
  // One row of n weights (a multiple of the block) at dst, row_bytes(type, n) bytes.
  void draw(RowRng& rng, void* dst, int64_t n) const;

  struct Levels;  // a level table and its moments (synth_random.cpp)

 private:
  quant::Type type_;
  const Levels* levels_;
  int code_lo_, code_hi_;  // scale codes c are uniform in [code_lo_, code_hi_]
  float d_;                // w = d_ · c · (l − μ)
};

}  // namespace keel::tools
