// The 8-bit activation path of cpu::matmul (MatmulMode::fast) for Q4_0, Q8_0, Q4_K, Q5_K and Q6_K
// weights: a GEMM for prefill chunks (n_tokens >= kGemmMinTokens) and a GEMV for decode.
//
// Each activation row is quantized once per call the way ggml does it: Q8_0 (per 32 inputs, f16
// scale) against Q4_0/Q8_0 weights, Q8_K (per 256, f32 scale) against K-quants, so keel's fast
// results round like llama.cpp's. Both paths quantize with the same functions, so decode and
// prefill differ only in the order of their float sums.
//
// GEMM. Weights are unpacked, 16 rows × 256 inputs at a time, into a
// panel of int8 quants interleaved for integer dot products (4 inputs of 16 rows per 64 bytes),
// with one float scale (and min) per group of 32 inputs (16 for Q6_K). A micro-kernel then
// multiplies the panel with every token of the call:
//
//   y[t][r] += Σ_g  d[t][g] · scale[g][r] · Σ_{k∈g} xq[t][k]·wq[k][r]  −  dsum[t][g] · min[g][r]
//
// with the integer sums exact in int32 (activations enter as unsigned xq + 128; the panel's
// offset = 128·Σ wq undoes that before the conversion to float). Kernels: a scalar twin (always
// compiled), AVX2 (vpmaddubsw/vpmaddwd), AVX-512 VNNI (vpdpbusd) and AMX-INT8 (tdpbssd on signed
// activations, 16 tokens a call; the VNNI kernel's results bit for bit) on x86-64, NEON
// (smull/sadalp), dotprod (sdot) and i8mm (smmla) on AArch64, chosen at run time. The AArch64
// kernels flip the activations back to signed and need no offset.
//
// GEMV (decode is memory bound: each weight byte is read once, straight from its GGUF block, with
// software prefetch; no panel). The activations are kept signed (GemvActQ8); on x86 (unsigned ×
// signed byte products) the weights' quants enter as they are stored (unsigned for Q4_K/Q5_K/
// Q6_K; Q4_0 and Q8_0 signed, through the sign trick |w|·(x·sign w)). Each weight block's quants
// are loaded once for up to 4 tokens. Per weight block, in the scalar twin's order (the SIMD kernels sum the same
// terms in lanes):
//   Q4_0, Q8_0 (per 32):  y += (d_w · d_x) · Σ wq·xq
//   Q4_K, Q5_K (per 256): y += (d · d_x) · Σ_g sc_g·Σ_{k∈g} wq·xq − Σ_g (dmin·m_g) · dsum_g
//   Q6_K (per 256):       y += (d · d_x) · Σ_g sc_g·(Σ_{k∈g} wq·xq − 32·qsum_g)
// Kernels: a scalar twin, AVX2 and AVX-512 VNNI (one template, matmul_q8_gemv_x86.h), NEON and
// dotprod (one template, matmul_q8_gemv_arm.h; AArch64 multiplies signed by signed bytes, so
// there the weights enter as signed quants and need neither the sign trick nor Q6_K's offset).
#pragma once
#include <cstddef>
#include <cstdint>

#include "backend/cpu/matmul.h"

namespace keel::cpu {

constexpr int kQ8Rows = 16;         // weight rows per panel
constexpr int64_t kQ8BlockK = 256;  // inputs per panel and per activation block
constexpr int kQ8Tokens = 4;        // tokens per micro-kernel call ...
constexpr int kQ8AmxTokens = 16;    // ... of the AMX kernel (a tile's rows): q8_micro_tokens
constexpr int kQ8SweepPanels = 2;   // panels swept over the tokens together (matmul_q8.cpp)
constexpr int kQ8MaxGroups = 16;    // groups per 256 inputs (group of 16: Q6_K; 32: the others)
// Tokens a GEMM sweeps at a time: a longer call runs as calls of this many tokens, so that one
// activation block column (~0.9 KB a token) stays in the L2 cache while the panels pass over it;
// each block streams all the weights once. Measured (Zen 4 VM, 2 threads, Qwen3-0.6B-shaped
// Q8_0, pp4096 in one chunk of 4096, four rounds): 300 tok/s swept whole, 387 in blocks of 1024,
// 381 in blocks of 512. On a Sapphire Rapids VM (2 cores, 2 MiB of L2 each; attention on the AMX
// tiles), pp512 / pp4096 tok/s: before y was prefetched (the driver below), blocks of 1024
// 355-360 / 267-274, 512 362-365 / 303-312, 256 369-370 / 316-323, 128 339 / 302; with it, 512
// against 256: AMX 557-561 / 428 against 527-533 / 417-427 (Q4_K_M 533-553 / 409-410 against
// 513-518 / 399-405), VNNI 373-375 / 200-201 against 356-360 / 198, AVX2 192-193 / - against 189-190.
constexpr int64_t kQ8TokenBlock = 512;

// How the activations' quants are kept for a micro-kernel (q8_act_form): ActBlockQ8::q as
// quant + 128 (unsigned bytes: vpdpbusd, the scalar twin, the AArch64 kernels); that and q16 (the
// AVX2 kernel, Q8_0 activations); or q as the quants themselves, signed (the AMX kernel: tdpbssd).
enum class Q8ActForm { offset, offset_q16, signed_q };

// One token's (up to) 256 inputs, quantized. [256] u8, [256] i16, [16] f32, [16] f32.
struct ActBlockQ8 {
  uint8_t q[kQ8BlockK];      // quant + 128 (quants are in [-127, 127]); the quant's own bits
                             // where Q8ActForm::signed_q
  int16_t q16[kQ8BlockK];    // quant, widened, for the AVX2 kernel's 16-bit products (Q8_0
                             // weights); written only where Q8ActForm::offset_q16, else unset
  float d[kQ8MaxGroups];     // [group] scale of the group's quants
  float dsum[kQ8MaxGroups];  // [group] d · Σ quants of the group (for the min terms)
};

// 16 weight rows × (up to) 256 inputs of one weight type, unpacked for the kernels.
struct alignas(64) PanelQ8 {
  int8_t q[kQ8BlockK / 4][kQ8Rows][4];      // [input / 4][row][input % 4]; rows past the end are 0
  int16_t q16[kQ8BlockK / 2][kQ8Rows][2];   // [input / 2][row][input % 2]: q widened, where a
                                            // kernel's q8_prepare fills it (else unset)
  int32_t offset[kQ8MaxGroups][kQ8Rows];    // [group][row] 128 · Σ_{k∈group} q
  float scale[kQ8MaxGroups][kQ8Rows];       // [group][row]
  float min[kQ8MaxGroups][kQ8Rows];         // [group][row] (all 0 unless has_min)
  // K-quants (block_scale; else 0): scale = block_d · group_scale exactly, the integer scales as
  // stored in the GGUF block, for kernels that apply them in integers (AVX2).
  int16_t group_scale[kQ8MaxGroups][kQ8Rows];  // [group][row]
  int32_t block_offset[kQ8Rows];               // [row] Σ_g group_scale · offset
  float block_d[kQ8Rows];                      // [row] the super-block's scale d
  // K-quants for the AMX kernel (q8_prepare_amx fills them, else unset): each quant times its
  // group's integer scale, group_scale · q = 64 · scaled_hi + scaled_lo with scaled_lo in [0, 64),
  // in q's layout. Tiles of them sum a whole 256-input block with the scales already applied.
  int8_t scaled_hi[kQ8BlockK / 4][kQ8Rows][4];
  int8_t scaled_lo[kQ8BlockK / 4][kQ8Rows][4];
  int group;      // inputs per group: 32, or 16 for Q6_K
  bool has_min;   // Q4_K, Q5_K
  bool wide;      // quants span the full int8 range (Q8_0): vpmaddubsw would saturate
  bool nibbles;   // quants in [0, 15] (Q4_K): four vpmaddubsw pair sums fit in 16 bits
  bool block_scale;  // K-quants: the activations (Q8_K) have one scale per 256 inputs (d[g] = d[0])
};

// Activation blocks (of kQ8BlockK inputs) of a row of n_in inputs.
inline int64_t q8_act_blocks(int64_t n_in) { return (n_in + kQ8BlockK - 1) / kQ8BlockK; }
// Scratch sizes are rounded up to whole cache lines.
inline size_t q8_align(size_t n) { return (n + 63) / 64 * 64; }

// Whether the fast path multiplies this weight type.
bool q8_supported(quant::Type type);
// The activation quant group of a weight type (32 for Q4_0/Q8_0/Q4_K/Q5_K, 16 for Q6_K).
int q8_group(quant::Type type);

// Quantizes tokens [t_begin, t_end) of x [n_tokens][n_in] into act [n_tokens][ceil(n_in/256)],
// in the form a micro-kernel reads (q8_act_form). Every instruction set gives the same bits
// (the scalar twins below; AVX2 for avx2 and avx512 on x86-64, matmul_q8_act_avx2.cpp).
void quantize_activations_q8(Isa isa, quant::Type weight_type, const float* x, int64_t n_in,
                             int64_t t_begin, int64_t t_end, ActBlockQ8* act, Q8ActForm form);
#if defined(__x86_64__)
void quantize_row_act_q8_0_avx2(const float* x, int64_t n_in, Q8ActForm form, ActBlockQ8* act);
void quantize_row_act_q8_k_avx2(const float* x, int64_t n_in, int group, Q8ActForm form, ActBlockQ8* act);
#endif


// Unpacks rows [r0, r0 + n_rows) (n_rows <= 16), inputs [k0, k0 + kc) of w into panel.
// Without with_offsets, PanelQ8::offset and block_offset are left 0 (kernels that read signed
// activations, Q8ActForm::signed_q, need neither). Every instruction set gives the same panel
// (the scalar unpacking; AVX2 for avx2 and avx512 on x86-64, matmul_q8_unpack_avx2.cpp).
void pack_panel_q8(const WeightView& w, int64_t r0, int n_rows, int64_t k0, int64_t kc, PanelQ8* panel,
                   bool with_offsets = true, Isa isa = Isa::generic);
// The quants of a row's inputs [0, kc) (kc: a multiple of 32, at most 256) from its bytes at src,
// as int8 in input order.
using Q8QuantsFn = void (*)(const char* src, int64_t kc, int8_t* q);
#if defined(__x86_64__)
// nullptr for a type without an AVX2 unpacker (Q8_0: a copy).
Q8QuantsFn q8_unpack_quants_avx2(quant::Type type);
// out[k / 4][r][k % 4] = row r's quant k, for 16 rows of quants `stride` bytes apart, k < kc
// (a multiple of 32).
void q8_interleave_rows_avx2(const int8_t* q, size_t stride, int64_t kc, int8_t (*out)[kQ8Rows][4]);
#endif

// For t < n_tok (<= 4), j < n_rows: y[t * ldy + j] = (accumulate ? y[t * ldy + j] : 0) +
// (the panel's kc inputs of row j) · (token t's block x[t * ldx]).
using Q8MicroFn = void (*)(const PanelQ8& panel, int64_t kc, const ActBlockQ8* x, int64_t ldx,
                           int n_tok, float* y, int64_t ldy, int n_rows, bool accumulate);

// The same for two adjacent panels at once (panels[0] full, panels[1] with n_rows_last rows; y's
// columns for panel P start at y + 16·P): each result the bits of two Q8MicroFn calls. Kernels
// whose loads of the activations bound them share those loads between the panels.
using Q8MicroPairFn = void (*)(const PanelQ8* panels, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok,
                               float* y, int64_t ldy, int n_rows_last, bool accumulate);

// What a micro-kernel needs of a panel beyond pack_panel_q8's layout, made once per panel (the
// panel is then multiplied with every token of the call); nullptr where nothing.
using Q8PrepareFn = void (*)(PanelQ8& panel, int64_t kc);

Q8MicroFn q8_micro_generic();
Q8MicroFn q8_micro_avx2();  // matmul_q8_avx2.cpp
Q8MicroFn q8_micro_vnni();  // matmul_q8_vnni.cpp (AVX-512 F/BW/VL/VNNI)
Q8MicroPairFn q8_micro_pair_vnni();  // the same, two panels a call
Q8MicroFn q8_micro_avxvnni();  // matmul_q8_avxvnni.cpp (AVX2 and AVX-VNNI: the VNNI kernel's results on 256-bit vectors)
Q8MicroFn q8_micro_amx();   // matmul_q8_amx.cpp (AMX-INT8 tiles; its results are the VNNI kernel's)
Q8MicroFn q8_micro_neon();     // matmul_q8_neon.cpp (AArch64 Advanced SIMD: SMULL/SADALP)
Q8MicroFn q8_micro_dotprod();  // matmul_q8_dotprod.cpp (AArch64 SDOT)
Q8MicroFn q8_micro_i8mm();     // matmul_q8_i8mm.cpp (AArch64 SMMLA)

// Whether this CPU has AVX-512 VNNI (with F, BW and VL).
bool cpu_has_avx512_vnni();
// The micro-kernel of an instruction set: avx512 takes the AMX tiles where amx_int8_usable(), else
// VNNI where the CPU has it, else AVX2. Only the kernels of the architecture built for exist;
// others give the scalar twin.
Q8MicroFn q8_micro(Isa isa);
// Its two-panel twin where it has one (VNNI), else nullptr.
Q8MicroPairFn q8_micro_pair(Isa isa);
// The tokens q8_micro(isa) takes per call (n_tok up to this): kQ8AmxTokens for the AMX kernel,
// else kQ8Tokens.
int q8_micro_tokens(Isa isa);
Q8PrepareFn q8_prepare(Isa isa);  // for q8_micro(isa)
// The form q8_micro(isa) reads the activations of weights of weight_type in: offset_q16 for the
// AVX2 kernel's Q8_0 activations (those of Q4_0 and Q8_0 weights), signed_q for the AMX kernel.
Q8ActForm q8_act_form(Isa isa, quant::Type weight_type);
Q8PrepareFn q8_prepare_avx2();    // matmul_q8_avx2.cpp: Q8_0's q16
Q8PrepareFn q8_prepare_amx();     // matmul_q8_amx.cpp: K-quants' scaled_hi / scaled_lo

// Scratch of the fast path for n_tokens >= kGemmMinTokens.
size_t matmul_q8_scratch_bytes(int64_t n_in, int64_t max_tokens, int n_threads);

// The fast-path GEMM (n_tokens >= 1 works; the driver uses it from kGemmMinTokens on). A call
// longer than kQ8TokenBlock runs block by block, with the same results as the blocks alone.
// scratch: matmul_q8_scratch_bytes(w.n_in, n_tokens, pool.size()) bytes, 64-byte aligned.
void matmul_q8_with(Isa isa, const WeightView& w, const float* x, int64_t n_tokens, float* y,
                    void* scratch, ThreadPool& pool);

// matmul_q8_with in two steps, so that weights sharing an x share its quantization (matmuls):
// the activations of x [n_tokens][n_in] as weights of weight_type take them (as the kernel of
// isa reads them), into the scratch; then the GEMM of w (w.n_in = n_in, a type with the same activations: q8_same_activations) on
// them. scratch as for matmul_q8_with.
void matmul_q8_quantize(Isa isa, quant::Type weight_type, const float* x, int64_t n_in, int64_t n_tokens,
                        void* scratch, ThreadPool& pool);
void matmul_q8_quantized(Isa isa, const WeightView& w, int64_t n_tokens, float* y, void* scratch, ThreadPool& pool);

// Whether weights of types a and b take the same quantized activations (Q8_0 blocks for Q4_0 and
// Q8_0; Q8_K blocks summed per q8_group for the K-quants).
bool q8_same_activations(quant::Type a, quant::Type b);

// ---- the GEMV (decode) -----------------------------------------------------------------------

// One token's (up to) 256 inputs for the GEMV: the quants of ActBlockQ8, signed, and their sums.
struct GemvActQ8 {
  int8_t q[kQ8BlockK];           // quants in [-127, 127]
  float d[kQ8MaxGroups];         // [group] scale, as ActBlockQ8 (Q8_K: one value, repeated)
  float dsum[kQ8MaxGroups];      // [group] d · Σ quants of the group, as ActBlockQ8
  int16_t qsum[kQ8BlockK / 16];  // [16 inputs] Σ quants (Q6_K's −32 offset, in integers)
};

// x [n_tokens][n_in] -> act [n_tokens][ceil(n_in/256)], quantized as quantize_activations_q8.
void quantize_activations_gemv_q8(quant::Type weight_type, const float* x, int64_t n_in,
                                  int64_t n_tokens, GemvActQ8* act);

// For r < n_rows, t < n_tok: y[t * ldy + r] = Σ_k W_r[k] · xq_t[k], where row r of W (GGUF blocks)
// starts at (const char*)w + r * row_bytes and token t's activations at act + t * ceil(n_in/256).
using Q8GemvFn = void (*)(const void* w, size_t row_bytes, int64_t n_in, int64_t n_rows,
                          const GemvActQ8* act, int64_t n_tok, float* y, int64_t ldy);

// nullptr for a type the fast path does not multiply.
Q8GemvFn q8_gemv_generic(quant::Type type);
Q8GemvFn q8_gemv_avx2(quant::Type type);  // matmul_q8_gemv_avx2.cpp
Q8GemvFn q8_gemv_vnni(quant::Type type);  // matmul_q8_gemv_vnni.cpp (AVX-512 VL/BW/VNNI, 256-bit)
Q8GemvFn q8_gemv_avxvnni(quant::Type type);  // matmul_q8_gemv_avxvnni.cpp (AVX2 and AVX-VNNI: the same kernels)
Q8GemvFn q8_gemv_neon(quant::Type type);     // matmul_q8_gemv_neon.cpp (AArch64: SMULL/SADALP)
Q8GemvFn q8_gemv_dotprod(quant::Type type);  // matmul_q8_gemv_dotprod.cpp (AArch64 SDOT)
// The GEMV of an instruction set: avx512 takes VNNI where the CPU has it, else AVX2; i8mm takes
// dotprod's. Only the kernels of the architecture built for exist; others give the scalar twin.
Q8GemvFn q8_gemv(Isa isa, quant::Type type);

// Scratch of the fast GEMV (the quantized activations) for n_tokens tokens.
size_t matmul_q8_gemv_scratch_bytes(int64_t n_in, int64_t n_tokens);

// The fast-path GEMV (the driver uses it below kGemmMinTokens). Rows are split over the threads in
// ranges of 16, so a row's result does not depend on the thread count, and each token's on the
// others (the kernels compute every token with the same instructions whatever n_tokens).
// scratch: matmul_q8_gemv_scratch_bytes(w.n_in, n_tokens) bytes, 64-byte aligned. Two steps, as
// matmul_q8_quantize / matmul_q8_quantized: x quantized, then w times it.
void matmul_q8_gemv_quantize(quant::Type weight_type, const float* x, int64_t n_in, int64_t n_tokens, void* scratch);
void matmul_q8_gemv_quantized(Isa isa, const WeightView& w, int64_t n_tokens, float* y, void* scratch,
                              ThreadPool& pool);

// Double-precision reference of the fast path: the activations quantized exactly as above, then
// dequantized, and dotted in double with the exactly dequantized weights. Allocates; tests only.
void matmul_q8_reference(const WeightView& w, const float* x, int64_t n_tokens, float* y);

}  // namespace keel::cpu
