// CPU matrix multiply of a GGUF weight (any computable type) by f32 activations.
//
// Activations stay f32 on every path: weights are dequantized exactly (in registers or into a
// small f32 tile) and multiplied with f32 FMAs, so results differ from the exact-dequantized
// reference only by float reassociation. Two paths:
//   - GEMV (n_tokens < kGemmMinTokens, decode): each weight row is streamed once (with software
//     prefetch) and dequantized in registers, two rows at a time. K-quant min terms and Q4_0's
//     offset are factored out with f32 sums of the activations over each 32-input sub-block
//     (Σ (d·sc·q − dmin·m)·x = d·sc·Σ q·x − dmin·m·Σx), computed once per call.
//   - GEMM (prefill chunks): a panel of 16 weight rows × 256 inputs is dequantized (bit-exact
//     with quant::dequantize_row) and transposed into scratch, then a 6-token × 16-output
//     register-blocked FMA micro-kernel runs over every token of the block (compute bound; the
//     dequant is amortised over up to kBlockTokens tokens). Threads split the row panels.
// Every kernel has an always-compiled scalar twin ("generic") with the same signature; the AVX2
// twins live in matmul_avx2.cpp (dequant, GEMM) and matmul_gemv_avx2.cpp and are only called
// after a runtime CPU check.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>

#include "backend/cpu/thread_pool.h"
#include "backend/types.h"
#include "quant/types.h"

namespace keel::cpu {

using WeightView = backend::WeightView;  // a GGUF tensor used in place (mmapped, 32-byte aligned)

// exact: f32 activations on every path (the description above; the fixture tests' oracle).
// fast: for Q4_0, Q8_0, Q4_K, Q5_K and Q6_K weights, every call (GEMV and GEMM) quantizes the
// activations to 8 bits and uses integer dot products (matmul_q8.h: an integer GEMV that reads
// the GGUF blocks in place for decode, a panel GEMM for prefill), as llama.cpp does; results then
// differ from exact by the activations' rounding (about 0.5% of a row's norm), and decode from
// prefill only by float summation order. Other weight types are exact in both modes.
enum class MatmulMode { exact, fast };

// Bytes of caller-owned scratch `matmul` needs for up to `max_tokens` tokens on a pool of up to
// `n_threads` threads in `mode`.
size_t matmul_scratch_bytes(quant::Type type, int64_t n_in, int64_t max_tokens, int n_threads,
                            MatmulMode mode = MatmulMode::exact);

// y[t * n_out + r] = sum_k W[r][k] * x[t * n_in + k]   for t < n_tokens, r < n_out.
// Batch invariance (the CPU backend relies on it): below kGemmMinTokens tokens, a token's result
// does not depend on n_tokens or on the other tokens (bitwise), nor does it on the GEMM path.
// x: [n_tokens, n_in] f32, y: [n_tokens, n_out] f32 (must not alias x).
// scratch: at least matmul_scratch_bytes(w.type, w.n_in, n_tokens, pool.size(), mode) bytes, any
// alignment. Does not allocate. Throws keel::Error for a type it cannot multiply.
void matmul(const WeightView& w, const float* x, int64_t n_tokens, float* y, void* scratch,
            ThreadPool& pool, MatmulMode mode = MatmulMode::exact);

// Several weights (of the same n_in) times one x: products[i].y = products[i].w · x, each bit for
// bit what matmul gives (it is the same arithmetic). In fast mode x is quantized once per
// activation format (matmul_q8.h: Q8_0 for Q4_0/Q8_0 weights, Q8_K for the K-quants) instead of
// once per weight. scratch: the largest matmul_scratch_bytes of the weights.
struct MatmulProduct {
  const WeightView* w;
  float* y;  // [n_tokens, w->n_out]
};
void matmuls(const float* x, int64_t n_tokens, std::span<const MatmulProduct> products, void* scratch,
             ThreadPool& pool, MatmulMode mode = MatmulMode::exact);

// The always-compiled scalar reference with the same contract (dequantizes each row with
// quant::dequantize_row and accumulates in double). Allocates; for tests and tools only.
void matmul_reference(const WeightView& w, const float* x, int64_t n_tokens, float* y);

// ---- the kernels, exposed so tests can compare each SIMD kernel with its scalar twin --------

// Kernel sets, each level including the ones before it on its architecture. x86-64: avx2,
// avxvnni (the AVX2 kernels with AVX-VNNI's 256-bit vpdpbusd in the 8-bit fast path: Intel's
// client cores since Alder Lake, which lack AVX-512), avx512 (the AVX2 kernels with AVX-512 ones).
// AArch64: neon (Advanced SIMD, every AArch64 CPU), dotprod (+SDOT), i8mm (+SMMLA). generic: the
// scalar twins, everywhere.
enum class Isa { generic, avx2, avxvnni, avx512, neon, dotprod, i8mm };
// Whether isa is one of the x86-64 SIMD levels (each takes the AVX2 kernels where it has no own).
constexpr bool is_x86_simd(Isa isa) { return isa == Isa::avx2 || isa == Isa::avxvnni || isa == Isa::avx512; }

// The best instruction set this CPU supports (AVX2 needs avx2, fma, f16c and bmi2, the flags the
// *_avx2.cpp files are compiled with; dotprod and i8mm are read from the OS: getauxval on Linux,
// sysctl on Apple). The environment variable KEEL_CPU_ISA (a level's name, e.g. avx2, neon or
// generic) caps it, e.g. to measure the AVX2 kernels on an AVX-512 machine; it is read once per
// process (isa.cpp).
Isa best_isa();
// Whether kernels of `isa` may run here: generic, or a level of this architecture up to best_isa()
// (avxvnni also on an AVX-512 CPU, if it has AVX-VNNI: KEEL_CPU_ISA=avxvnni measures it there).
bool isa_supported(Isa isa);
// Whether KEEL_CPU_ISA names exactly this level (a cap set by hand: KEEL_CPU_ISA=avx512 also keeps
// the AMX tiles off, attention_amx.cpp).
bool isa_capped_to(Isa isa);
const char* isa_name(Isa isa);
// Whether this process may use the AMX tiles (x86-64 Linux): the CPU has AMX-TILE with AMX-BF16
// (with AVX512_BF16) / AMX-INT8 (with AVX-512 VNNI), the OS grants the tile data, and KEEL_CPU_ISA
// caps neither (avx512 keeps the AVX-512 kernels without the tiles). The tile kernels are in the
// *_amx.cpp files: attention's bf16 products, the fast GEMM's integer ones.
bool amx_bf16_usable();
bool amx_int8_usable();

// matmul with the kernels of a given instruction set (isa must be supported by the CPU).
void matmul_with(Isa isa, const WeightView& w, const float* x, int64_t n_tokens, float* y,
                 void* scratch, ThreadPool& pool, MatmulMode mode = MatmulMode::exact);
void matmuls_with(Isa isa, const float* x, int64_t n_tokens, std::span<const MatmulProduct> products,
                  void* scratch, ThreadPool& pool, MatmulMode mode = MatmulMode::exact);

constexpr int64_t kGemmMinTokens = 5;  // below: GEMV path (measured crossover, bench MatmulSmall)
constexpr int kTileTokens = 6;         // micro-kernel tile: 6 tokens ...
constexpr int kTileRows = 16;          // ... × 16 outputs
constexpr int64_t kBlockK = 256;       // inputs per packed panel (multiple of every block size)
constexpr int64_t kBlockTokens = 768;  // tokens per packed activation block (multiple of 6)
constexpr int64_t kGemvChunk = 256;    // inputs dequantized at once by the scalar GEMV

// The rows [begin, end) thread ith of nth takes in a GEMV: contiguous ranges of a multiple of 16
// rows (whole cache lines of y); none when begin >= end.
inline void gemv_row_range(int64_t n_out, int ith, int nth, int64_t& begin, int64_t& end) {
  const int64_t groups = (n_out + 15) / 16;
  const int64_t per = (groups + nth - 1) / nth;
  begin = per * ith * 16 < n_out ? per * ith * 16 : n_out;
  end = per * (ith + 1) * 16 < n_out ? per * (ith + 1) * 16 : n_out;
}
constexpr int64_t kSumBlock = 32;      // activation sums for the GEMV kernels: per 32 inputs

// y[0..n) = dequantized elements of (part of) a row; n is a multiple of the block size.
using DequantRowFn = void (*)(const void* src, float* y, int64_t n);

// For r < n_rows, t < n_tok:  y[t * ldy + r] = sum_{k < n_in} W_r[k] * x[t * ldx + k],
// where row r of W starts at (const char*)w + r * row_bytes. xsum: [n_tok][n_in / 32] sums of
// x over each 32 inputs (sum_activation_blocks), used by kernels that factor out a per-block
// offset; n_tok may be anything (kernels loop over tokens).
using GemvFn = void (*)(const void* w, size_t row_bytes, int64_t n_in, int64_t n_rows,
                        const float* x, int64_t ldx, const float* xsum, int64_t n_tok, float* y,
                        int64_t ldy);

// xsum[t * (n_in / 32) + b] = sum_{k < 32} x[t * n_in + 32 b + k]  (f32, in order).
void sum_activation_blocks(const float* x, int64_t n_in, int64_t n_tok, float* xsum);

// Transposes rows [n_rows <= 16][kc] (row stride ld) into a panel [kc][16]; rows >= n_rows are 0.
using PackPanelFn = void (*)(const float* rows, int64_t ld, int n_rows, int64_t kc, float* panel);

// The micro-kernel. xp: [kc][6] packed tokens, wp: [kc][16] packed weights. For t < n_tok,
// j < n_rows: y[t * ldy + j] = (accumulate ? y[t * ldy + j] : 0) + sum_k xp[k][t] * wp[k][j].
using MicroKernelFn = void (*)(int64_t kc, const float* xp, const float* wp, float* y,
                               int64_t ldy, int n_tok, int n_rows, bool accumulate);

struct TypeKernels {
  DequantRowFn dequant_row;
  GemvFn gemv;
};
struct GemmKernels {
  PackPanelFn pack_panel;
  MicroKernelFn micro;
};

// Throw keel::Error for a type keel cannot multiply.
TypeKernels type_kernels(Isa isa, quant::Type type);
GemmKernels gemm_kernels(Isa isa);

// The two halves of the tables above (matmul_generic.cpp, matmul_avx2.cpp); nullptr members for
// an unsupported type.
TypeKernels type_kernels_generic(quant::Type type);
TypeKernels type_kernels_avx2(quant::Type type);
TypeKernels type_kernels_neon(quant::Type type);  // matmul_gemv_neon.cpp (AArch64)
GemmKernels gemm_kernels_generic();
GemmKernels gemm_kernels_avx2();
GemmKernels gemm_kernels_avx512();  // matmul_avx512.cpp
GemmKernels gemm_kernels_neon();    // matmul_neon.cpp (AArch64: the generic packing, a NEON micro-kernel)

}  // namespace keel::cpu
