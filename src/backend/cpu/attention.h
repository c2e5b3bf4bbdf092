// Flash attention on the CPU: causal, GQA, online softmax tiled over KV pages. Scratch is per
// thread and bounded by page_tokens x head_dim: nothing grows with context x chunk.
#pragma once
#include <cstddef>
#include <cstdint>

#include "backend/cpu/thread_pool.h"
#include "runtime/kv_cache.h"

namespace keel::cpu {

struct AttentionArgs {
  const float* q = nullptr;   // [n_tokens, n_head, head_dim] f32, post-RoPE
  float* out = nullptr;       // [n_tokens, n_head, head_dim] f32
  int64_t n_tokens = 0;
  int64_t pos0 = 0;           // position of q's first token; query t attends to KV 0..pos0+t
  uint32_t n_head = 0;
  float scale = 1.0f;
  const runtime::KvCache* kv = nullptr;
  uint32_t layer = 0;         // attention-layer index in the cache
};

// Query tokens handled together by one task (they share each dequantized K/V tile). Each task
// reads the KV prefix once, so a larger block cuts the KV traffic of long prompts (at 32, reading
// and converting the f16 cache was 10% of a 4096-token prefill); the per-thread accumulators
// ([block × group, head_dim]) bound it from above.
constexpr int64_t kAttentionQueryBlock = 64;

size_t attention_workspace_bytes(const runtime::KvGeometry& kv, uint32_t n_head, int n_threads);
void flash_attention(const AttentionArgs& args, float* workspace, ThreadPool& pool);

struct AttentionKernels;
// The same with a given kernel table (tests compare the AVX2 twins with the scalar reference).
void flash_attention_with(const AttentionKernels& kernels, const AttentionArgs& args, float* workspace, ThreadPool& pool);

}  // namespace keel::cpu
