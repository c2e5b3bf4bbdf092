// AArch64 i8mm micro-kernel of the fast path (compiled with -march=armv8.2-a+dotprod+i8mm;
// reached only when best_isa() found i8mm). SMMLA multiplies a 2×8 int8 matrix (8 inputs of two
// tokens) by another (8 inputs of two panel rows) into a 2×2 int32 tile: twice the products of
// an SDOT per instruction. The panel keeps its 4-input interleave (shared with the other
// kernels); two quads of 4 rows are zipped into the 2-row operands (ZIP1/ZIP2 of 32-bit lanes),
// and each zipped operand serves both token pairs. Activations enter signed, no offset. The loops
// around it: matmul_q8_neon_micro.h.
#include "backend/cpu/matmul_q8_neon_micro.h"

namespace keel::cpu {
namespace {

// 8 inputs (quads i, i + 1) of rows [8·half, 8·half + 8) against two token pairs:
// c[pair][rp] += [t0·r0, t0·r1, t1·r0, t1·r1] for rows 2rp, 2rp + 1 of the half.
inline void mmla_step(const int8_t* wq, int8x16_t x01, int8x16_t x23, int32x4_t (&c)[2][4]) {
  for (int h = 0; h < 2; ++h) {
    const int32x4_t a = vreinterpretq_s32_s8(vld1q_s8(wq + 16 * h));       // quad i: 4 rows × 4
    const int32x4_t b = vreinterpretq_s32_s8(vld1q_s8(wq + 64 + 16 * h));  // quad i + 1
    const int8x16_t rows01 = vreinterpretq_s8_s32(vzip1q_s32(a, b));       // 2 rows × 8 inputs
    const int8x16_t rows23 = vreinterpretq_s8_s32(vzip2q_s32(a, b));
    c[0][2 * h] = vmmlaq_s32(c[0][2 * h], x01, rows01);
    c[0][2 * h + 1] = vmmlaq_s32(c[0][2 * h + 1], x01, rows23);
    c[1][2 * h] = vmmlaq_s32(c[1][2 * h], x23, rows01);
    c[1][2 * h + 1] = vmmlaq_s32(c[1][2 * h + 1], x23, rows23);
  }
}

// Two tokens' 8-input halves side by side: the low (or high) 8 bytes of u and of v.
inline int8x16_t pair_low(int8x16_t u, int8x16_t v) {
  return vreinterpretq_s8_s64(vzip1q_s64(vreinterpretq_s64_s8(u), vreinterpretq_s64_s8(v)));
}
inline int8x16_t pair_high(int8x16_t u, int8x16_t v) {
  return vreinterpretq_s8_s64(vzip2q_s64(vreinterpretq_s64_s8(u), vreinterpretq_s64_s8(v)));
}

struct DotSmmla {
  template <int kGroup>
  static void group(const PanelQ8& p, int half, int g, const ActBlockQ8* const (&a)[4], int32x4_t (&rows)[4][2]) {
    constexpr int kQuads = kGroup / 4;
    const int k = g * kGroup;
    int32x4_t c[2][4];
    for (auto& cp : c)
      for (auto& v : cp) v = vdupq_n_s32(0);
    for (int i = 0; i < kQuads; i += 4) {  // 16 inputs: two SMMLA steps of 8
      const int8x16_t x0 = neon::signed_quants(a[0]->q + k + 4 * i), x1 = neon::signed_quants(a[1]->q + k + 4 * i);
      const int8x16_t x2 = neon::signed_quants(a[2]->q + k + 4 * i), x3 = neon::signed_quants(a[3]->q + k + 4 * i);
      const int8_t* wq = &p.q[g * kQuads + i][8 * half][0];
      mmla_step(wq, pair_low(x0, x1), pair_low(x2, x3), c);
      mmla_step(wq + 128, pair_high(x0, x1), pair_high(x2, x3), c);
    }
    // Tiles back to rows: token 2·pair gets the low 64 bits of each row pair, 2·pair + 1 the high.
    for (int pr = 0; pr < 2; ++pr)
      for (int q = 0; q < 2; ++q) {
        const int64x2_t lo = vreinterpretq_s64_s32(c[pr][2 * q]), hi = vreinterpretq_s64_s32(c[pr][2 * q + 1]);
        rows[2 * pr][q] = vreinterpretq_s32_s64(vzip1q_s64(lo, hi));
        rows[2 * pr + 1][q] = vreinterpretq_s32_s64(vzip2q_s64(lo, hi));
      }
  }
};

}  // namespace

Q8MicroFn q8_micro_i8mm() { return micro<DotSmmla>; }

}  // namespace keel::cpu
