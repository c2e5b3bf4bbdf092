// Flash attention on the CPU: causal per sequence, GQA, online softmax tiled over KV pages
// looked up in each sequence's page table. Prefill tasks are (query block, KV head) and take the
// row-block kernels; decode rows take the per-row kernels (attention_kernels.h), in parts of the
// keys summed at the end (attention.cpp: kDecodeMaxParts). Scratch is per
// thread, bounded by page_tokens x (head_dim + block rows), plus the decode parts' states
// (sequences x kDecodeMaxParts rows): nothing grows with context x chunk.
#pragma once
#include <cstddef>
#include <cstdint>

#include "backend/cpu/thread_pool.h"
#include "backend/types.h"

namespace keel::cpu {

// One attention layer's pages as the kernels read them.
struct KvLayerView {
  backend::KvGeometry geo;
  const uint8_t* const* pages = nullptr;  // [n_pages] page base pointers; page = K rows then V rows
  const uint8_t* k_page(int32_t page) const { return pages[page]; }
  const uint8_t* v_page(int32_t page) const { return pages[page] + size_t{geo.page_tokens} * geo.token_bytes(); }
};

struct AttentionArgs {
  const float* q = nullptr;   // [n_tokens, n_head, head_dim] f32, post-RoPE (the whole batch)
  float* out = nullptr;       // [n_tokens, n_head, head_dim] f32
  uint32_t n_head = 0;
  float scale = 1.0f;
  KvLayerView kv;
  const backend::SeqSlice* seqs = nullptr;  // [n_seqs]: token t of seq s attends to 0..s.pos0 + (t - s.first)
  int32_t n_seqs = 0;
  const int32_t* page_table = nullptr;      // row s.slot: page ids of the sequence's positions
  int32_t max_pages_per_seq = 0;
  // Fast mode (8-bit activations, no --exact): with an f16 or q8_0 cache, prefill tasks take the
  // bf16 row-block kernels (attention_kernels.h) where the CPU has them. Decode rows stay f32.
  bool fast = false;
  // The workspace's size (attention_workspace_bytes / 4): decode rows are split in parts over
  // the keys where it has room for their states.
  size_t workspace_floats = 0;
};

// Query tokens handled together by one task (they share each dequantized K/V tile): at least
// kAttentionQueryBlock, more with larger pages (the workspace grows with both, and the planner
// shrinks pages to fit it). The bf16 kernels take up to 256 (a page) in two halves of up to 128
// (kAttentionQueryBlockBf16): each page's K/V tiles packed once for both halves, each half's
// scores and sums small enough for L2. 128 tokens measured 15% less time than 64 per 512-token
// chunk at depth 3584 (Qwen3-0.6B shapes); 256 in one piece the same as 128; 256 in two halves
// 6% less than 128 (Attention/tokens:512/depth:3584/bf16, Sapphire Rapids VM, 1 thread 35.4 /
// 35.6 -> 33.3 / 33.7 ms, 2 threads 17.9 / 17.4 -> 16.4 / 16.2). The f32 kernels take up to 64
// (a quarter page): half the K/V tile conversions of 32 (2.5% -> 1.3% of an AVX2 4096-token
// prefill's samples), 4% less time there at 2 threads on AVX2, the same on 1 thread and on
// AVX-512. A row's sums do not depend on the block, only on whether its task takes the row-block
// kernels, which the block can decide for a chunk's last few tokens.
constexpr int64_t kAttentionQueryBlock = 32;
constexpr int64_t kAttentionQueryBlockF32 = 64;
constexpr int64_t kAttentionQueryBlockBf16 = 128;

// A task with at least this many query rows (tokens x heads per KV head) takes the row-block
// kernels (prefill); fewer take the per-row kernels (decode, where padding a handful of rows to
// a vector of lanes would multiply the work).
constexpr int64_t kAttentionMinBlockRows = 8;

// Which kernel set the tasks take: chosen per task by its row count, or forced (tests).
enum class AttentionPath { automatic, per_row, row_blocks };

// Workspace of flash_attention; bf16: for the bf16 kernels (attention_takes_bf16); calls of up
// to n_seqs sequences and max_tokens tokens.
size_t attention_workspace_bytes(const backend::KvGeometry& kv, uint32_t n_head, int n_threads, bool bf16 = false,
                                 int32_t n_seqs = 1, int64_t max_tokens = 1);
// Whether flash_attention takes the bf16 kernels for a cache in fast mode (AttentionArgs::fast).
bool attention_takes_bf16(const backend::KvGeometry& kv, bool fast);
void flash_attention(const AttentionArgs& args, float* workspace, ThreadPool& pool);

struct AttentionKernels;
struct AttentionBf16Kernels;
// The same with given kernel tables (tests compare the SIMD twins with the scalar references):
// with bf16 set, row-block tasks take it (args.fast is not consulted).
void flash_attention_with(const AttentionKernels& kernels, const AttentionArgs& args, float* workspace, ThreadPool& pool,
                          AttentionPath path = AttentionPath::automatic, const AttentionBf16Kernels* bf16 = nullptr);

}  // namespace keel::cpu
