// Paged KV cache writes and flash attention over KV pages on the device (raw launchers).
//
// KV pool of one attention layer: n_pages pages at `base`, page p at base + p * page_bytes(). A
// page holds page_tokens tokens: K [page_tokens][n_kv_heads][head_dim], then V likewise, in the
// cache's element type (f16, or q8_0 blocks of 32 along head_dim).
//
// One call covers several sequences (the seam's batches): per token its sequence and position,
// per sequence its token range in the call and a row of the page table. Token t of sequence s
// attends to positions 0..pos[t] of s (causal; its own K/V already written by kv_write).
//
// Attention runs on the tensor cores (mma.sync m16n8k16; on Hopper, prefill at head sizes 128 and
// 256 with wgmma; f16 inputs, f32 accumulation) with an online softmax in f32: a CTA takes up to
// 64 (mma.sync) or 128 (wgmma) (query token, head) rows of one sequence that share one KV head
// (GQA heads packed together), and walks that sequence's pages in tiles of 32 or 64 keys.
// Q and the probabilities are rounded to f16 (q8_0 keys and values are dequantized to f16): the
// error against the f32 CPU twin is about 2^-11 relative per operand. Small calls (decode) split
// the keys in up to kDecodeSplits ranges run in parallel (split-KV), merged by the CTA of the
// last range to finish (a second kernel where the merge is long).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#ifdef __CUDACC__
#define KEEL_HOST_DEVICE __host__ __device__
#else
#define KEEL_HOST_DEVICE
#endif

namespace keel::cuda {

enum class KvElem { f16, q8_0 };

// Bytes of one head's K (or V) row: f16 elements, or q8_0 blocks of 32 (an f16 scale, 32 int8).
KEEL_HOST_DEVICE constexpr size_t kv_row_bytes(KvElem elem, int head_dim) {
  return elem == KvElem::f16 ? size_t(head_dim) * 2 : size_t(head_dim) / 32 * 34;
}

struct KvLayout {
  KvElem elem = KvElem::f16;
  int n_kv_heads = 0;
  int head_dim = 0;     // 64, 128, 256 on the tensor cores; any multiple of 8 up to 256 on a slow path
  int page_tokens = 0;  // tokens per page (any positive number)
  int n_pages = 0;      // pages in the pool (0: not known; the prefill kernel then copies tiles without TMA)

  KEEL_HOST_DEVICE size_t row_bytes() const { return kv_row_bytes(elem, head_dim); }
  KEEL_HOST_DEVICE size_t token_bytes() const { return size_t(n_kv_heads) * row_bytes(); }  // K (or V) of one token
  KEEL_HOST_DEVICE size_t page_bytes() const { return 2 * size_t(page_tokens) * token_bytes(); }
};

// What one forward call says about its tokens and sequences (device arrays, host scalars).
struct AttentionBatch {
  int n_tokens = 0;
  int n_seqs = 0;
  const int32_t* seq = nullptr;      // [n_tokens] sequence index 0..n_seqs-1 (-1: padding, skipped)
  const int32_t* pos = nullptr;      // [n_tokens] position within its sequence
  const int32_t* q_start = nullptr;  // [n_seqs + 1] tokens of sequence s are q_start[s] .. q_start[s+1]-1
  const int32_t* pages = nullptr;    // [n_seqs, max_pages_per_seq] page ids, row s for sequence s
  int max_pages_per_seq = 0;
};

constexpr int kDecodeSplits = 128;       // key ranges of the split-KV decode, at most (capture-friendly; <= 256)
constexpr int kKeySplits = 64;           // key ranges of the split-KV path of the prefill kernels (<= kDecodeSplits)
constexpr int kSplitMaxTokens = 16;      // calls of at most this many tokens take the split-KV path

bool attention_supports(const KvLayout& kv);

// Device bytes of workspace `attention` needs for calls of up to max_tokens tokens. It must be
// zero before the first call (its first bytes count the finished key ranges of a decode); every
// call leaves them zero.
size_t attention_workspace_bytes(const KvLayout& kv, int n_head, int max_tokens);

// Stores K and V of every token of the batch: token t goes to page pages[seq[t]][pos[t] /
// page_tokens], slot pos[t] % page_tokens, converted to the cache's type (q8_0: the CPU
// encoder's arithmetic, quant::quantize_row_q8_0). k, v: [n_tokens, n_kv_heads * head_dim] f32.
void kv_write(const KvLayout& kv, void* base, const AttentionBatch& batch, const float* k, const float* v,
              cudaStream_t stream);

// 8-bit activations of an op's output (gemv_q8.cuh's layout, act_q8_parts), or none; or its f16
// copy (packed rows, 8-byte aligned: the prefill GEMM's input), or none.
struct ActOut {
  int8_t* q = nullptr;
  float2* s = nullptr;
  void* f16 = nullptr;
};

// Whether a prefill call over this pool (at base) has its K and V tiles brought by TMA tensor
// copies (Hopper, head size 256, f16 pages of a multiple of 64 tokens, the pool's size known)
// rather than by the kernel's threads. Both give the same output; the tests ask which ran.
bool prefill_tensor_copies(const KvLayout& kv, const void* base);

// out = softmax(scale * q K^T) V per (token, head) over the token's sequence, causal.
// q, out: [n_tokens, n_head, head_dim] f32 (n_head a multiple of n_kv_heads).
// workspace: attention_workspace_bytes(kv, n_head, batch.n_tokens) device bytes.
// With act, decode-sized calls also write out's 8-bit activations (the bits quantize_act_q8
// gives) for the output projection's GEMV, and the warpgroup prefill kernel (Hopper, head sizes
// 128 and 256) out's f16 copy for its GEMM; returns whether it wrote what act asked.
bool attention(const KvLayout& kv, const void* base, const AttentionBatch& batch, const float* q, float* out,
               int n_head, float scale, float* workspace, cudaStream_t stream, ActOut act = {});

}  // namespace keel::cuda
