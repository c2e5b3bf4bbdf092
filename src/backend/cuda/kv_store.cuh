// Device side of the paged KV cache's writes (attention.cuh's layout), shared by kv_write and the
// fused norm + RoPE + store kernel (ops.cu), so both give the same bytes.
#pragma once
#include <cuda_fp16.h>

#include <cstdint>

#include "backend/cuda/attention.cuh"
#include "backend/cuda/warp.cuh"

namespace keel::cuda {

// The row of KV head `head` of token t (K, or V when `value`) in its sequence's page. The token
// must not be padding (b.seq[t] >= 0).
__device__ __forceinline__ uint8_t* kv_row(const KvLayout& kv, uint8_t* base, const AttentionBatch& b, int t, int head,
                                           bool value) {
  const int p = b.pos[t];
  const int page = b.pages[int64_t{b.seq[t]} * b.max_pages_per_seq + p / kv.page_tokens];
  return base + size_t(page) * kv.page_bytes() + size_t(p % kv.page_tokens) * kv.token_bytes() +
         (value ? size_t(kv.page_tokens) * kv.token_bytes() : 0) + size_t(head) * kv.row_bytes();
}

// One q8_0 block from a whole warp, lane = element (quant::quantize_row_q8_0's arithmetic).
__device__ __forceinline__ void store_q8_0_block(float x, int lane, uint8_t* block) {
  const float amax = warp_max(fabsf(x));
  const float d = __fdiv_rn(amax, 127.0f);
  const float id = d != 0.0f ? __fdiv_rn(1.0f, d) : 0.0f;
  block[2 + lane] = static_cast<uint8_t>(static_cast<int8_t>(lroundf(__fmul_rn(x, id))));
  if (lane == 0) *reinterpret_cast<__half*>(block) = __float2half_rn(d);
}

// A head's row from the CTA that holds it: thread j (0 <= j < half = head_dim / 2, a multiple of
// 32) holds elements j (lo) and j + half (hi), so each warp holds two whole q8_0 blocks.
__device__ __forceinline__ void store_kv_head(const KvLayout& kv, uint8_t* row, float lo, float hi, int j, int half) {
  if (kv.elem == KvElem::f16) {
    auto* h = reinterpret_cast<__half*>(row);
    h[j] = __float2half_rn(lo);
    h[j + half] = __float2half_rn(hi);
  } else {
    store_q8_0_block(lo, j % 32, row + (j / 32) * 34);
    store_q8_0_block(hi, j % 32, row + ((j + half) / 32) * 34);
  }
}

}  // namespace keel::cuda
