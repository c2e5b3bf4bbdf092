// The inner kernels of CPU flash attention, as a table so the SIMD twins (attention_avx2.cpp,
// attention_avx512.cpp, attention_neon.cpp; the x86 ones written once in attention_simd.h) and the
// scalar references (attention.cpp) share one driver and can be compared in tests.
//
// Two kernel sets share the table. The per-row set serves decode: one query row at a time over
// a K/V tile (a handful of rows per task, nothing to amortise a re-layout over). The block set
// serves prefill chunks: all query rows of a task at once, rows along the vector lanes, so each
// K or V element loaded feeds a register tile of FMAs and the softmax runs on whole vectors.
#pragma once
#include <cstdint>

namespace keel::cpu {

// The block kernels take row counts that are a multiple of this (the driver pads with zero rows).
constexpr int kAttentionRowPad = 16;

struct AttentionKernels {
  // ---- per row (decode) ----
  // scores[j] = scale * dot(q, keys + j*hd) for j < n_keys; returns max(scores).
  float (*scores)(const float* q, const float* keys, int64_t n_keys, int hd, float scale, float* scores);
  // scores[j] = exp(scores[j] - max) in place; returns the sum.
  float (*exp_sum)(float* scores, int64_t n, float max);
  // acc[i] = acc[i] * correction + sum_j p[j] * values[j*hd + i]
  void (*accumulate)(float* acc, float correction, const float* p, const float* values, int64_t n_keys, int hd);
  // f16 rows -> f32 (K/V tiles of an f16 cache)
  void (*f16_to_f32)(const uint16_t* src, float* dst, int64_t n);
  // scores and accumulate for n_q query rows over an f16 cache's rows in place (row j at keys /
  // values + j*stride), each element converted as it is used and once for all n_q rows (a GQA
  // group's heads: q row r at q + r*hd, its scores at scores + r*n_keys and its maximum in
  // maxima[r]; its sums at acc + r*hd, its probabilities at p + r*ldp): each row's results the
  // bits of the f32 kernels on the converted rows, without writing a tile a decode reads once.
  // nullptr where a table has none (the driver converts tiles then).
  void (*scores_f16)(const float* q, int n_q, const uint16_t* keys, int64_t stride, int64_t n_keys, int hd,
                     float scale, float* scores, float* maxima);
  void (*accumulate_f16)(float* acc, const float* correction, int n_q, const float* p, int64_t ldp,
                         const uint16_t* values, int64_t stride, int64_t n_keys, int hd);
  // The same over a q8_0 cache's rows in place (row j at keys / values + j*stride bytes: hd / 32
  // blocks of an f16 scale d and 32 signed quants q), each element d * q as quant::dequantize_row
  // makes it: each row's results the bits of the f32 kernels on the dequantized rows. nullptr
  // where a table has none.
  void (*scores_q8)(const float* q, int n_q, const uint8_t* keys, int64_t stride, int64_t n_keys, int hd, float scale,
                    float* scores, float* maxima);
  void (*accumulate_q8)(float* acc, const float* correction, int n_q, const float* p, int64_t ldp,
                        const uint8_t* values, int64_t stride, int64_t n_keys, int hd);
  // f32 -> f16, round to nearest even (K/V rows into an f16 cache); finite inputs give the bits of
  // quant::f32_to_f16 (a NaN stays a NaN, its payload may differ)
  void (*f32_to_f16)(const float* src, uint16_t* dst, int64_t n);
  // f32 -> q8_0 blocks (K/V rows into a q8_0 cache; n a multiple of 32): quant::quantize_row_q8_0's
  // bytes for finite inputs
  void (*f32_to_q8_0)(const float* src, void* dst, int64_t n);

  // ---- row blocks (prefill); n_rows is a multiple of kAttentionRowPad ----
  // st[j*lds + r] = sum_i keys[j*hd + i] * qt[i*ldq + r] for j < n_keys, r < n_rows: the scores
  // of a tile, transposed (qt: the block's queries transposed, [hd][ldq], already scaled).
  void (*scores_rows)(const float* qt, int64_t ldq, int n_rows, const float* keys, int64_t n_keys, int hd, float* st,
                      int64_t lds);
  // One online-softmax step over a tile, row r seeing keys j < first_visible + r / group (causal):
  // m_new = max(m[r], max of its visible st[j][r]); correction[r] = exp(m[r] - m_new);
  // st[j][r] = visible ? exp(st[j][r] - m_new) : 0; l[r] = l[r] * correction[r] + sum_j st[j][r];
  // m[r] = m_new. Every row must see a key on the first tile (m[r] finite afterwards).
  void (*softmax_rows)(float* st, int64_t lds, int n_rows, int64_t n_keys, int64_t first_visible, int group, float* m,
                       float* l, float* correction);
  // acc[i*n_rows + r] = acc[i*n_rows + r] * correction[r] + sum_{j < n_keys} pt[j*ldp + r] * values[j*hd + i]
  // for r < n_rows, i < hd (pt: probabilities transposed, as softmax_rows leaves them; the sums
  // transposed too, rows along the lanes: the tiles then take the scores' shape, each probability
  // vector feeding a register tile of dims; with rows broadcast, this kernel took 33% more time
  // than scores_rows on the same products at Qwen3-0.6B shapes). Each sum is taken key by key in
  // order, as the per-row accumulate takes it.
  void (*accumulate_rows)(float* acc, const float* correction, int n_rows, const float* pt, int64_t ldp,
                          const float* values, int64_t n_keys, int hd);
};

// (Integer products for CPUs without bf16 ones were tried: q, K, P and V quantized to 12 bits per
// row or dimension, summed with vpmaddwd in int32, bit for bit against a scalar twin and within
// 2.7e-3 of the double reference. On this project's Zen 4 VM with the AVX2 kernels forced,
// tokens:512/depth:3584 at 1 thread, they ran at 66 GFLOP/s against the f32 kernels' 84: the
// multiplies were no faster than FMAs there and the packing came on top. Not taken.)
//
// Fast mode's row-block kernels (AttentionArgs::fast): queries, keys, probabilities and values
// rounded to bfloat16 (round to nearest even), products summed in f32; the online softmax stays
// f32 (softmax_pack, softmax_rows' twin). Operands come in pairs along the summed index, the layout
// of AVX512_BF16's vdpbf16ps: 32-bit lane r of a vector holds the pair (x[2p][r], x[2p + 1][r]).
struct AttentionBf16Kernels {
  // out[j*hd + i] = bf16(keys[j*hd + i]) for j < n.
  void (*pack_keys)(const float* keys, int64_t n, int hd, uint16_t* out);
  // out[(j/2)*2*hd + 2*i + j%2] = bf16(values[j*hd + i]) for j < n; an odd n's last pair is
  // completed with zeros.
  void (*pack_values)(const float* values, int64_t n, int hd, uint16_t* out);
  // st[j*lds + r] = sum_i keys[j*hd + i] * q[i][r] for j < n_keys, r < n_rows, where
  // qp[(i/2)*2*n_rows + 2*r + i%2] holds q[i][r] (the block's queries, scaled; hd even).
  void (*scores_rows)(const uint16_t* qp, int n_rows, const uint16_t* keys, int64_t n_keys, int hd, float* st,
                      int64_t lds);
  // pp[(j/2)*2*n_rows + 2*r + j%2] = bf16(st[j*lds + r]) for j < n_keys (an odd n_keys' last pair
  // completed with zeros), r < n_rows.
  void (*pack_probabilities)(const float* st, int64_t lds, int n_rows, int64_t n_keys, uint16_t* pp);
  // pack_keys and pack_values of an f16 cache's rows in place (row j at k + j*stride and
  // v + j*stride, j < n): kb and vb bit for bit as those leave them from the rows converted to f32
  // (exact), without the f32 tiles in between.
  void (*pack_f16)(const uint16_t* k, const uint16_t* v, int64_t stride, int64_t n, int hd, uint16_t* kb,
                   uint16_t* vb);
  // The same of a q8_0 cache's rows in place (row j at k + j*stride and v + j*stride bytes): kb
  // and vb bit for bit as the packers leave them from the rows quant::dequantize_row makes.
  void (*pack_q8)(const uint8_t* k, const uint8_t* v, int64_t stride, int64_t n, int hd, uint16_t* kb, uint16_t* vb);
  // softmax_rows of the f32 tables (same arguments, same m, l and correction), its probabilities
  // written packed as pack_probabilities packs them (pp) rather than into st, in one pass.
  void (*softmax_pack)(const float* st, int64_t lds, int n_rows, int64_t n_keys, int64_t first_visible, int group,
                       float* m, float* l, float* correction, uint16_t* pp);
  // acc[i*n_rows + r] = acc[i*n_rows + r] * correction[r] + sum_{j < n_keys} p[j][r] * v[j][i], with pp
  // and values as the packers leave them (the sums transposed, as the f32 tables' accumulate_rows).
  void (*accumulate_rows)(float* acc, const float* correction, int n_rows, const uint16_t* pp, const uint16_t* values,
                          int64_t n_keys, int hd);
};

const AttentionKernels& attention_kernels_generic();
const AttentionKernels& attention_kernels_avx2();    // only when the CPU has AVX2 + FMA + F16C
void f32_to_q8_0_avx2(const float* src, void* dst, int64_t n);  // the AVX2 and AVX-512 tables'
const AttentionKernels& attention_kernels_avx512();  // only with AVX-512F, head sizes % 16 == 0
const AttentionKernels& attention_kernels_neon();    // AArch64 only, head sizes % 4 == 0
// The fastest table for a head size on this CPU.
const AttentionKernels& attention_kernels_for(int head_dim);

const AttentionBf16Kernels& attention_bf16_kernels_generic();      // even head sizes
const AttentionBf16Kernels& attention_bf16_kernels_avx512bf16();  // AVX512_BF16 only, head sizes % 16 == 0
// AMX-BF16's tiles for the two products, the AVX512_BF16 table's packers and softmax: only where
// amx_bf16_usable() (the CPU has the tiles and the OS lets this process use them), for head sizes
// that are a multiple of 32 up to kAmxMaxHeadDim. x86-64 builds only (attention_amx.cpp).
constexpr int kAmxMaxHeadDim = 256;
const AttentionBf16Kernels& attention_bf16_kernels_amx();
// The bf16 table that beats f32 for a head size on this CPU; nullptr where none does (the
// scalar twin never does: fast mode then keeps the f32 kernels).
const AttentionBf16Kernels* attention_bf16_kernels_for(int head_dim);

}  // namespace keel::cpu
