#include <algorithm>
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_fp16.h>

#include <climits>
#include <cmath>
#include <string>

#include "backend/cuda/act_q8.cuh"
#include "backend/cuda/async_copy.cuh"
#include "backend/cuda/attention.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/dequant.cuh"
#include "backend/cuda/kv_store.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/wgmma.cuh"

namespace keel::cuda {
namespace {

constexpr int kRows = 64;     // (token, head) rows per CTA of 4 warps x 16 (q8_0 prefill CTAs have 8 warps: 128)
constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr float kLog2e = 1.4426950408889634f;
// The online softmax keeps its running max until a tile's max passes it by more than this (log2
// units): probabilities then stay below 2^8 (f16 holds them) and O, l skip the rescale on most
// tiles, whose multiplies were the largest ALU cost per tile after the tensor-core work.
constexpr float kMaxSlack = 8.0f;

// ---- kv_write -----------------------------------------------------------------------------

// f16: one thread per element. blockIdx.y: 0 = K, 1 = V.
__global__ void kv_write_f16_kernel(KvLayout kv, uint8_t* base, AttentionBatch b, const float* k, const float* v) {
  pdl_enter();
  const int width = kv.n_kv_heads * kv.head_dim;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= int64_t{b.n_tokens} * width) return;
  const int t = static_cast<int>(i / width), e = static_cast<int>(i % width);
  if (b.seq[t] < 0) return;
  uint8_t* row = kv_row(kv, base, b, t, e / kv.head_dim, blockIdx.y != 0);
  reinterpret_cast<__half*>(row)[e % kv.head_dim] = __float2half_rn((blockIdx.y ? v : k)[i]);
}

// q8_0: one warp per block of 32 elements, lane = element.
__global__ void kv_write_q8_0_kernel(KvLayout kv, uint8_t* base, AttentionBatch b, const float* k, const float* v) {
  pdl_enter();
  const int width = kv.n_kv_heads * kv.head_dim;
  const int blocks_per_token = width / 32;
  const int64_t w = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (w >= int64_t{b.n_tokens} * blocks_per_token) return;
  const int t = static_cast<int>(w / blocks_per_token), blk = static_cast<int>(w % blocks_per_token);
  if (b.seq[t] < 0) return;
  const int head = blk / (kv.head_dim / 32), hb = blk % (kv.head_dim / 32);
  uint8_t* row = kv_row(kv, base, b, t, head, blockIdx.y != 0);
  store_q8_0_block((blockIdx.y ? v : k)[int64_t{t} * width + 32 * blk + lane], lane, row + size_t(hb) * 34);
}

// ---- flash attention ----------------------------------------------------------------------

__device__ __forceinline__ void ldmatrix_x4(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(p)));
}
// d += a * b   (m16n8k16, f16 inputs, f32 accumulators)
__device__ __forceinline__ void mma_f16(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// Which sequence and which (token, head) rows CTA `bx` takes, the rows of a KV head's group
// counted token by token over the batch (row R: token R / group, head R % group of the group):
// [r0, r1), `rows` of them but in a sequence's last tile. A tile may begin and end inside a
// token, so a group that does not divide the tile leaves no rows of it idle. With a group of 1,
// whole tokens: `rows` is then the tile's tokens and [r0, r1) its tokens.
__device__ bool find_row_tile(const AttentionBatch& b, int group, int rows, int bx, int& seq, int& r0, int& r1) {
  int acc = 0;
  for (int s = 0; s < b.n_seqs; ++s) {
    const int begin = b.q_start[s] * group, end = b.q_start[s + 1] * group;
    const int tiles = (end - begin + rows - 1) / rows;
    if (bx < acc + tiles) {
      seq = s;
      r0 = begin + (bx - acc) * rows;
      r1 = min(end, r0 + rows);
      return true;
    }
    acc += tiles;
  }
  return false;
}

// f16 pages: the K (or V) rows of a KEYS-key tile copied straight into shared memory (cp.async,
// no registers) by `threads` threads from `first`, keys at or beyond kv_end zero-filled.
// Completes with the caller's commit / wait. Pages holding whole tiles (the usual case: pages of
// 256, tiles of 16-64 keys) take one page lookup per tile; other page sizes look one up per key.
template <int D, int KEYS, int THREADS>
__device__ __forceinline__ void issue_f16_rows(const KvLayout& kv, const uint8_t* base, const int32_t* page_row, int g,
                                               int key0, int kv_end, __half* dst, bool values, int first) {
  constexpr int ld = D + 8, chunks = D / 8;
  static_assert(KEYS * chunks % THREADS == 0, "whole rounds of copies");
  const size_t token_bytes = kv.token_bytes();
  const uint8_t* head = base + size_t(g) * kv.row_bytes() + (values ? size_t(kv.page_tokens) * token_bytes : 0);
  if (kv.page_tokens % KEYS == 0) {
    const uint8_t* tile = head + size_t(page_row[key0 / kv.page_tokens]) * kv.page_bytes() +
                          size_t(key0 % kv.page_tokens) * token_bytes;
#pragma unroll
    for (int i = first; i < KEYS * chunks; i += THREADS) {
      const int j = i / chunks, c = i % chunks;
      const bool valid = key0 + j < kv_end;
      cp_async16(dst + j * ld + 8 * c, tile + (valid ? size_t(j) * token_bytes : 0) + 16 * c, valid);
    }
    return;
  }
#pragma unroll 4
  for (int i = first; i < KEYS * chunks; i += THREADS) {
    const int j = i / chunks, c = i % chunks, kp = key0 + j;
    const bool valid = kp < kv_end;
    const int page = valid ? page_row[kp / kv.page_tokens] : page_row[0];
    cp_async16(dst + j * ld + 8 * c,
               head + size_t(page) * kv.page_bytes() + size_t(valid ? kp % kv.page_tokens : 0) * token_bytes + 16 * c, valid);
  }
}

// Both halves of a tile: K and V rows in one pass (one address per 16-byte piece for the two).
template <int D, int KEYS, int THREADS>
__device__ __forceinline__ void issue_f16_tile(const KvLayout& kv, const uint8_t* base, const int32_t* page_row, int g,
                                               int key0, int kv_end, __half* ks, __half* vs, int first) {
  constexpr int ld = D + 8, chunks = D / 8;
  static_assert(KEYS * chunks % THREADS == 0, "whole rounds of copies");
  const size_t token_bytes = kv.token_bytes(), v_off = size_t(kv.page_tokens) * token_bytes;
  const uint8_t* head = base + size_t(g) * kv.row_bytes();
  if (kv.page_tokens % KEYS == 0) {
    const uint8_t* tile = head + size_t(page_row[key0 / kv.page_tokens]) * kv.page_bytes() +
                          size_t(key0 % kv.page_tokens) * token_bytes;
#pragma unroll
    for (int i = first; i < KEYS * chunks; i += THREADS) {
      const int j = i / chunks, c = i % chunks;
      const bool valid = key0 + j < kv_end;
      const uint8_t* src = tile + (valid ? size_t(j) * token_bytes : 0) + 16 * c;
      cp_async16(ks + j * ld + 8 * c, src, valid);
      cp_async16(vs + j * ld + 8 * c, src + v_off, valid);
    }
    return;
  }
  issue_f16_rows<D, KEYS, THREADS>(kv, base, page_row, g, key0, kv_end, ks, false, first);
  issue_f16_rows<D, KEYS, THREADS>(kv, base, page_row, g, key0, kv_end, vs, true, first);
}

// q8_0 pages go through shared memory twice: their raw rows are copied in (cp.async, the next
// tile's while this one is used, as f16 pages are), then dequantized to f16 beside them for the
// tensor cores. A row is 17 pieces of q8_0_piece<D> bytes (272 / 136 / 68 bytes at head size
// 256 / 128 / 64: 16-, 8- and 4-byte aligned in the pages and in the staging rows).
template <int D>
constexpr int q8_0_row_bytes() { return int(kv_row_bytes(KvElem::q8_0, D)); }
template <int D>
constexpr int q8_0_piece() { return q8_0_row_bytes<D>() / 17; }
// Staging bytes of one KEYS-key tile: K rows, then V rows.
template <int D, int KEYS>
constexpr int q8_0_stage_bytes() { return 2 * KEYS * q8_0_row_bytes<D>(); }

template <int BYTES>
__device__ __forceinline__ void cp_async_piece(void* smem, const void* gmem, bool valid) {
  if constexpr (BYTES == 16) {
    cp_async16(smem, gmem, valid);
  } else {
    static_assert(BYTES == 8 || BYTES == 4, "cp.async copies 4, 8 or 16 bytes");
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(smem_addr(smem)), "l"(gmem), "n"(BYTES),
                 "r"(valid ? BYTES : 0));
  }
}

// The raw K and V rows of a KEYS-key tile into `stage` by `THREADS` threads from `first`, keys at
// or beyond kv_end zero-filled (a zero scale: they dequantize to 0). Completes with the caller's
// commit / wait. Piece i of the copy lands at stage + i * piece (rows of 17 pieces, K's KEYS rows
// then V's). Page lookups as issue_f16_rows.
template <int D, int KEYS, int THREADS>
__device__ __forceinline__ void issue_q8_0_tile(const KvLayout& kv, const uint8_t* base, const int32_t* page_row, int g,
                                                int key0, int kv_end, uint8_t* stage, int first) {
  constexpr int piece = q8_0_piece<D>(), pieces = 2 * KEYS * 17, rounds = (pieces + THREADS - 1) / THREADS;
  const auto is_v = [](int row) { return row >= KEYS; };  // copy row `row` is a V row
  const size_t token_bytes = kv.token_bytes(), v_off = size_t(kv.page_tokens) * token_bytes;
  const uint8_t* head = base + size_t(g) * kv.row_bytes();
  if (kv.page_tokens % KEYS == 0) {
    const uint8_t* tile = head + size_t(page_row[key0 / kv.page_tokens]) * kv.page_bytes() +
                          size_t(key0 % kv.page_tokens) * token_bytes;
#pragma unroll
    for (int k = 0; k < rounds; ++k) {
      const int i = first + k * THREADS;
      if (pieces % THREADS != 0 && i >= pieces) break;
      const int row = i / 17, c = i - 17 * row, j = row % KEYS;
      const bool valid = key0 + j < kv_end;
      const uint8_t* src = tile + (valid ? size_t(j) * token_bytes : 0) + (is_v(row) ? v_off : 0) + piece * c;
      cp_async_piece<piece>(stage + i * piece, src, valid);
    }
    return;
  }
#pragma unroll 4
  for (int i = first; i < pieces; i += THREADS) {
    const int row = i / 17, c = i - 17 * row, j = row % KEYS, kp = key0 + j;
    const bool valid = kp < kv_end;
    const int page = valid ? page_row[kp / kv.page_tokens] : page_row[0];
    const uint8_t* src = head + size_t(page) * kv.page_bytes() + size_t(valid ? kp % kv.page_tokens : 0) * token_bytes;
    cp_async_piece<piece>(stage + i * piece, src + (is_v(row) ? v_off : 0) + piece * c, valid);
  }
}

// Four int8 (one word) to two f16 pairs times the block's scale, exactly as d * q rounded to f16:
// each byte, offset by 128, becomes the low byte of the f16 1024 + u (0x64 high byte), minus 1152
// gives q exactly, and one f16 multiply rounds d * q once.
__device__ __forceinline__ void q8x4_to_half(uint32_t w, __half2 d, uint32_t& lo, uint32_t& hi) {
  const uint32_t u = w ^ 0x80808080u;
  const __half2 bias = __half2half2(__ushort_as_half(0x6480));  // 1152
  const uint32_t a = __byte_perm(u, 0x64646464u, 0x4140), b = __byte_perm(u, 0x64646464u, 0x4342);
  const __half2 x = __hmul2(__hsub2(*reinterpret_cast<const __half2*>(&a), bias), d);
  const __half2 y = __hmul2(__hsub2(*reinterpret_cast<const __half2*>(&b), bias), d);
  lo = *reinterpret_cast<const uint32_t*>(&x);
  hi = *reinterpret_cast<const uint32_t*>(&y);
}

// ROWS staged rows to f16 rows (dst: [ROWS][D + 8]) by THREADS threads from `first`, 8 elements
// (one 16-byte store) a step: four consecutive threads take a block, eight a row's 128 bytes, so
// neither the reads nor the stores conflict in the banks. A thread's 8 elements sit at the same
// place in every row it takes, so its addresses and its realignment are worked out once. The
// quants start 2 bytes past a word in even blocks: two aligned words, or three, and a byte
// permute realign them.
// Elements 8 part .. 8 part + 7 of block c of a staged row as f16 (one 16-byte store): from is
// their first quant's byte in the row, mis its offset past a word, sel the realigning permute.
__device__ __forceinline__ uint4 q8_0_eight(const uint8_t* row, int c, int from, int mis, uint32_t sel) {
  const uint32_t* w = reinterpret_cast<const uint32_t*>(row + (from - mis));
  const uint32_t x0 = w[0], x1 = w[1], x2 = mis ? w[2] : 0u;  // no read past the staging
  const __half2 d = __half2half2(*reinterpret_cast<const __half*>(row + 34 * c));
  uint32_t h[4];
  q8x4_to_half(__byte_perm(x0, x1, sel), d, h[0], h[1]);
  q8x4_to_half(__byte_perm(x1, x2, sel), d, h[2], h[3]);
  return make_uint4(h[0], h[1], h[2], h[3]);
}

template <int D, int ROWS, int THREADS>
__device__ __forceinline__ void dequant_q8_0_rows(const uint8_t* stage, __half* dst, int first) {
  constexpr int ld = D + 8, rb = q8_0_row_bytes<D>(), per_row = 4 * (D / 32), step = THREADS / per_row;
  static_assert(THREADS % per_row == 0 && ROWS % step == 0, "whole rows a round, whole rounds");
  static_assert(rb % 4 == 0, "rows keep the words' alignment");
  const int row0 = first / per_row, c = (first % per_row) / 4, part = first % 4;
  const int from = 34 * c + 2 + 8 * part, mis = from & 2;
  const uint32_t sel = mis ? 0x5432 : 0x3210;
  const uint8_t* src = stage + row0 * rb;
  __half* out = dst + row0 * ld + 32 * c + 8 * part;
#pragma unroll
  for (int r = 0; r < ROWS / step; ++r)
    *reinterpret_cast<uint4*>(out + r * step * ld) = q8_0_eight(src + r * step * rb, c, from, mis, sel);
}

// The same for the wgmma kernel: staged rows 0 .. KEYS - 1 (K) into the swizzled tile ks, rows
// KEYS .. 2 KEYS - 1 (V) into the one after it (sw128_offset; whole 16-byte units, so the swizzle
// keeps the stores free of bank conflicts).
template <int D, int KEYS, int THREADS>
__device__ __forceinline__ void dequant_q8_0_rows_sw128(const uint8_t* stage, uint8_t* ks, int first) {
  constexpr int rb = q8_0_row_bytes<D>(), per_row = 4 * (D / 32), step = THREADS / per_row, tile = KEYS * D * 2;
  static_assert(THREADS % per_row == 0 && KEYS % step == 0, "whole rows a round, whole rounds");
  const int row0 = first / per_row, c = (first % per_row) / 4, part = first % 4;
  const int from = 34 * c + 2 + 8 * part, mis = from & 2;
  const uint32_t sel = mis ? 0x5432 : 0x3210;
#pragma unroll
  for (int r = 0; r < 2 * KEYS / step; ++r) {
    const int row = row0 + r * step;
    *reinterpret_cast<uint4*>(ks + (row / KEYS) * tile + sw128_offset<KEYS>(row % KEYS, 32 * c + 8 * part)) =
        q8_0_eight(stage + row * rb, c, from, mis, sel);
  }
}

// A new running max for a thread's two rows (at least the tile's) and the factors that move O
// and l onto it; a max still at -inf (no key seen) moves them by 0 from nothing.
__device__ __forceinline__ void update_max(float& m_lo, float& m_hi, float mx_lo, float mx_hi, float& corr_lo,
                                           float& corr_hi) {
  const float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
  corr_lo = exp2f(m_lo - (mn_lo == -INFINITY ? 0.0f : mn_lo));
  corr_hi = exp2f(m_hi - (mn_hi == -INFINITY ? 0.0f : mn_hi));
  m_lo = mn_lo;
  m_hi = mn_hi;
}

// 2^x on the special-function unit, results below 2^-126 flushed to zero. exp2f scales such
// arguments to return subnormals: four more instructions an element (a compare, two multiplies
// under it), a fifth of the head-size-256 consumer's instructions per tile (ncu), for values P's
// f16 rounds to zero and that fall below the last bit of l (at least 1 once a row has a key: its
// max's own term).
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

template <int D>
__device__ __forceinline__ void rescale(float (&o)[D / 8][4], float corr_lo, float corr_hi) {
#pragma unroll
  for (int i = 0; i < D / 8; ++i) {
    o[i][0] *= corr_lo;
    o[i][1] *= corr_lo;
    o[i][2] *= corr_hi;
    o[i][3] *= corr_hi;
  }
}

// One tile's online softmax for a warp's 16 rows, S in mma.sync's C fragments (wgmma's too, per
// warp): the causal mask where the tile reaches past a row's position (only tiles past
// warp_first, the first position every valid row reaches), the running max (moved only when a
// row's tile max passes it by kMaxSlack), P rounded to f16 as A fragments of 16 keys, l moved
// onto a new max. Returns whether the max moved; O then needs rescale(o, corr_lo, corr_hi).
// Log2 units (Q is pre-scaled by log2 e).
template <int KK>
__device__ __forceinline__ bool softmax_tile(float (&sacc)[KK / 8][4], uint32_t (&p)[KK / 16][4], int key0, int cq,
                                             int pos_lo, int pos_hi, int warp_first, float& m_lo, float& m_hi,
                                             float& l_lo, float& l_hi, float& corr_lo, float& corr_hi) {
  if (key0 + KK - 1 > warp_first) {
#pragma unroll
    for (int n = 0; n < KK / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int kp = key0 + 8 * n + 2 * cq + e;
        if (kp > pos_lo) sacc[n][e] = -INFINITY;
        if (kp > pos_hi) sacc[n][2 + e] = -INFINITY;
      }
    }
  }
  float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
  for (int n = 0; n < KK / 8; ++n) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      mx_lo = fmaxf(mx_lo, sacc[n][e]);
      mx_hi = fmaxf(mx_hi, sacc[n][2 + e]);
    }
  }
#pragma unroll
  for (int o2 = 1; o2 <= 2; o2 <<= 1) {
    mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, o2));
    mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, o2));
  }
  const bool moved = __any_sync(0xffffffffu, mx_lo > m_lo + kMaxSlack || mx_hi > m_hi + kMaxSlack);
  corr_lo = corr_hi = 1.0f;
  if (moved) update_max(m_lo, m_hi, mx_lo, mx_hi, corr_lo, corr_hi);
  const float base_lo = m_lo == -INFINITY ? 0.0f : m_lo, base_hi = m_hi == -INFINITY ? 0.0f : m_hi;
  float sum_lo = 0.0f, sum_hi = 0.0f;
#pragma unroll
  for (int n = 0; n < KK / 8; ++n) {
    const float p0 = exp2_ftz(sacc[n][0] - base_lo), p1 = exp2_ftz(sacc[n][1] - base_lo);
    const float p2 = exp2_ftz(sacc[n][2] - base_hi), p3 = exp2_ftz(sacc[n][3] - base_hi);
    sum_lo += p0 + p1;
    sum_hi += p2 + p3;
    p[n / 2][(n % 2) * 2 + 0] = pack_half2(p0, p1);
    p[n / 2][(n % 2) * 2 + 1] = pack_half2(p2, p3);
  }
  l_lo = l_lo * corr_lo + sum_lo;
  l_hi = l_hi * corr_hi + sum_hi;
  return moved;
}

// grid: (query tiles, n_kv_heads, splits), WARPS warps of 16 (token, head) rows each. With
// splits == 1 writes out; else partial results (unnormalised O, running max m in log2 units,
// sum l) to the workspace for the merge kernel.
template <int D, KvElem E, int KK, bool SPLIT_KV, int WARPS>
__global__ void __launch_bounds__(32 * WARPS) flash_attention_kernel(KvLayout kv, const uint8_t* __restrict__ base,
                                                                   AttentionBatch b, const float* __restrict__ q,
                                                                   float* __restrict__ out, int n_head, float scale,
                                                                   float* __restrict__ ws) {
  pdl_enter();
  constexpr int ld = D + 8, kCtaRows = 16 * WARPS, kCtaThreads = 32 * WARPS;  // (token, head) rows, threads
  extern __shared__ __align__(16) unsigned char smem_raw[];
  // Q [kCtaRows][ld], then K [KK][ld] and V [KK][ld]: one of each, or two (f16 double-buffered).
  __half* qs = reinterpret_cast<__half*>(smem_raw);
  __half* kv_buf = qs + kCtaRows * ld;
  __shared__ int row_pos[kCtaRows];
  __shared__ int tile_kv_end;

  const int group = n_head / kv.n_kv_heads;
  const int tokens_per_tile = kCtaRows / group;
  int s, t0, t1;
  if (!find_row_tile(b, 1, tokens_per_tile, blockIdx.x, s, t0, t1)) return;
  const int g = blockIdx.y, split = blockIdx.z, n_splits = gridDim.z;

  // Q rows (pre-scaled by scale * log2 e, rounded to f16) and each row's position.
  const float qscale = scale * kLog2e;
  for (int i = threadIdx.x; i < kCtaRows * (D / 4); i += kCtaThreads) {
    const int r = i / (D / 4), c = 4 * (i % (D / 4));
    const int t = t0 + r / group, h = g * group + r % group;
    float4 x = make_float4(0, 0, 0, 0);
    if (r < tokens_per_tile * group && t < t1) x = *reinterpret_cast<const float4*>(q + (size_t(t) * n_head + h) * D + c);
    *reinterpret_cast<uint2*>(qs + r * ld + c) = make_uint2(pack_half2(x.x * qscale, x.y * qscale),
                                                          pack_half2(x.z * qscale, x.w * qscale));
  }
  if (threadIdx.x < kCtaRows) {
    const int r = threadIdx.x, t = t0 + r / group;
    row_pos[r] = (r < tokens_per_tile * group && t < t1 && b.seq[t] >= 0) ? b.pos[t] : -1;
  }
  if (threadIdx.x == 0) {
    int mx = -1;
    for (int t = t0; t < t1; ++t) mx = max(mx, b.pos[t]);
    tile_kv_end = mx + 1;
  }
  __syncthreads();
  const int kv_end = tile_kv_end;
  const int n_tiles = (kv_end + KK - 1) / KK;
  const int per_split = (n_tiles + n_splits - 1) / n_splits;
  const int tile_begin = split * per_split, tile_end = min(n_tiles, tile_begin + per_split);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int gq = lane / 4, cq = lane % 4;  // mma fragment row group, column pair
  const int r_lo = 16 * warp + gq, r_hi = r_lo + 8;
  const int pos_lo = row_pos[r_lo], pos_hi = row_pos[r_hi];
  // The last position any of this warp's rows attends to (-1: no valid row): tiles beyond it
  // are fully masked for this warp, which then only helps load them (decode: 3 of 4 warps).
  int warp_last = max(pos_lo, pos_hi);
  // The first position every valid row of the warp reaches: tiles wholly at or before it need
  // no causal mask (most of them at depth; the mask's compares and selects cost ALU issue slots).
  int warp_first = min(pos_lo < 0 ? INT_MAX : pos_lo, pos_hi < 0 ? INT_MAX : pos_hi);
#pragma unroll
  for (int o2 = 16; o2 > 0; o2 >>= 1) {
    warp_last = max(warp_last, __shfl_xor_sync(0xffffffffu, warp_last, o2));
    warp_first = min(warp_first, __shfl_xor_sync(0xffffffffu, warp_first, o2));
  }
  const int32_t* page_row = b.pages + int64_t{s} * b.max_pages_per_seq;

  // q8_0 pages at head size 128: the warp's Q fragments stay in registers for every tile (32 of
  // them), which spares a shared-memory load per kk and tile. Measured on the H200 (4096 tokens at
  // depth 28672, 32 heads over 8): q8_0 11.57 -> 10.68 ms, but f16 8.43 -> 10.09, so f16 keeps
  // loading them; at 256 they would spill.
  constexpr bool q_in_regs = E == KvElem::q8_0 && D == 128;
  uint32_t qa[q_in_regs ? D / 16 : 1][4];
  if constexpr (q_in_regs) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) ldmatrix_x4(qa[kk], qs + (16 * warp + (lane % 16)) * ld + 16 * kk + 8 * (lane / 16));
  }

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;

  // Three pipelines. f16, SPLIT_KV: K and V in buffers of their own; V(t)'s copy is in flight
  // while S = Q K(t)^T runs, K(t+1)'s while the softmax and P V(t) run. f16 otherwise: whole tiles
  // double-buffered (the next tile's copy in flight while this one is used). q8_0: the raw rows
  // double-buffered the same way after one f16 tile, which each tile is dequantized into. Warps
  // past their last key only load and wait.
  constexpr bool split_kv = E == KvElem::f16 && SPLIT_KV;
  uint8_t* stage = reinterpret_cast<uint8_t*>(kv_buf + 2 * KK * ld);  // q8_0: [2][q8_0_stage_bytes]
  if (tile_begin < tile_end) {
    if constexpr (split_kv)
      issue_f16_rows<D, KK, kCtaThreads>(kv, base, page_row, g, tile_begin * KK, kv_end, kv_buf, false, threadIdx.x);
    else if constexpr (E == KvElem::f16)
      issue_f16_tile<D, KK, kCtaThreads>(kv, base, page_row, g, tile_begin * KK, kv_end, kv_buf, kv_buf + KK * ld, threadIdx.x);
    else
      issue_q8_0_tile<D, KK, kCtaThreads>(kv, base, page_row, g, tile_begin * KK, kv_end, stage, threadIdx.x);
  }
  cp_async_commit();
  for (int tile = tile_begin; tile < tile_end; ++tile) {
    const int key0 = tile * KK;
    const int buf = E == KvElem::f16 && !split_kv ? (tile - tile_begin) & 1 : 0;
    __half* ks = kv_buf + buf * 2 * KK * ld;
    __half* vs = ks + KK * ld;
    if constexpr (split_kv) {
      issue_f16_rows<D, KK, kCtaThreads>(kv, base, page_row, g, key0, kv_end, vs, true, threadIdx.x);
      cp_async_commit();
      cp_async_wait<1>();  // K(t) has landed
    } else if constexpr (E == KvElem::f16) {
      if (tile + 1 < tile_end) {
        __half* nk = kv_buf + (buf ^ 1) * 2 * KK * ld;
        issue_f16_tile<D, KK, kCtaThreads>(kv, base, page_row, g, key0 + KK, kv_end, nk, nk + KK * ld, threadIdx.x);
      }
      cp_async_commit();
      cp_async_wait<1>();  // this tile's copy has landed (the next one may still be in flight)
    } else {
      constexpr int stage_bytes = q8_0_stage_bytes<D, KK>();
      const int sb = (tile - tile_begin) & 1;
      if (tile + 1 < tile_end)
        issue_q8_0_tile<D, KK, kCtaThreads>(kv, base, page_row, g, key0 + KK, kv_end, stage + (sb ^ 1) * stage_bytes, threadIdx.x);
      cp_async_commit();
      cp_async_wait<1>();
      __syncthreads();  // every thread's pieces of this tile have landed
      dequant_q8_0_rows<D, 2 * KK, kCtaThreads>(stage + sb * stage_bytes, ks, threadIdx.x);  // vs follows ks
    }
    __syncthreads();
    const bool active = key0 <= warp_last;
    if (!active && !split_kv) {
      __syncthreads();
      continue;
    }

    // S = Q K^T for this warp's 16 rows x KK keys. With few key tiles (KK 32) each accumulator
    // would be a chain of D/16 dependent mma; even and odd kk go to two accumulators (chains half
    // as long, summed at the end).
    constexpr int kChains = KK / 8 >= 8 ? 1 : 2;
    float sacc[KK / 8][4], sacc2[KK / 8][4];
    if (active) {
#pragma unroll
      for (int n = 0; n < KK / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) sacc[n][e] = sacc2[n][e] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t a_smem[4];
        if constexpr (!q_in_regs) ldmatrix_x4(a_smem, qs + (16 * warp + (lane % 16)) * ld + 16 * kk + 8 * (lane / 16));
        const uint32_t* a = q_in_regs ? qa[q_in_regs ? kk : 0] : a_smem;
        float(*acc)[4] = kChains == 2 && kk % 2 ? sacc2 : sacc;
#pragma unroll
        for (int n = 0; n < KK / 8; n += 2) {
          uint32_t bk[4];  // b0,b1 of key tile n, then of n+1
          ldmatrix_x4(bk, ks + (8 * n + (lane % 8) + 8 * (lane / 16)) * ld + 16 * kk + 8 * ((lane / 8) % 2));
          mma_f16(acc[n], a, bk[0], bk[1]);
          mma_f16(acc[n + 1], a, bk[2], bk[3]);
        }
      }
      if constexpr (kChains == 2) {
#pragma unroll
        for (int n = 0; n < KK / 8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) sacc[n][e] += sacc2[n][e];
      }
    }
    if constexpr (split_kv) {
      __syncthreads();  // every warp is done with K(t)
      if (tile + 1 < tile_end) issue_f16_rows<D, KK, kCtaThreads>(kv, base, page_row, g, key0 + KK, kv_end, ks, false, threadIdx.x);
      cp_async_commit();
    }

    // Causal mask (tiles crossing the diagonal only), online softmax (log2 units).
    uint32_t p[KK / 16][4];  // P as A fragments, one per 16 keys
    if (active) {
      float corr_lo, corr_hi;
      if (softmax_tile<KK>(sacc, p, key0, cq, pos_lo, pos_hi, warp_first, m_lo, m_hi, l_lo, l_hi, corr_lo, corr_hi))
        rescale<D>(o, corr_lo, corr_hi);
    }
    if constexpr (split_kv) {
      cp_async_wait<1>();  // V(t) has landed
      __syncthreads();
    }

    // O += P V.
    if (active) {
#pragma unroll
      for (int kk = 0; kk < KK / 16; ++kk) {
#pragma unroll
        for (int n = 0; n < D / 8; n += 2) {
          uint32_t bv[4];  // b0,b1 of d tile n, then of n+1
          ldmatrix_x4_trans(bv, vs + (16 * kk + (lane % 8) + 8 * ((lane / 8) % 2)) * ld + 8 * n + 8 * (lane / 16));
          mma_f16(o[n], p[kk], bv[0], bv[1]);
          mma_f16(o[n + 1], p[kk], bv[2], bv[3]);
        }
      }
    }
    __syncthreads();  // this buffer (split K/V: V(t)) is overwritten next
  }

#pragma unroll
  for (int o2 = 1; o2 <= 2; o2 <<= 1) {
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, o2);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, o2);
  }
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = half ? r_hi : r_lo;
    if (row_pos[r] < 0) continue;
    const int t = t0 + r / group, h = g * group + r % group;
    const float l = half ? l_hi : l_lo, m = half ? m_hi : m_lo;
    if (n_splits == 1) {
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      float* dst = out + (size_t(t) * n_head + h) * D;
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<float2*>(dst + 8 * n + 2 * cq) = make_float2(o[n][2 * half] * inv, o[n][2 * half + 1] * inv);
    } else {
      const size_t row = size_t(t) * n_head + h, n_rows = size_t(b.n_tokens) * n_head;
      float* dst = ws + (size_t(split) * n_rows + row) * D;
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<float2*>(dst + 8 * n + 2 * cq) = make_float2(o[n][2 * half], o[n][2 * half + 1]);
      if (cq == 0) {
        float* ml = ws + size_t(n_splits) * n_rows * D;
        ml[2 * (size_t(split) * n_rows + row)] = m;
        ml[2 * (size_t(split) * n_rows + row) + 1] = l;
      }
    }
  }
}

// ---- prefill on Hopper: warpgroup multiplies (wgmma) -----------------------------------------
// Head sizes 128 and 256, calls past the split-KV size. A CTA of two warpgroups takes 128
// (token, head) rows of one sequence that share one KV head (64 a warpgroup) and walks its keys
// in tiles of 64. Per tile and warpgroup: S = Q K^T with both operands in shared memory, the
// online softmax on S's accumulators (softmax_tile, per warp), O += P V with P from registers.
// The tensor cores read a K or V tile once per 64 rows, where the mma.sync kernel's warps each
// read it for their 16 rows through ldmatrix; that traffic capped it near 220 TFLOP/s.
// The 128 rows are the next 128 of the sequence's rows counted token by token (find_row_tile),
// so a CTA may begin and end inside a token: with groups that do not divide 128 (the 27B's 6
// heads a KV head) CTAs of whole tokens left rows idle (126 of 128, and 2% more CTAs). Measured
// on an H100 (keel_cuda_bench attnp, 24 heads over 4 of 256, 16,384 tokens at depth 0 / 28,672 /
// 163,840, TFLOP/s, whole tokens -> rows across tokens, run in both orders): 585.7 / 540.2 /
// 529.8 -> 595.5 / 575.3 / 550.4 and 587.9 / 559.0 / 530.0 -> 596.8 / 577.2 / 551.9; the 27B's
// 173,000-token prefill 5,758.5 -> 5,818.2 tok/s, the same output tokens.
// CTAs are started from a sequence's last rows back: those walk the most keys (causal), so the
// longest run first and the last wave is of the shortest. Measured on an H100 (same sizes, in
// turn, first rows first -> last rows first, two rounds): 602.9 / 564.8 / 570.0 -> 613.6 / 588.6
// / 586.3 and 602.9 / 584.3 / 568.6 -> 621.5 / 576.4 / 583.2 TFLOP/s; the 173,000-token prefill
// 5,957.0 and 5,944.4 -> 5,966.5 tok/s (at the power cap), the same output tokens.
// Q, K and V sit in shared memory in wgmma's 128-byte swizzled layout (sw128_offset): Q and K as
// K-major operands (the head dimension contiguous), V as the N-major B operand of P V.
//
// The next tile's copy flies while one is used (f16: K/V tile pairs double-buffered; q8_0: raw
// rows double-buffered, dequantized into one tile pair). The warpgroups wait for their own
// multiplies; the other warpgroup's softmax fills the tensor cores' gaps. Issuing the next copy
// only after the barrier that says this tile landed (one barrier a tile: the buffer it takes is
// free by then) measured slower for f16, the copy's head start mattering more than the barrier
// (8.15 -> 8.46 ms and 5.64 -> 5.77 at the sizes below; q8_0 within 1.5%). Measured on the H200,
// FlashAttention-3's overlap within a warpgroup (S of tile j issued with P V of tile j-1, K and V
// in buffers of their own, one barrier a tile) was slower: 4096 tokens at depth 28672, 24 heads
// over 4 of 256, 8.46 -> 10.24 ms; 32 over 8 of 128, 7.62 -> 9.27. It was slower in the
// warp-specialized kernel below too (S of tile j + 1 issued behind P V of tile j): 532 -> 465
// TFLOP/s at the same size. Two more that lost there (H200, 4096 tokens at depth 172000, 24 heads
// over 4 of 256, each A/B in one run): the consumer warpgroups taking turns to issue through named
// barriers (FlashAttention-3's ping-pong), 489 -> 431 TFLOP/s with turns for S = Q Kᵀ alone, 382
// with turns for P V too (the 173,000-token 27B prefill 5,243 -> 5,006 / 4,739 tok/s); tiles of 80
// keys (wgmma n80, 225 KB of shared memory; one tile in four then straddles a 256-token page),
// 478 -> 339 (173,000 tokens 5,153 -> 4,515).
constexpr int kWgKeys = 64, kWgRows = 64, kWgGroups = 2, kWgThreads = 128 * kWgGroups;

// Dynamic shared memory: Q of both warpgroups, K/V tiles (f16: two of each; q8_0: one of each,
// then two stagings of raw rows), 1024 bytes to align them.
template <int D, KvElem E>
constexpr size_t wgmma_smem_bytes() {
  return 1024 + size_t(kWgGroups * kWgRows + (E == KvElem::f16 ? 4 : 2) * kWgKeys) * D * sizeof(__half) +
         (E == KvElem::q8_0 ? 2 * size_t(q8_0_stage_bytes<D, kWgKeys>()) : 0);
}

// The K and V rows of a tile into swizzled tiles ks and vs (keys at or beyond kv_end zero-filled),
// by the CTA's two warpgroups; completes with the caller's commit / wait. Page lookups as
// issue_f16_rows.
template <int D>
__device__ __forceinline__ void issue_f16_tile_sw128(const KvLayout& kv, const uint8_t* base, const int32_t* page_row,
                                                     int g, int key0, int kv_end, uint8_t* ks, uint8_t* vs) {
  constexpr int pieces = D / 8, THREADS = kWgThreads;  // 16 bytes each
  static_assert(kWgKeys * pieces % THREADS == 0, "whole rounds of copies");
  const size_t token_bytes = kv.token_bytes(), v_off = size_t(kv.page_tokens) * token_bytes;
  const uint8_t* head = base + size_t(g) * kv.row_bytes();
  const bool whole = kv.page_tokens % kWgKeys == 0;  // one page holds the whole tile
  const uint8_t* tile =
      head + size_t(page_row[whole ? key0 / kv.page_tokens : 0]) * kv.page_bytes() + size_t(key0 % kv.page_tokens) * token_bytes;
#pragma unroll
  for (int i = threadIdx.x; i < kWgKeys * pieces; i += THREADS) {
    const int j = i / pieces, c = i % pieces, kp = key0 + j;
    const bool valid = kp < kv_end;
    const uint8_t* row = tile + size_t(j) * token_bytes;
    if (!whole) row = head + size_t(page_row[valid ? kp / kv.page_tokens : 0]) * kv.page_bytes() +
                      size_t(kp % kv.page_tokens) * token_bytes;
    const uint8_t* src = (valid ? row : head) + 16 * c;
    const int dst = sw128_offset<kWgKeys>(j, 8 * c);
    cp_async16(ks + dst, src, valid);
    cp_async16(vs + dst, src + v_off, valid);
  }
}

// The K (or V, `value`) rows of a tile into the swizzled tile dst by the producer warpgroup's
// 128 threads (t from 0), keys at or beyond kv_end zero-filled; completes with the producer's
// mbarrier arrive. Thread t always copies 16-byte piece t % (D / 8) of its rows, so its source
// and destination move by constants from row to row: issue_f16_tile_sw128 worked each copy's
// addresses out from its index, and the producer ran twice the instructions of a consumer warp
// per tile (ncu, head size 256), competing with the consumers for issue slots.
template <int D>
__device__ __forceinline__ void issue_f16_rows_ws(const KvLayout& kv, const uint8_t* base, const int32_t* page_row, int g,
                                                  int key0, int kv_end, uint8_t* dst, bool value, int t) {
  constexpr int pieces = D / 8, rows_per_round = 128 / pieces;
  static_assert(128 % pieces == 0 && kWgKeys % rows_per_round == 0, "whole rounds of copies");
  const size_t token_bytes = kv.token_bytes();
  const int c = t % pieces, j0 = t / pieces;
  const uint8_t* head =
      base + size_t(g) * kv.row_bytes() + (value ? size_t(kv.page_tokens) * token_bytes : 0) + 16 * c;
  if (kv.page_tokens % kWgKeys == 0) {  // one page holds the whole tile
    const uint8_t* row = head + size_t(page_row[key0 / kv.page_tokens]) * kv.page_bytes() +
                         size_t(key0 % kv.page_tokens + j0) * token_bytes;
    const size_t step = rows_per_round * token_bytes;
#pragma unroll 2
    for (int r = 0; r < kWgKeys / rows_per_round; ++r, row += step) {
      const int j = j0 + rows_per_round * r;
      cp_async16(dst + sw128_offset<kWgKeys>(j, 8 * c), key0 + j < kv_end ? row : head, key0 + j < kv_end);
    }
  } else {
#pragma unroll 2
    for (int r = 0; r < kWgKeys / rows_per_round; ++r) {
      const int j = j0 + rows_per_round * r, kp = key0 + j;
      const bool valid = kp < kv_end;
      const uint8_t* row =
          head + size_t(page_row[valid ? kp / kv.page_tokens : 0]) * kv.page_bytes() + size_t(kp % kv.page_tokens) * token_bytes;
      cp_async16(dst + sw128_offset<kWgKeys>(j, 8 * c), valid ? row : head, valid);
    }
  }
}

#if KEEL_WGMMA
// S = Q K^T for a warpgroup's 64 rows and a tile's 64 keys: D / 16 steps of 16 along the head
// dimension (32 bytes into each 128-byte row; chunks of 64 rows x 128 bytes for Q and K alike).
// Issued and committed, not awaited.
// The descriptors are made once and moved by each step's offset (desc_add), which the compiler
// folds into constants: made per step, their address arithmetic came between the multiplies and
// was the largest part of the consumer's instructions (ncu, head size 256).
template <int D>
__device__ __forceinline__ void issue_qk(float (&sacc)[kWgKeys / 8][4], const uint8_t* q, const uint8_t* k) {
  const uint64_t qd = wgmma_desc(q, 16, 1024), kd = wgmma_desc(k, 16, 1024);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const uint32_t off = (kk / 4) * (64 * 128) + (kk % 4) * 32;
    wgmma_ss<kWgKeys>(&sacc[0][0], desc_add(qd, off), desc_add(kd, off), kk > 0);
  }
  wgmma_commit();
}

// O += P V: kWgKeys / 16 steps of 16 keys (2048 bytes of V's rows); V is the N-major B operand,
// its 64-column chunks kWgKeys x 128 bytes apart, its groups of 8 keys 1024 bytes apart. Issued
// and committed, not awaited.
template <int D>
__device__ __forceinline__ void issue_pv(float (&o)[D / 8][4], const uint32_t (&p)[kWgKeys / 16][4], const uint8_t* v) {
  const uint64_t vd = wgmma_desc(v, kWgKeys * 128, 1024);
#pragma unroll
  for (int kk = 0; kk < kWgKeys / 16; ++kk) wgmma_rs_mn<D>(&o[0][0], p[kk], desc_add(vd, kk * 2048), 1);
  wgmma_commit();
}

// A tensor copy brings a tile's keys past kv_end as the pool holds them: zeros, a freed page's
// old values, or anything at all. Their probabilities are exactly 0, but 0 x inf or 0 x NaN in
// P V is NaN, so the last tile's V rows from `written` on are zeroed by the 256 consumer threads
// (t from 0), which then wait for each other (named barrier 1) before either multiplies.
template <int D>
__device__ __forceinline__ void zero_unwritten_rows(uint8_t* v, int written, int t) {
  const int units = (kWgKeys - written) * (D / 64) * 8;  // 16 bytes each: 8 a row of a 64-column chunk
  for (int i = t; i < units; i += kWgThreads) {
    const int u = i % 8, r = written + (i / 8) % (kWgKeys - written), c = i / 8 / (kWgKeys - written);
    *reinterpret_cast<uint4*>(v + c * kWgKeys * 128 + r * 128 + u * 16) = make_uint4(0, 0, 0, 0);
  }
  fence_proxy_async();
  asm volatile("bar.sync 1, %0;\n" ::"n"(kWgThreads) : "memory");
}

// fence_operand on every accumulator of a fragment array.
template <int N, int M>
__device__ __forceinline__ void fence_operands(float (&x)[N][M]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int e = 0; e < M; ++e) fence_operand(x[i][e]);
}

#endif  // KEEL_WGMMA

// CTAs an SM the registers are bounded for: two at head size 128 with f16 pages (128 registers,
// their shared memory fits twice). Measured on the H200, 4096 tokens at depth 28672, 32 heads
// over 8: one CTA 7.62 ms (271 TFLOP/s), two 5.62 (367). q8_0 pages would spill at 128. Head
// size 256 keeps one: a warpgroup a CTA with tiles of 32 keys (two CTAs fit) measured 13.3 ms
// against 8.2 for 24 heads over 4.
template <int D, KvElem E>
constexpr int wgmma_ctas_per_sm() {
  return D == 128 && E == KvElem::f16 ? 2 : 1;
}

// Warp-specialized variant (WS, f16 pages): a third warpgroup, the producer, copies the K and V
// rows of each tile into two stages and signals each landing on a "full" mbarrier; the two
// consumer warpgroups wait on it and release K and V each on an "empty" mbarrier as soon as their
// multiply with it is done. No CTA barrier in the loop: each warpgroup runs at its own pace, so
// one's softmax overlaps the other's multiplies (FlashAttention-3's producer / consumer split).
// The copies are TMA tensor copies issued by the producer's first thread (kv_tensor_map), or,
// where the pool cannot be such a tensor, cp.async by its 128 threads (cp.async.mbarrier.arrive).
// Registers are allocated per warpgroup of the block, so the producer gives most of its share to
// the consumers (setmaxnreg: 40 + 2 x 232 of 3 x 168 per thread).
// The tensor copies measured on an H100 (keel_cuda_bench attnp, 24 heads over 4 of 256, 4096
// tokens at depth 0 / 28672 / 172000, TFLOP/s, two rounds): threads' copies 376.8 / 548.2 / 506.9
// and 377.8 / 548.6 / 496.7, tensor copies 440.4 / 647.3 / 583.0 and 438.5 / 643.5 / 596.9;
// Qwen3.5-27B Q5_K_M prefill of 173,000 tokens (keel bench, one call) 5,545 -> 5,948 tok/s.
// Waiting on a tensor copy's mbarrier is all wgmma needs (both are the async proxy): the
// fence.proxy.async the threads' copies need is skipped for them (H100, same sizes, two rounds:
// 627.6 / 572.3 and 626.7 / 579.2 -> 631.2 / 605.6 and 625.9 / 583.4). Prefetching tiles 2, 4
// or 8 ahead into L2 (cp.async.bulk.prefetch.tensor by the producer) measured no faster there
// (4 ahead: 612.3 / 568.4 and 612.7 / 582.3; the 173,000-token prefill 5,873 -> 5,768 tok/s).
// FlashAttention-3's in-warpgroup overlap on top of them (S(j) issued before O += P(j-1) V(j-1),
// tile j's softmax while that runs) measured slower there: 355.2 / 515.6 / 505.1 and 354.2 /
// 519.2 / 503.3, the 27B at 173,000 tokens 5,525 tok/s.
// CTAs in clusters of two (adjacent query tiles of one KV head) sharing every K/V tile, each
// producer copying half of its boxes into both CTAs (TMA multicast) and each consumer warp
// releasing a stage in both, halved the K/V traffic from L2 and measured slower on an H100 (the
// attention tests passed, the 173,000-token job's output was the same bytes): the 27B's 173,000
// tokens 5,850 -> 5,282 tok/s. A pair runs at the pace of the slower of its two CTAs.
// Taken where it measured faster on the H200 (4096 tokens at depth 28672 / 0): head size 256,
// 24 heads over 4, 8.19 -> 7.66 ms and 0.780 -> 0.706 ms. At 128 (32 over 8) it lost, 5.66 ->
// 6.53 ms: that kernel runs two CTAs an SM, which already overlap one's softmax with the other's
// multiplies. K and V released apart, with the producer's cheaper copies (issue_f16_rows_ws) and
// the multiplies' descriptors made once a tile (issue_qk), took head size 256 from 403 to 525-532
// TFLOP/s at depth 28672, 405 to 480-484 at 172000 and 291 to 365 at 0 (same sizes).
template <int D, KvElem E>
constexpr bool wgmma_warp_specialized() {
  return D == 256 && E == KvElem::f16;
}
template <bool WS>
constexpr int wgmma_threads() {
  return kWgThreads + (WS ? 128 : 0);
}

// grid: (query tiles, n_kv_heads). Writes out, and with f16 out rounded to f16 there too (the
// output projection's GEMM input, f32_to_f16's bits).
template <int D, KvElem E, int MIN_CTAS, bool WS = false>
__global__ void __launch_bounds__(wgmma_threads<WS>(), MIN_CTAS)
    flash_wgmma_kernel(KvLayout kv, const uint8_t* __restrict__ base, AttentionBatch b, const float* __restrict__ q,
                       float* __restrict__ out, int n_head, float scale, __half* __restrict__ f16,
                       const __grid_constant__ CUtensorMap kv_map, bool kv_tma) {
#if KEEL_WGMMA
  pdl_enter();
  constexpr int kCtaRows = kWgGroups * kWgRows, kQBytes = kWgRows * D * 2, kTileBytes = kWgKeys * D * 2;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  uint8_t* qs = smem;                            // [warpgroup] 64 x D
  uint8_t* kv_buf = smem + kWgGroups * kQBytes;  // f16: K [2], then V [2]; q8_0: K, V, the stagings
  __shared__ int row_pos[kCtaRows];
  __shared__ int tile_kv_end;
  // WS, per stage: its K / V rows landed (full), every consumer done with them (empty)
  __shared__ __align__(8) uint64_t full_k[2], full_v[2], empty_k[2], empty_v[2];
  static_assert(!WS || E == KvElem::f16, "the producer copies f16 pages");
  constexpr int kThreadsAll = wgmma_threads<WS>();

  const int group = n_head / kv.n_kv_heads;
  int s, r0, r1;
  if (!find_row_tile(b, group, kCtaRows, gridDim.x - 1 - blockIdx.x, s, r0, r1)) return;  // the last rows first
  const int g = blockIdx.y;
  if (WS && threadIdx.x == 0) {
    for (int st = 0; st < 2; ++st) {
      // the producer's threads once their copies land, or its first thread's tensor copies
      mbarrier_init_count(&full_k[st], kv_tma ? 1 : 128);
      mbarrier_init_count(&full_v[st], kv_tma ? 1 : 128);
      mbarrier_init_count(&empty_k[st], kWgThreads);  // every consumer thread, once done with them
      mbarrier_init_count(&empty_v[st], kWgThreads);
    }
  }

  // Q rows (pre-scaled by scale * log2 e, rounded to f16) and each row's position.
  const float qscale = scale * kLog2e;
  for (int i = threadIdx.x; i < kCtaRows * (D / 4); i += kThreadsAll) {
    const int r = i / (D / 4), c = 4 * (i % (D / 4)), row = r0 + r;
    const int t = row / group, h = g * group + row % group;
    float4 x = make_float4(0, 0, 0, 0);
    if (row < r1) x = *reinterpret_cast<const float4*>(q + (size_t(t) * n_head + h) * D + c);
    *reinterpret_cast<uint2*>(qs + (r / kWgRows) * kQBytes + sw128_offset<kWgRows>(r % kWgRows, c)) =
        make_uint2(pack_half2(x.x * qscale, x.y * qscale), pack_half2(x.z * qscale, x.w * qscale));
  }
  if (threadIdx.x < kCtaRows) {
    const int row = r0 + threadIdx.x, t = row / group;
    row_pos[threadIdx.x] = (row < r1 && b.seq[t] >= 0) ? b.pos[t] : -1;
  }
  if (threadIdx.x == 0) {
    int mx = -1;
    for (int t = r0 / group; t <= (r1 - 1) / group; ++t) mx = max(mx, b.pos[t]);
    tile_kv_end = mx + 1;
  }
  fence_proxy_async();  // Q's stores, for wgmma's reads
  __syncthreads();
  const int kv_end = tile_kv_end;
  const int n_tiles = (kv_end + kWgKeys - 1) / kWgKeys;
  const int32_t* page_row = b.pages + int64_t{s} * b.max_pages_per_seq;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, wg = warp / 4;
  if constexpr (WS) {
    // The producer: tile j's K rows into stage j % 2 once the consumers have multiplied tile j -
    // 2's K (before its softmax), its V rows once they are done with tile j - 2's V. A stage freed
    // only as a whole, after P V, left consumers waiting for K: 22% of their stall samples (ncu).
    if (wg == kWgGroups) {
      asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
      const int t = threadIdx.x - kWgThreads;
      if (kv_tma) {  // one thread, a tensor copy per 64 columns of K or V
        if (t != 0) return;
        for (int j = 0; j < n_tiles; ++j) {
          uint8_t* k = kv_buf + (j & 1) * 2 * kTileBytes;
          const uint32_t parity = uint32_t((j >> 1) - 1) & 1u;
          const int key0 = j * kWgKeys;
          const int row = page_row[key0 / kv.page_tokens] * 2 * kv.page_tokens + key0 % kv.page_tokens;  // K's
          if (j >= 2) mbarrier_wait(&empty_k[j & 1], parity);
          mbarrier_expect_tx(&full_k[j & 1], kTileBytes);
#pragma unroll
          for (int c = 0; c < D / 64; ++c) tensor_copy_3d(k + c * kWgKeys * 128, &kv_map, 64 * c, g, row, &full_k[j & 1]);
          if (j >= 2) mbarrier_wait(&empty_v[j & 1], parity);
          mbarrier_expect_tx(&full_v[j & 1], kTileBytes);
#pragma unroll
          for (int c = 0; c < D / 64; ++c)
            tensor_copy_3d(k + kTileBytes + c * kWgKeys * 128, &kv_map, 64 * c, g, row + kv.page_tokens, &full_v[j & 1]);
        }
        return;
      }
      for (int j = 0; j < n_tiles; ++j) {
        uint8_t* k = kv_buf + (j & 1) * 2 * kTileBytes;
        const uint32_t parity = uint32_t((j >> 1) - 1) & 1u;
        if (j >= 2) mbarrier_wait(&empty_k[j & 1], parity);
        issue_f16_rows_ws<D>(kv, base, page_row, g, j * kWgKeys, kv_end, k, false, t);
        cp_async_mbarrier_arrive(&full_k[j & 1]);
        if (j >= 2) mbarrier_wait(&empty_v[j & 1], parity);
        issue_f16_rows_ws<D>(kv, base, page_row, g, j * kWgKeys, kv_end, k + kTileBytes, true, t);
        cp_async_mbarrier_arrive(&full_v[j & 1]);
      }
      cp_async_wait<0>();
      return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
  }
  const int cq = lane % 4;
  const int r_lo = 16 * warp + lane / 4, r_hi = r_lo + 8;  // warp w of warpgroup wg: rows 64 wg + 16 (w % 4) ..
  const int pos_lo = row_pos[r_lo], pos_hi = row_pos[r_hi];
  int warp_first = min(pos_lo < 0 ? INT_MAX : pos_lo, pos_hi < 0 ? INT_MAX : pos_hi);
#pragma unroll
  for (int o2 = 16; o2 > 0; o2 >>= 1) warp_first = min(warp_first, __shfl_xor_sync(0xffffffffu, warp_first, o2));
  // The tiles up to the last position any row of the warpgroup attends to: its multiplies are
  // collective, so it skips (only loads) the tiles past them as a whole.
  int wg_last = -1;
  for (int r = 0; r < kWgRows; ++r) wg_last = max(wg_last, row_pos[kWgRows * wg + r]);
  const int wg_tiles = min(n_tiles, (wg_last + kWgKeys) / kWgKeys);
  const uint8_t* my_q = qs + wg * kQBytes;

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;
  float sacc[kWgKeys / 8][4];
  uint32_t p[kWgKeys / 16][4];  // P as A fragments, one per 16 keys

  // Tile j's copy goes to buffer j % 2: f16, the K/V tile pair itself; q8_0, its raw rows, which
  // are dequantized into the one tile pair.
  constexpr int kStageBytes = q8_0_stage_bytes<D, kWgKeys>();
  uint8_t* stage = kv_buf + 2 * kTileBytes;  // q8_0
  auto issue = [&](int j) {
    if constexpr (E == KvElem::f16) {
      uint8_t* k = kv_buf + (j & 1) * 2 * kTileBytes;
      issue_f16_tile_sw128<D>(kv, base, page_row, g, j * kWgKeys, kv_end, k, k + kTileBytes);
    } else {
      issue_q8_0_tile<D, kWgKeys, kWgThreads>(kv, base, page_row, g, j * kWgKeys, kv_end, stage + (j & 1) * kStageBytes,
                                              threadIdx.x);
    }
  };
  // One tile's steps, each by the warpgroup as a whole.
  auto multiply_qk = [&](const uint8_t* ks) {  // S = Q Kᵀ, awaited
    wgmma_fence();
    issue_qk<D>(sacc, my_q, ks);
    wgmma_wait<0>();
    fence_operands(sacc);
  };
  auto softmax = [&](int j) {  // P from S; O rescaled where the max moved
    float corr_lo, corr_hi;
    if (softmax_tile<kWgKeys>(sacc, p, j * kWgKeys, cq, pos_lo, pos_hi, warp_first, m_lo, m_hi, l_lo, l_hi, corr_lo,
                              corr_hi))
      rescale<D>(o, corr_lo, corr_hi);
  };
  auto multiply_pv = [&](const uint8_t* vs) {  // O += P V, awaited
    fence_operands(o);
    wgmma_fence();
    issue_pv<D>(o, p, vs);
    wgmma_wait<0>();
    fence_operands(o);
  };
  auto attend = [&](int j, const uint8_t* ks, const uint8_t* vs) {  // S = Q Kᵀ, the online softmax, O += P V
    multiply_qk(ks);
    softmax(j);
    multiply_pv(vs);
  };
  if constexpr (WS) {
    for (int j = 0; j < n_tiles; ++j) {
      const uint8_t* ks = kv_buf + (j & 1) * 2 * kTileBytes;
      const uint32_t parity = uint32_t(j >> 1) & 1u;
      const bool mine = j < wg_tiles;
      mbarrier_wait(&full_k[j & 1], parity);  // tile j's K has landed ...
      if (!kv_tma) fence_proxy_async();       // ... and is visible to wgmma (cp.async: another proxy)
      if (mine) multiply_qk(ks);
      mbarrier_arrive(&empty_k[j & 1]);  // this thread is done with the stage's K
      if (mine) softmax(j);              // while tile j + 2's K streams in
      mbarrier_wait(&full_v[j & 1], parity);  // tile j's V has landed ...
      if (kv_tma && j == n_tiles - 1 && kv_end % kWgKeys != 0)
        zero_unwritten_rows<D>(const_cast<uint8_t*>(ks) + kTileBytes, kv_end % kWgKeys, threadIdx.x);
      if (!kv_tma) fence_proxy_async();  // ... and is visible to wgmma
      if (mine) multiply_pv(ks + kTileBytes);
      mbarrier_arrive(&empty_v[j & 1]);
    }
  } else {
    if (n_tiles > 0) issue(0);
    cp_async_commit();
    for (int j = 0; j < n_tiles; ++j) {
      uint8_t* ks = kv_buf + (E == KvElem::f16 ? (j & 1) * 2 * kTileBytes : 0);
      if (j + 1 < n_tiles) issue(j + 1);
      cp_async_commit();
      cp_async_wait<1>();  // tile j's copies have landed ...
      if constexpr (E == KvElem::q8_0) {
        __syncthreads();  // ... every thread's: dequantize them
        dequant_q8_0_rows_sw128<D, kWgKeys, kWgThreads>(stage + (j & 1) * kStageBytes, ks, threadIdx.x);
      }
      fence_proxy_async();  // ... visible to wgmma ...
      __syncthreads();      // ... for every thread's
      if (j < wg_tiles) attend(j, ks, ks + kTileBytes);
      __syncthreads();  // every warpgroup is done with this tile pair before it is refilled
    }
  }

#pragma unroll
  for (int o2 = 1; o2 <= 2; o2 <<= 1) {
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, o2);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, o2);
  }
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = half ? r_hi : r_lo;
    if (row_pos[r] < 0) continue;
    const int t = (r0 + r) / group, h = g * group + (r0 + r) % group;
    const float l = half ? l_hi : l_lo, inv = l > 0.0f ? 1.0f / l : 0.0f;
    float* dst = out + (size_t(t) * n_head + h) * D;
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<float2*>(dst + 8 * n + 2 * cq) = make_float2(o[n][2 * half] * inv, o[n][2 * half + 1] * inv);
    if (f16) {
      __half* dst16 = f16 + (size_t(t) * n_head + h) * D;
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<uint32_t*>(dst16 + 8 * n + 2 * cq) = pack_half2(o[n][2 * half] * inv, o[n][2 * half + 1] * inv);
    }
  }
#endif  // KEEL_WGMMA
}

// ---- decode: split-KV with the warps on different keys ---------------------------------------------
// One CTA per (token, KV head, key range): each warp walks its own 16-key tiles of the range
// (double-buffered copies in flight per warp), keeps its own online softmax, and the four are
// merged through shared memory. The prefill kernel's warps split rows instead, which leaves three
// of four idle in a decode.
// A tile is multiplied transposed: its 16 keys are the mma's rows and the token's GQA heads its
// columns (NB blocks of 8; 2 for groups of 9 to 16), S^T = K Q^T, then O^T = V^T P^T. With the
// heads as the rows, a group of 4 left 12 of the 16 rows as padding, and with them three quarters
// of the products, exponentials and O registers; as columns a group of 4 to 8 fills half of them
// or all. Q^T's B fragments stay in registers for the whole range, and P^T reaches the second
// product through movmatrix (an 8 x 8 C fragment transposed is the B fragment).
constexpr int kDecodeKeys = 16;
// Tiles each warp of a key range walks at least (fewer ranges below that). Measured on the H200
// (one token at depth 4096, 32 heads over 8 of 128): 16.7 us at 4, 13.1 at 2 or 1. With q8_0's
// kernel as it was then (tiles dequantized into shared memory, one staging), 2 -> 1 (keel_cuda_bench attn, two
// runs, us at depth 4096):
// f16 32/8 heads of 128 12.0 / 11.9 -> 11.7 / 11.0, 24/4 of 256 11.4 / 11.6 -> 10.9 / 10.9; q8_0
// 15.3 / 14.4 -> 12.9 / 12.8 and 20.4 / 20.7 -> 17.6 / 17.7; at 32768 and 173000 the same (the
// ranges are capped by the resident CTAs there). 2 again on an H100 with the in-kernel merge
// (merges_in_kernel: Qwen3-8B's 4096-deep tokens then take 32 ranges, merged in the kernel,
// instead of 33, the resident-CTA cap, and the merge kernel) measured slower (keel bench, tok/s,
// 1 -> 2, in turn): Q8_0 at depth 4096 258.0 / 257.5 -> 256.8 / 255.8, Q4_K_M 339.7 / 335.0 ->
// 333.0 / 330.6, Qwen3.5-27B Q5_K_M 112.1 -> 111.4.
constexpr int kDecodeTilesPerWarp = 1;

// A warp's shared memory: two tiles (double-buffered copies), f16 K and V rows, or q8_0's raw
// K and V rows. q8_0 tiles are never dequantized into shared memory: each lane builds its mma
// fragments from the raw rows in registers (q8_0_scores, q8_0_values). Dequantizing a tile into
// an f16 tile and reading it back through ldmatrix kept the shared-memory pipe busy (ncu at depth
// 173000, 24 heads over 4 of 256: 79.5% "Mem Busy", 770 wavefronts a tile and a warp of which
// 290 from 2.6-way bank conflicts, stalls mostly on short scoreboards) and it bounded the kernel
// at 2.7 TB/s of K/V, against f16 pages' 4.0. Measured on the H200 (keel_cuda_bench attn, one
// token, dequantized tile -> fragments from the raw rows; ms at depth 4096 / 32768 / 173000):
// 24 heads over 4 of 256 0.0159 / 0.0388 / 0.1382 -> 0.0143 / 0.0330 / 0.1185 (2.72 -> 3.18 TB/s
// of K/V at 173000), 32 over 8 of 128 0.0124 / 0.0409 / 0.1696 -> 0.0117 / 0.0326 / 0.1305 (2.22
// -> 2.88 TB/s); Qwen3.5-27B Q5_K_M decode at depth 173000 with q8_0 pages, two runs each in
// turn, 98.96 / 98.68 -> 102.04 / 102.22 tok/s. f16 pages unchanged (4.0 TB/s at 173000).
template <int D, KvElem E>
constexpr size_t decode_warp_bytes() {
  const size_t tile = E == KvElem::f16 ? size_t(kDecodeKeys) * (D + 8) * sizeof(__half) * 2
                                       : size_t(q8_0_stage_bytes<D, kDecodeKeys>());
  return 2 * tile;
}

// Starts the copy of the tile at key0 into buffer `buf` (0 or 1) of the warp's memory `mine`.
template <int D, KvElem E>
__device__ __forceinline__ void issue_decode_tile(const KvLayout& kv, const uint8_t* base, const int32_t* page_row, int g,
                                                  int key0, int kv_end, uint8_t* mine, int buf, int lane) {
  uint8_t* dst = mine + buf * (decode_warp_bytes<D, E>() / 2);
  if constexpr (E == KvElem::f16) {
    constexpr int ld = D + 8;
    __half* ks = reinterpret_cast<__half*>(dst);
    issue_f16_tile<D, kDecodeKeys, 32>(kv, base, page_row, g, key0, kv_end, ks, ks + kDecodeKeys * ld, lane);
  } else {
    issue_q8_0_tile<D, kDecodeKeys, 32>(kv, base, page_row, g, key0, kv_end, dst, lane);
  }
}

// A little-endian word at p of shared memory, 2-byte aligned, or 4-byte when `aligned` (known
// where the loops that call this are unrolled).
__device__ __forceinline__ uint32_t smem_word(const uint8_t* p, bool aligned) {
  if (aligned) return *reinterpret_cast<const uint32_t*>(p);
  return __byte_perm(*reinterpret_cast<const uint16_t*>(p), *reinterpret_cast<const uint16_t*>(p + 2), 0x5410);
}
__device__ __forceinline__ uint32_t smem_u16(const uint8_t* p) { return *reinterpret_cast<const uint16_t*>(p); }

// S^T += K Q^T over a staged q8_0 tile (K rows: [16][row bytes]), kk even into s0 and odd into
// s1 as over f16 tiles. Lane (gq, cq) builds K's A fragments for keys gq and gq + 8 itself: the
// elements 2 cq, 2 cq + 1 and 2 cq + 8, 2 cq + 9 of each 16, as ldmatrix gives them from an f16
// tile, each d * q rounded once to f16 (q8x4_to_half); so the sums are those over f16 pages
// holding the dequantized values, bit for bit.
template <int D, int NB>
__device__ __forceinline__ void q8_0_scores(const uint8_t* k_rows, const uint32_t (&qf)[D / 16][NB][2],
                                            float (&s0)[NB][4], float (&s1)[NB][4], int gq, int cq) {
  constexpr int rb = q8_0_row_bytes<D>();
#pragma unroll
  for (int c = 0; c < D / 32; ++c) {  // q8_0 block c: mma steps kk = 2 c and 2 c + 1
    uint32_t a[2][4];
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // keys gq, gq + 8
      const uint8_t* blk = k_rows + (gq + 8 * h) * rb + 34 * c;
      const __half2 d = __half2half2(*reinterpret_cast<const __half*>(blk));
      const uint8_t* qs = blk + 2 + 2 * cq;
      q8x4_to_half(__byte_perm(smem_u16(qs), smem_u16(qs + 8), 0x5410), d, a[0][h], a[0][2 + h]);
      q8x4_to_half(__byte_perm(smem_u16(qs + 16), smem_u16(qs + 24), 0x5410), d, a[1][h], a[1][2 + h]);
    }
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
      mma_f16(s0[nb], a[0], qf[2 * c][nb][0], qf[2 * c][nb][1]);
      mma_f16(s1[nb], a[1], qf[2 * c + 1][nb][0], qf[2 * c + 1][nb][1]);
    }
  }
}

// O^T += V^T P^T over a staged q8_0 tile (V rows: [16][row bytes]). Lane (gq, cq) takes the four
// values 4 gq .. 4 gq + 3 of q8_0 block c from keys 2 cq, 2 cq + 1, 2 cq + 8, 2 cq + 9 (one word
// each) and pairs them by key with byte permutes: O^T's blocks 2 c and 2 c + 1 hold, in rows gq
// and gq + 8, the head dimensions o_dim gives (each output still sums its keys in order, so its
// value is the f16 pages' bit for bit).
template <int D, int NB>
__device__ __forceinline__ void q8_0_values(const uint8_t* v_rows, const uint32_t (&pb)[NB][2],
                                            float (&o)[D / 16][NB][4], int gq, int cq) {
  constexpr int rb = q8_0_row_bytes<D>();
#pragma unroll
  for (int c = 0; c < D / 32; ++c) {
    uint32_t a[2][4];
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // keys 2 cq and 2 cq + 1, then 8 further
      const uint8_t* k0 = v_rows + (2 * cq + 8 * h) * rb + 34 * c;
      const uint8_t* k1 = k0 + rb;
      const __half2 d = __halves2half2(*reinterpret_cast<const __half*>(k0), *reinterpret_cast<const __half*>(k1));
      // The quants start 2 bytes into the block: words are aligned in odd blocks only.
      const uint32_t x0 = smem_word(k0 + 2 + 4 * gq, c % 2 == 1), x1 = smem_word(k1 + 2 + 4 * gq, c % 2 == 1);
      q8x4_to_half(__byte_perm(x0, x1, 0x5140), d, a[0][2 * h], a[0][2 * h + 1]);  // values 4 gq, 4 gq + 1
      q8x4_to_half(__byte_perm(x0, x1, 0x7362), d, a[1][2 * h], a[1][2 * h + 1]);  // values 4 gq + 2, 4 gq + 3
    }
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
      mma_f16(o[2 * c][nb], a[0], pb[nb][0], pb[nb][1]);
      mma_f16(o[2 * c + 1][nb], a[1], pb[nb][0], pb[nb][1]);
    }
  }
}

// The head dimension that row gq + 8 h of O^T's block mb holds: in order over f16 tiles (ldmatrix),
// q8_0_values' pairing over q8_0 tiles.
template <KvElem E>
__device__ __forceinline__ int o_dim(int mb, int gq, int h) {
  if constexpr (E == KvElem::f16) return 16 * mb + gq + 8 * h;
  else return 32 * (mb / 2) + 4 * gq + 2 * (mb % 2) + h;
}

// The tiles, then (reusing them) the warps' results for the merge: [kWarps][16 heads][D + 2].
template <int D, KvElem E>
constexpr size_t decode_smem_bytes() {
  const size_t tiles = kWarps * decode_warp_bytes<D, E>();
  const size_t merge = size_t(kWarps) * 16 * (D + 2) * sizeof(float);
  return tiles > merge ? tiles : merge;
}

// Key ranges of a token with n_tiles tiles of keys: few enough that each warp walks at least
// kDecodeTilesPerWarp tiles, at most kDecodeSplits and the grid's. A function of the token's own
// depth only, so a sequence's result does not depend on the others of its call (the merge adds
// the unused ranges as exact zeros).
__host__ __device__ inline int decode_splits(int n_tiles, int grid_splits) {
  const int wanted = n_tiles / (kDecodeTilesPerWarp * kWarps);
  const int capped = wanted < 1 ? 1 : wanted > kDecodeSplits ? kDecodeSplits : wanted;
  return capped < grid_splits ? capped : grid_splits;
}

// An 8 x 8 matrix of 16-bit elements in an mma fragment's layout (lane l: row l / 4, columns
// 2 (l % 4) and 2 (l % 4) + 1), transposed in the same layout.
__device__ __forceinline__ uint32_t movmatrix_trans(uint32_t x) {
  uint32_t y;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}

// grid: (n_tokens, n_kv_heads, splits); a token's ranges (decode_splits) write their partial
// results, which the last of them to finish merges into out (merge_ranges; with arrived null,
// merge_splits_kernel after this one); one range writes out.
// Lane (gq, cq) = (lane / 4, lane % 4) holds S^T and P^T for keys gq and gq + 8 of a tile, O^T for
// dims 16 mb + gq and + 8; all of them for heads 8 nb + 2 cq and + 1 of the group, whose running
// max and sum it keeps (l: of its own keys until the end).
// CTAs an SM the decode kernel is compiled for: q8_0 with one block of heads, three (its shared
// memory fits three at head size 256: decode_warp_bytes); 168 registers a thread at most then.
// The latency of q8_0's chains (copy, fragments built from the raw rows, mma) is hidden by the
// other CTAs' warps.
template <KvElem E, int NB>
constexpr int decode_min_ctas() {
  return E == KvElem::q8_0 && NB == 1 ? 3 : 1;
}

// Merges a token's n_splits key ranges for its `group` heads (rows row0 ..): each head's max over
// the ranges and their weights 2^(m_s - max) into `weights` (shared, [16][n_splits]), then
// each output element the weighted sum of the ranges' O over the weighted sum of their l; four
// elements a thread, so a thread's loads (one per range) are 16 bytes and independent. The
// partial results come from other CTAs: read through L2 (__ldcg), never a stale L1 line.
// Rows no range touched (m = -inf, l = 0) -> 0. The weights step is merge_splits_kernel's in a
// loop of its own: one device function for both (each lane's (m, l) in registers) gave the same
// bits but moved the registers of the decode kernel for f16 pages at head size 128 (174 -> 168:
// three CTAs an SM instead of two, so more ranges) and measured slower on an H100 (tok/s, in
// turn): Qwen3-8B Q8_0 at depth 4096 260.0 / 259.5 -> 254.1 / 249.2, Q4_K_M 343.5 / 335.7 ->
// 325.8 / 328.1.
template <int D>
__device__ void merge_ranges(const float* ws, int n_splits, int grid_splits, size_t n_rows, size_t row0, int group,
                             float* out, ActOut act, float* weights) {
  __shared__ float den[16];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float* ml = ws + size_t(grid_splits) * n_rows * D;
  for (int r = warp; r < group; r += kWarps) {
    const size_t row = row0 + r;
    float mx = -INFINITY;
    for (int sp = lane; sp < n_splits; sp += 32) mx = fmaxf(mx, __ldcg(ml + 2 * (size_t(sp) * n_rows + row)));
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int sp = lane; sp < n_splits; sp += 32) {
      const float m = __ldcg(ml + 2 * (size_t(sp) * n_rows + row)), l = __ldcg(ml + 2 * (size_t(sp) * n_rows + row) + 1);
      const float w = m == -INFINITY ? 0.0f : exp2f(m - mx);
      weights[r * n_splits + sp] = w;
      sum += w * l;
    }
    sum = warp_sum(sum);
    if (lane == 0) den[r] = sum;
  }
  __syncthreads();
  // Whole warps through every round (the quantization's shuffles): a lane past the end computes
  // zeros and stores nothing.
  const int quads = group * D / 4;
  for (int base = 0; base < quads; base += kThreads) {
    const int i = base + threadIdx.x;
    const bool mine = i < quads;
    const int r = mine ? 4 * i / D : 0, d = 4 * i % D;
    const size_t row = row0 + r;
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (mine) {
#pragma unroll 8
      for (int sp = 0; sp < n_splits; ++sp) {
        const float w = weights[r * n_splits + sp];
        const float4 v = __ldcg(reinterpret_cast<const float4*>(ws + (size_t(sp) * n_rows + row) * D + d));
        acc.x += w * v.x;
        acc.y += w * v.y;
        acc.z += w * v.z;
        acc.w += w * v.w;
      }
      const float dn = den[r];
      acc = dn > 0.0f ? make_float4(acc.x / dn, acc.y / dn, acc.z / dn, acc.w / dn) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      *reinterpret_cast<float4*>(out + row * D + d) = acc;
    }
    if (act.q && base + 32 * warp < quads) {  // D is a multiple of 32: a group's 8 lanes are all in or all out
      __shared__ __align__(16) int8_t spare_q[kThreads * 4];
      __shared__ float2 spare_s[kThreads / 8];
      const size_t e = row * D + d;
      quantize_group4_q8(acc, lane % 8, mine ? act.q + e / 32 * 32 : spare_q + 32 * (threadIdx.x / 8),
                         mine ? act.s + e / 32 : spare_s + threadIdx.x / 8);
    }
  }
}

template <int D, KvElem E, int NB>
__global__ void __launch_bounds__(kThreads, decode_min_ctas<E, NB>())
    decode_attention_kernel(KvLayout kv, const uint8_t* __restrict__ base, AttentionBatch b, const float* __restrict__ q,
                            float* __restrict__ out, int n_head, float scale, float* __restrict__ ws, unsigned* arrived,
                            ActOut act) {
  constexpr int ld = D + 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int t = blockIdx.x, g = blockIdx.y, split = blockIdx.z;
  const int s = b.seq[t];
  if (s < 0) return;  // padding: the merge skips its rows
  const int group = n_head / kv.n_kv_heads;
  const int pos = b.pos[t], kv_end = pos + 1;
  const int n_splits = decode_splits((kv_end + kDecodeKeys - 1) / kDecodeKeys, gridDim.z);
  if (split >= n_splits) return;  // a range this token's depth does not use: the merge skips it
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane / 4, cq = lane % 4;
  const int n_tiles = (kv_end + kDecodeKeys - 1) / kDecodeKeys;
  const int per_split = (n_tiles + n_splits - 1) / n_splits;
  const int tile_begin = split * per_split, tile_end = min(n_tiles, tile_begin + per_split);
  uint8_t* mine = smem_raw + warp * decode_warp_bytes<D, E>();
  const int32_t* page_row = b.pages + int64_t{s} * b.max_pages_per_seq;

  // One copy group per tile, so the wait below leaves one (the next tile's) in flight. A warp's
  // first tile is copied before the wait for the kernels before when it holds only keys from
  // before the call (launch.cuh: no kernel of the step writes them), so its trip to memory
  // overlaps them. Measured slower on an H100 (keel bench, tok/s at depth 0 / 4096 / 32768, main
  // and the change in turn, two rounds): the first two tiles copied before the wait (both
  // buffers; the loop then issuing tile it + 2 once tile it is used; ptxas put the f16 kernel
  // at head size 128 at 126 registers, from 174), Qwen3-8B Q8_0 293.1 / 257.1 / 189.4 and 295.0
  // / 261.8 / 191.1 -> 281.4 / 250.0 / 187.4 and 282.5 / 252.1 / 189.0 (283.3 / 253.7 / 182.3
  // with the ranges of two CTAs an SM, as before), Q4_K_M 387.7 / 338.4 / 231.8 -> 378.7 /
  // 325.1 / 224.5. So was starting the L2 prefetch (cp.async.bulk.prefetch.L2, 64 KB pieces) of
  // the cache pages a decode token reads from the KV store kernel before it, up to a cap: Q8_0
  // 294.1 / 260.7 / 191.1 -> 284.2 / 230.6 / 174.8 with 20 MB, 282.5 / 229.3 / 155.8 with 48.
  int tile = tile_begin + warp;
  const auto issue_first = [&] {
    if (tile < tile_end) issue_decode_tile<D, E>(kv, base, page_row, g, tile * kDecodeKeys, kv_end, mine, 0, lane);
    cp_async_commit();
  };
  const bool early = (tile + 1) * kDecodeKeys <= b.pos[b.q_start[s]];  // the call's first position of the sequence
  if (early) issue_first();
  pdl_enter();
  if (!early) issue_first();

  // Q^T's B fragments: head 8 nb + gq, dims 16 kk + 2 cq (+ 1) and 8 more; scaled into log2
  // units and rounded to f16; zero past the group. q arrives normed and rotated: doing that here
  // instead, with the step's K/V store (each CTA norming and rotating its group's q heads into
  // shared memory, the CTA whose range holds the position storing K and V and patching its own
  // tile; one kernel a layer fewer, the same bits), measured slower on an H100 (keel bench, tok/s,
  // the separate kernels and the fused one in turn, two rounds): Qwen3-8B Q8_0 at depth 0 / 4096 /
  // 32768 286.6 / 257.4 / 186.5 and 289.4 / 258.8 / 186.9 -> 263.3 / 243.6 / 179.9 and 264.1 /
  // 246.3 / 179.4; Qwen3.5-27B Q5_K_M at depth 0 / 32768 116.9 / 105.0 and 116.1 / 104.8 -> 113.2
  // / 103.6 and 114.2 / 103.1. The likely cause, not isolated: every CTA of a head's key ranges
  // repeats the q work after the PDL wait, where the separate kernel did it once.
  uint32_t qf[D / 16][NB][2];
  const float qscale = scale * kLog2e;
#pragma unroll
  for (int nb = 0; nb < NB; ++nb) {
    const int r = 8 * nb + gq;
    const float* qr = q + (size_t(t) * n_head + g * group + min(r, group - 1)) * D + 2 * cq;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float2 x = r < group ? *reinterpret_cast<const float2*>(qr + 16 * kk + 8 * h) : make_float2(0.0f, 0.0f);
        qf[kk][nb][h] = pack_half2(x.x * qscale, x.y * qscale);
      }
  }

  float o[D / 16][NB][4];
#pragma unroll
  for (int mb = 0; mb < D / 16; ++mb)
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) o[mb][nb][0] = o[mb][nb][1] = o[mb][nb][2] = o[mb][nb][3] = 0.0f;
  float m[NB][2], l[NB][2];
#pragma unroll
  for (int nb = 0; nb < NB; ++nb) m[nb][0] = m[nb][1] = -INFINITY, l[nb][0] = l[nb][1] = 0.0f;

  for (int it = 0; tile < tile_end; ++it, tile += kWarps) {
    const uint8_t* buf = mine + (it & 1) * (decode_warp_bytes<D, E>() / 2);
    if (tile + kWarps < tile_end)
      issue_decode_tile<D, E>(kv, base, page_row, g, (tile + kWarps) * kDecodeKeys, kv_end, mine, (it + 1) & 1, lane);
    cp_async_commit();
    cp_async_wait<1>();
    __syncwarp();

    // S^T = K Q^T; even and odd kk in separate sums (dependent chains half as long)
    float sacc[NB][4] = {}, sacc2[NB][4] = {};
    if constexpr (E == KvElem::f16) {
      const __half* ks = reinterpret_cast<const __half*>(buf);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t a[4];
        ldmatrix_x4(a, ks + (lane % 16) * ld + 16 * kk + 8 * (lane / 16));
#pragma unroll
        for (int nb = 0; nb < NB; ++nb) mma_f16(kk % 2 ? sacc2[nb] : sacc[nb], a, qf[kk][nb][0], qf[kk][nb][1]);
      }
    } else {
      q8_0_scores<D, NB>(buf, qf, sacc, sacc2, gq, cq);
    }
    const int key0 = tile * kDecodeKeys;
    const bool lo_out = key0 + gq > pos, hi_out = key0 + gq + 8 > pos;  // keys past the token's position
    float mx[NB][2];
    bool passed = false;
#pragma unroll
    for (int nb = 0; nb < NB; ++nb)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        sacc[nb][e] = lo_out ? -INFINITY : sacc[nb][e] + sacc2[nb][e];
        sacc[nb][2 + e] = hi_out ? -INFINITY : sacc[nb][2 + e] + sacc2[nb][2 + e];
        // the tile's max for the head: this lane's two keys, then the column's eight lanes
        mx[nb][e] = fmaxf(sacc[nb][e], sacc[nb][2 + e]);
#pragma unroll
        for (int o2 = 4; o2 <= 16; o2 <<= 1) mx[nb][e] = fmaxf(mx[nb][e], __shfl_xor_sync(0xffffffffu, mx[nb][e], o2));
        passed |= mx[nb][e] > m[nb][e] + kMaxSlack;
      }
    const bool moved = __any_sync(0xffffffffu, passed);
    float corr[NB][2];
    uint32_t pb[NB][2];  // P^T's B fragments: keys 2 cq (+ 1), then 8 more, head 8 nb + gq
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
      corr[nb][0] = corr[nb][1] = 1.0f;
      if (moved) update_max(m[nb][0], m[nb][1], mx[nb][0], mx[nb][1], corr[nb][0], corr[nb][1]);
      const float base0 = m[nb][0] == -INFINITY ? 0.0f : m[nb][0], base1 = m[nb][1] == -INFINITY ? 0.0f : m[nb][1];
      const float p0 = exp2f(sacc[nb][0] - base0), p1 = exp2f(sacc[nb][1] - base1);  // key gq
      const float p2 = exp2f(sacc[nb][2] - base0), p3 = exp2f(sacc[nb][3] - base1);  // key gq + 8
      l[nb][0] = l[nb][0] * corr[nb][0] + (p0 + p2);
      l[nb][1] = l[nb][1] * corr[nb][1] + (p1 + p3);
      pb[nb][0] = movmatrix_trans(pack_half2(p0, p1));
      pb[nb][1] = movmatrix_trans(pack_half2(p2, p3));
    }
    if (moved) {
#pragma unroll
      for (int mb = 0; mb < D / 16; ++mb)
#pragma unroll
        for (int nb = 0; nb < NB; ++nb) {
          o[mb][nb][0] *= corr[nb][0];
          o[mb][nb][1] *= corr[nb][1];
          o[mb][nb][2] *= corr[nb][0];
          o[mb][nb][3] *= corr[nb][1];
        }
    }
    // O^T += V^T P^T: over f16 tiles, V's rows transposed by ldmatrix into A fragments of 16
    // dims x 16 keys
    if constexpr (E == KvElem::f16) {
      const __half* vs = reinterpret_cast<const __half*>(buf) + kDecodeKeys * ld;
#pragma unroll
      for (int mb = 0; mb < D / 16; ++mb) {
        uint32_t a[4];
        ldmatrix_x4_trans(a, vs + ((lane % 8) + 8 * (lane / 16)) * ld + 16 * mb + 8 * ((lane / 8) % 2));
#pragma unroll
        for (int nb = 0; nb < NB; ++nb) mma_f16(o[mb][nb], a, pb[nb][0], pb[nb][1]);
      }
    } else {
      q8_0_values<D, NB>(buf + kDecodeKeys * q8_0_row_bytes<D>(), pb, o, gq, cq);
    }
    __syncwarp();  // this buffer is refilled two tiles on
  }
#pragma unroll
  for (int nb = 0; nb < NB; ++nb)
#pragma unroll
    for (int e = 0; e < 2; ++e)
#pragma unroll
      for (int o2 = 4; o2 <= 16; o2 <<= 1) l[nb][e] += __shfl_xor_sync(0xffffffffu, l[nb][e], o2);

  // Merge the warps: O, m, l of each head through shared memory (the tile buffers are free now).
  cp_async_wait<0>();
  __syncthreads();
  float* red = reinterpret_cast<float*>(smem_raw);  // [kWarps][16][D + 2]: a head's O row, then m, l
  {
    float* mine_o = red + size_t(warp) * 16 * (D + 2);
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
      float* h0 = mine_o + (8 * nb + 2 * cq) * (D + 2);  // heads 8 nb + 2 cq and the next
      float* h1 = h0 + (D + 2);
#pragma unroll
      for (int mb = 0; mb < D / 16; ++mb) {
        const int d_lo = o_dim<E>(mb, gq, 0), d_hi = o_dim<E>(mb, gq, 1);
        h0[d_lo] = o[mb][nb][0];
        h1[d_lo] = o[mb][nb][1];
        h0[d_hi] = o[mb][nb][2];
        h1[d_hi] = o[mb][nb][3];
      }
      if (gq == 0) {
        h0[D] = m[nb][0];
        h0[D + 1] = l[nb][0];
        h1[D] = m[nb][1];
        h1[D + 1] = l[nb][1];
      }
    }
  }
  // Each head's max over the warps, the warps' weights 2^(m_w - max) and its sum, once a head
  // (not once an element: at head size 256 the loop below takes 12 rounds a thread).
  __shared__ float head_w[kWarps][16], head_m[16], head_l[16];
  __syncthreads();
  if (threadIdx.x < group) {
    const int r = threadIdx.x;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, red[(size_t(w) * 16 + r) * (D + 2) + D]);
    float l = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float* row = red + (size_t(w) * 16 + r) * (D + 2);
      const float f = mx == -INFINITY ? 0.0f : exp2f(row[D] - mx);
      head_w[w][r] = f;
      l += f * row[D + 1];
    }
    head_m[r] = mx;
    head_l[r] = l;
  }
  __syncthreads();
  const size_t n_rows = size_t(b.n_tokens) * n_head;
  for (int i = threadIdx.x; i < group * D; i += kThreads) {
    const int r = i / D, d = i % D;
    const float mx = head_m[r], l = head_l[r];
    float acc = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) acc += head_w[w][r] * red[(size_t(w) * 16 + r) * (D + 2) + d];
    const size_t orow = size_t(t) * n_head + g * group + r;
    if (n_splits == 1) {  // the token's only range: the result (a merge kernel skips its rows)
      const float y = l > 0.0f ? acc / l : 0.0f;
      out[orow * D + d] = y;
      if (act.q) quantize_group_q8(y, lane, act.q + (orow * D + d) / 32 * 32, act.s + (orow * D + d) / 32);
    } else {
      ws[(size_t(split) * n_rows + orow) * D + d] = acc;
      if (d == 0) {
        float* ml = ws + size_t(gridDim.z) * n_rows * D;
        ml[2 * (size_t(split) * n_rows + orow)] = mx;
        ml[2 * (size_t(split) * n_rows + orow) + 1] = l;
      }
    }
  }
  if (n_splits == 1 || !arrived) return;  // no arrival counts: merge_splits_kernel merges
  // The last of the token's ranges to finish merges them (merges_in_kernel).
  __shared__ bool last;
  __threadfence();  // this range's partial results, visible to the CTA that merges
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned* count = arrived + size_t(t) * gridDim.y + g;
    last = atomicAdd(count, 1u) == unsigned(n_splits - 1);
    if (last) *count = 0;  // every range has arrived: ready for the next launch
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  merge_ranges<D>(ws, n_splits, gridDim.z, n_rows, size_t(t) * n_head + g * group, group, out, act,
                  reinterpret_cast<float*>(smem_raw));
}

// Merges the split-KV partial results: one CTA of kMergeParts x D threads per (token, head) row.
// The first warp loads every split's (m, l) at once and puts their weights 2^(m_s - m) in shared
// memory; then the kMergeParts groups of D threads each sum every kMergeParts-th split's O (their
// loads independent, one round trip to L2), and the first group adds the others' sums. One
// thread per element walking every range, with the (m, l) loaded twice, measured on the H200
// (keel_cuda_bench attn, decode and merge, us, before -> after): 32 heads over 8 of 128, f16,
// depth 4096 13.9 -> 12.3, 32768 42.5 -> 41.0; Qwen3-8B Q4_K_M decode at depth 4096 348 -> 354
// tok/s.
// Rows whose token is padding (seq < 0) or that no split touched (m = -inf, l = 0) -> 0.
// decode_pos (decode only): each token merges just the ranges its own depth used (decode_splits);
// the decode kernel's CTAs past them return at once and write nothing. The grid follows the
// call's deepest sequence, so in a call mixing depths a short sequence no longer walks (or
// merges) dozens of empty ranges. One sequence alone gains nothing measurable (H200, Qwen3-8B
// Q8_0, tok/s at depth 0 / 4096 / 32768, before -> after: 313.6 / 295.6 / 226.4 -> 314.9 /
// 296.3 / 225.9).
constexpr int kMaxMergeSplits = 256;
constexpr int kMergeParts = 4;
__global__ void merge_splits_kernel(const float* __restrict__ ws, int grid_splits, int n_rows, int D, int n_head,
                                    const int32_t* seq, const int32_t* decode_pos, float* __restrict__ out, ActOut act) {
  pdl_enter();
  __shared__ float weight[kMaxMergeSplits];
  __shared__ float den_s;
  extern __shared__ float part_sums[];  // [kMergeParts - 1][D]
  const int row = blockIdx.x;
  if (seq[row / n_head] < 0) return;
  const float* ml = ws + size_t(grid_splits) * n_rows * D;
  const int n_splits =
      decode_pos ? decode_splits((decode_pos[row / n_head] + kDecodeKeys) / kDecodeKeys, grid_splits) : grid_splits;
  if (decode_pos && n_splits == 1) return;  // one range (fewer than 8 tiles of keys): the decode kernel wrote it
  if (threadIdx.x < 32) {
    constexpr int kPerLane = kMaxMergeSplits / 32;
    float ms[kPerLane], ls[kPerLane];
    float m = -INFINITY;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int sp = threadIdx.x + 32 * k;
      ms[k] = sp < n_splits ? ml[2 * (size_t(sp) * n_rows + row)] : -INFINITY;
      ls[k] = sp < n_splits ? ml[2 * (size_t(sp) * n_rows + row) + 1] : 0.0f;
      m = fmaxf(m, ms[k]);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float den = 0.0f;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int sp = threadIdx.x + 32 * k;
      const float w = ms[k] == -INFINITY ? 0.0f : exp2f(ms[k] - m);
      if (sp < n_splits) weight[sp] = w;
      den += w * ls[k];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) den += __shfl_xor_sync(0xffffffffu, den, o);
    if (threadIdx.x == 0) den_s = den;
  }
  __syncthreads();
  const int part = threadIdx.x / D, d = threadIdx.x % D;
  float num = 0.0f;
#pragma unroll 8
  for (int sp = part; sp < n_splits; sp += kMergeParts) num += weight[sp] * ws[(size_t(sp) * n_rows + row) * D + d];
  if (part > 0) part_sums[(part - 1) * D + d] = num;
  __syncthreads();
  if (part > 0) return;
#pragma unroll
  for (int p = 1; p < kMergeParts; ++p) num += part_sums[(p - 1) * D + d];
  const float den = den_s;
  const float y = den > 0.0f ? num / den : 0.0f;
  out[size_t(row) * D + d] = y;
  if (act.q) quantize_group_q8(y, d % 32, act.q + (size_t(row) * D + d) / 32 * 32, act.s + (size_t(row) * D + d) / 32);
}

// Launches the merge of `splits` ranges for n_rows rows of D (decode_pos: see merge_splits_kernel).
void launch_merge(const float* ws, int splits, int n_rows, int D, int n_head, const int32_t* seq,
                  const int32_t* decode_pos, float* out, ActOut act, cudaStream_t stream) {
  launch(merge_splits_kernel, n_rows, kMergeParts * D, size_t(kMergeParts - 1) * D * sizeof(float), stream, ws, splits,
         n_rows, D, n_head, seq, decode_pos, out, act);
}

// Any head size up to 256 (the tensor-core kernel takes 64/128/256): one warp per (token, head),
// lane l owns dims l, l + 32, ...; keys one at a time with an online softmax in f32. Slow, for
// small models (stories260K's head size 8).
__global__ void attention_any_kernel(KvLayout kv, const uint8_t* __restrict__ base, AttentionBatch b,
                                     const float* __restrict__ q, float* __restrict__ out, int n_head, float scale) {
  pdl_enter();
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= b.n_tokens * n_head) return;
  const int t = row / n_head, h = row % n_head, D = kv.head_dim;
  const int s = b.seq[t];
  if (s < 0) return;
  const int g = h / (n_head / kv.n_kv_heads), last = b.pos[t];
  const int32_t* page_row = b.pages + int64_t{s} * b.max_pages_per_seq;
  constexpr int kMaxPer = 8;  // head_dim <= 256
  float qv[kMaxPer], acc[kMaxPer];
#pragma unroll
  for (int i = 0; i < kMaxPer; ++i) {
    const int d = lane + 32 * i;
    qv[i] = d < D ? q[(size_t(t) * n_head + h) * D + d] : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const size_t v_off = size_t(kv.page_tokens) * kv.token_bytes();
  for (int kp = 0; kp <= last; ++kp) {
    const uint8_t* krow = base + size_t(page_row[kp / kv.page_tokens]) * kv.page_bytes() +
                          size_t(kp % kv.page_tokens) * kv.token_bytes() + size_t(g) * kv.row_bytes();
    float kval[kMaxPer], vval[kMaxPer];
#pragma unroll
    for (int i = 0; i < kMaxPer; ++i) {
      const int d = lane + 32 * i;
      kval[i] = vval[i] = 0.0f;
      if (d < D) {
        if (kv.elem == KvElem::f16) {
          kval[i] = f16_bits_to_f32(reinterpret_cast<const uint16_t*>(krow)[d]);
          vval[i] = f16_bits_to_f32(reinterpret_cast<const uint16_t*>(krow + v_off)[d]);
        } else {
          const uint8_t* kb = krow + (d / 32) * 34;
          const uint8_t* vb = kb + v_off;
          kval[i] = f16_bits_to_f32(load_u16(kb)) * float(int8_t(kb[2 + d % 32]));
          vval[i] = f16_bits_to_f32(load_u16(vb)) * float(int8_t(vb[2 + d % 32]));
        }
      }
    }
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kMaxPer; ++i) dot += qv[i] * kval[i];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    const float sc = dot * scale;
    const float m_new = fmaxf(m, sc);
    const float corr = expf(m - m_new), p = expf(sc - m_new);
    l = l * corr + p;
#pragma unroll
    for (int i = 0; i < kMaxPer; ++i) acc[i] = acc[i] * corr + p * vval[i];
    m = m_new;
  }
#pragma unroll
  for (int i = 0; i < kMaxPer; ++i) {
    const int d = lane + 32 * i;
    if (d < D) out[(size_t(t) * n_head + h) * D + d] = l > 0.0f ? acc[i] / l : 0.0f;
  }
}

// The most key ranges of one token: as many as fill the GPU's resident CTAs once over the KV
// heads (at most kDecodeSplits; 99 for q8_0 pages at head size 256 over 4 KV heads, three CTAs an
// SM). A second, mostly empty wave cost more than longer ranges:
// measured on the H200 (one token, f16 pages), 32 heads over 8 of 128 (3 CTAs an SM: 49 a head)
// at depth 32768 / 173000, 51.3 / 200.7 us with 64 ranges, 44.4 / 180.7 with 48; 24 heads over
// 4 of 256 (1 CTA an SM: 33), 52.1 / 185.1 with 64, 44.4 / 179.1 with 32. Fewer ranges than the
// cap measured slower in decode too (H200, Qwen3-8B Q8_0 at depth 0 / 4096 / 32768, tok/s): the
// cap's 33 and the merge kernel 355.0 / 310.2 / 235.8 and 355.8 / 308.6 / 235.9; 16 ranges 355.5
// / 296.5 / 233.7; 32, merged in the kernel (merges_in_kernel), 355.5 / 297.0 / 233.1. Leaving
// the merge kernel out (a wrong result, for its cost) gave 354.7 / 314.4 / 240.6, and leaving the
// whole decode attention out 367.5 / 346.8 / 356.2 and 368.5 / 348.6 / 357.1: in place it costs
// about 2.7 / 9.9 / 39.9 us a layer. A function of the model and the device only, so a token's
// ranges do not depend on the rest of its call.
template <int D, KvElem E, int NB>
int decode_split_cap(int n_kv_heads, size_t smem) {
  static const int resident = [smem] {
    int device = 0, sms = 0, per_sm = 0;
    check(cudaGetDevice(&device), "cudaGetDevice");
    check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
    check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, decode_attention_kernel<D, E, NB>, kThreads, smem),
          "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
    return sms * std::max(per_sm, 1);
  }();
  return std::clamp(resident / std::max(n_kv_heads, 1), 1, kDecodeSplits);
}

// Whether the decode kernel merges a call's key ranges itself (its last range's CTA, 128
// threads) rather than a merge kernel after it: while that CTA's share stays small, at most 32
// loads a thread (group x D x splits / 4 floats of 16 bytes over 128 threads). The second
// kernel's launch and wait cost more than a short merge; a long one runs slower in one CTA.
// Measured on an H100 (keel bench, tok/s, old and new in turn on one machine): merging in the
// kernel at every depth, Qwen3-8B Q8_0 decode at depth 0 / 4096 / 32768 went 277.4 / 251.8 /
// 188.3 and 275.0 / 249.1 / 187.6 -> 293.9 / 251.4 / 186.7 and 291.8 / 249.5 / 186.5, Qwen3.5-27B
// Q5_K_M at depth 32768 (33 ranges of 6 heads of 256) 105.8 -> 104.3; with this rule, 8B at
// depth 0 / 4096 275.1 / 250.4 and 275.8 / 249.8 -> 292.0 / 259.3 and 291.7 / 259.5.
// A function of the grid (the page table's width), so a step's CUDA graph keeps its choice.
// Merging more ranges in the kernel in two levels (the last range of each block of 8 to finish
// merges the block into a partial result, the last block so merged merges the blocks) measured
// slower than the merge kernel on an H100 (tok/s, in turn): Qwen3-8B Q8_0 at depth 4096 / 32768
// 258.4 / 191.1 and 260.6 / 189.9 -> 243.5 / 184.2 and 243.1 / 183.1, Q4_K_M 334.8 / 230.3 and
// 341.5 / 231.6 -> 308.0 / 218.9 and 309.2 / 218.5, the 27B 105.1 -> 104.0 at 32768: as with the
// GEMV's SiLU epilogue (CudaBackend::silu_mul), short-lived CTAs waiting on an arrival count cost
// more than a kernel boundary.
bool merges_in_kernel(int splits, int group, int head_dim) {
  return size_t(group) * size_t(head_dim) * size_t(splits) <= size_t(32 * 4 * kThreads);
}

template <int D, KvElem E, int NB>
void launch_decode_attention(const KvLayout& kv, const void* base, const AttentionBatch& b, const float* q, float* out,
                             int n_head, float scale, float* ws, unsigned* arrived, ActOut act,
                             cudaStream_t stream) {
  constexpr size_t smem = decode_smem_bytes<D, E>();
  static const cudaError_t attr = cudaFuncSetAttribute(decode_attention_kernel<D, E, NB>,
                                                       cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  check(attr, "cudaFuncSetAttribute (decode attention shared memory)");
  // As many ranges as the deepest token the page table's width allows can use: the grid then
  // stays the same while a decode step's CUDA graph (keyed by that width) replays.
  const int max_tiles = (b.max_pages_per_seq * kv.page_tokens + kDecodeKeys - 1) / kDecodeKeys;
  const int splits = decode_splits(max_tiles, decode_split_cap<D, E, NB>(kv.n_kv_heads, smem));
  const dim3 grid(b.n_tokens, kv.n_kv_heads, splits);
  const bool in_kernel = merges_in_kernel(splits, n_head / kv.n_kv_heads, D);
  launch(decode_attention_kernel<D, E, NB>, grid, kThreads, smem, stream, kv, static_cast<const uint8_t*>(base), b, q,
         out, n_head, scale, ws, in_kernel ? arrived : nullptr, act);
  if (splits == 1 || in_kernel) return;
  launch_merge(ws, splits, b.n_tokens * n_head, D, n_head, b.seq, b.pos, out, act, stream);
}

// A group of up to 8 heads fills one block of mma columns, up to 16 two.
template <int D, KvElem E>
void launch_decode_attention(const KvLayout& kv, const void* base, const AttentionBatch& b, const float* q, float* out,
                             int n_head, float scale, float* ws, unsigned* arrived, ActOut act, cudaStream_t stream) {
  if (n_head / kv.n_kv_heads <= 8)
    launch_decode_attention<D, E, 1>(kv, base, b, q, out, n_head, scale, ws, arrived, act, stream);
  else
    launch_decode_attention<D, E, 2>(kv, base, b, q, out, n_head, scale, ws, arrived, act, stream);
}

template <int D, KvElem E, int KK, bool SPLIT_KV, int WARPS>
void launch_attention_keys(const KvLayout& kv, const void* base, const AttentionBatch& b, const float* q, float* out,
                           int n_head, float scale, float* ws, cudaStream_t stream) {
  const int group = n_head / kv.n_kv_heads;
  const int tokens_per_tile = 16 * WARPS / group;
  const int tiles = (b.n_tokens + tokens_per_tile - 1) / tokens_per_tile + b.n_seqs;
  const int splits = b.n_tokens <= kSplitMaxTokens ? kKeySplits : 1;
  const int kv_tiles = E == KvElem::f16 && !SPLIT_KV ? 4 : 2;  // double-buffered K and V, or one of each
  const size_t staging = E == KvElem::q8_0 ? 2 * size_t(q8_0_stage_bytes<D, KK>()) : 0;
  const size_t smem = size_t(16 * WARPS + kv_tiles * KK) * (D + 8) * sizeof(__half) + staging;
  static const cudaError_t attr = cudaFuncSetAttribute(flash_attention_kernel<D, E, KK, SPLIT_KV, WARPS>,
                                                       cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  check(attr, "cudaFuncSetAttribute (attention shared memory)");
  const dim3 grid(tiles, kv.n_kv_heads, splits);
  launch(flash_attention_kernel<D, E, KK, SPLIT_KV, WARPS>, grid, 32 * WARPS, smem, stream, kv, static_cast<const uint8_t*>(base), b, q,
         out, n_head, scale, ws);
  if (splits > 1) {
    launch_merge(ws, splits, b.n_tokens * n_head, D, n_head, b.seq, nullptr, out, ActOut{}, stream);
  }
}

// Tiles of 64 keys, except q8_0 pages at head size 256 (32: two CTAs fit an SM). f16 pages: whole
// tiles double-buffered up to head size 128; at 256, K and V in buffers of one tile each (two CTAs
// of 64-key tiles fit). Measured on the H200 in one run, a 4096-token chunk at depth 28672, 32
// heads over 8 of 128 and 24 over 4 of 256: double-buffered 245 and 202 TFLOP/s (32-key tiles at
// 256), split K/V 218 and 216.
// q8_0 pages take CTAs of 8 warps (128 rows) from head size 128: each tile is dequantized once
// for twice the rows. Same chunk, same run: 4 warps 121 / 127 TFLOP/s, 8 warps 145 / 169 (f16
// pages with 8 warps measured 219 / 219: no gain, so they keep 4).
bool tensor_core_head_dim(int d) { return d == 64 || d == 128 || d == 256; }

// Few tokens, few heads per KV head: the split-KV decode kernel (and its merge).
bool takes_decode_path(const KvLayout& kv, const AttentionBatch& b, int n_head) {
  return tensor_core_head_dim(kv.head_dim) && b.n_tokens <= kSplitMaxTokens && n_head / kv.n_kv_heads <= 16;
}

// Prefill on Hopper at head sizes 128 and 256 (KEEL_CUDA_WGMMA=0: mma.sync).
bool takes_wgmma_path(const KvLayout& kv, const AttentionBatch& b, int n_head) {
  return !takes_decode_path(kv, b, n_head) && (kv.head_dim == 128 || kv.head_dim == 256) &&
         b.n_tokens > kSplitMaxTokens && wgmma_available();
}

// The pool of f16 pages as a tensor for the warp-specialized kernel's copies: rows of D elements
// (a K or V row of one head; 64-element boxes, 128-byte swizzled as the tiles are), the KV heads,
// then the pool's rows of tokens (page p's K rows at 2 p page_tokens, its V rows page_tokens on).
// False, and the kernel's threads copy instead, where a 64-key tile would cross a page, the pool's
// size is unknown, or the driver has no cuTensorMapEncodeTiled.
// A tile's keys past the positions it holds are copied as they are, where the threads' copies
// zero them: zeros (the pool is zeroed at allocation), K and V of a token that held the slot
// before, anything. Their scores are set to -inf whatever K holds, but 0 · inf or 0 · NaN in P V
// is NaN, so the kernel zeroes the last tile's V rows past kv_end (zero_unwritten_rows).
bool kv_tensor_map(const KvLayout& kv, const void* base, CUtensorMap& map) {
  static const auto encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    const cudaError_t err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found);
    return err == cudaSuccess && found == cudaDriverEntryPointSuccess ? reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn)
                                                                      : nullptr;
  }();
  if (!encode || kv.elem != KvElem::f16 || kv.n_pages <= 0 || kv.page_tokens % kWgKeys != 0) return false;
  const cuuint64_t dims[3] = {cuuint64_t(kv.head_dim), cuuint64_t(kv.n_kv_heads),
                              cuuint64_t(kv.n_pages) * 2 * cuuint64_t(kv.page_tokens)};
  const cuuint64_t strides[2] = {cuuint64_t(kv.row_bytes()), cuuint64_t(kv.token_bytes())};
  const cuuint32_t box[3] = {64, 1, kWgKeys}, unit[3] = {1, 1, 1};
  return encode(&map, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 3, const_cast<void*>(base), dims, strides, box, unit,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

template <int D, KvElem E>
void launch_wgmma_attention(const KvLayout& kv, const void* base, const AttentionBatch& b, const float* q, float* out,
                            int n_head, float scale, void* f16, cudaStream_t stream) {
  constexpr int rows = kWgGroups * kWgRows;
  const int tiles = (b.n_tokens * (n_head / kv.n_kv_heads) + rows - 1) / rows + b.n_seqs;
  constexpr bool WS = wgmma_warp_specialized<D, E>();
  constexpr auto kernel = flash_wgmma_kernel<D, E, WS ? 1 : wgmma_ctas_per_sm<D, E>(), WS>;
  constexpr size_t smem = wgmma_smem_bytes<D, E>();
  static const cudaError_t attr = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  check(attr, "cudaFuncSetAttribute (attention shared memory)");
  CUtensorMap kv_map{};
  const bool kv_tma = WS && kv_tensor_map(kv, base, kv_map);
  launch(kernel, dim3(tiles, kv.n_kv_heads), wgmma_threads<WS>(), smem, stream, kv, static_cast<const uint8_t*>(base), b,
         q, out, n_head, scale, static_cast<__half*>(f16), kv_map, kv_tma);
}

template <int D, KvElem E>
void launch_attention(const KvLayout& kv, const void* base, const AttentionBatch& b, const float* q, float* out,
                      int n_head, float scale, float* ws, unsigned* arrived, ActOut act, cudaStream_t stream) {
  if (takes_decode_path(kv, b, n_head))
    return launch_decode_attention<D, E>(kv, base, b, q, out, n_head, scale, ws, arrived, act, stream);
  if constexpr (D >= 128) {
    if (takes_wgmma_path(kv, b, n_head))
      return launch_wgmma_attention<D, E>(kv, base, b, q, out, n_head, scale, act.f16, stream);
  }
  constexpr bool split_kv = E == KvElem::f16 && D >= 256;
  constexpr int keys = E == KvElem::q8_0 && D >= 256 ? 32 : 64;
  constexpr int warps = E == KvElem::q8_0 && D >= 128 ? 8 : kWarps;
  launch_attention_keys<D, E, keys, split_kv, warps>(kv, base, b, q, out, n_head, scale, ws, stream);
}

template <KvElem E>
void dispatch_head_dim(const KvLayout& kv, const void* base, const AttentionBatch& b, const float* q, float* out,
                       int n_head, float scale, float* ws, unsigned* arrived, ActOut act, cudaStream_t stream) {
  switch (kv.head_dim) {
    case 64: return launch_attention<64, E>(kv, base, b, q, out, n_head, scale, ws, arrived, act, stream);
    case 128: return launch_attention<128, E>(kv, base, b, q, out, n_head, scale, ws, arrived, act, stream);
    case 256: return launch_attention<256, E>(kv, base, b, q, out, n_head, scale, ws, arrived, act, stream);
    default: throw Error("CUDA attention: head size " + std::to_string(kv.head_dim) + " is not 64, 128 or 256");
  }
}

}  // namespace

bool attention_supports(const KvLayout& kv) {
  return kv.head_dim > 0 && kv.head_dim <= 256 && kv.n_kv_heads > 0 && kv.page_tokens > 0 &&
         (kv.elem == KvElem::f16 ? kv.head_dim % 8 == 0 : kv.head_dim % 32 == 0);
}


// The workspace: the decode's arrival counts ([kSplitMaxTokens][n_kv_heads]), then the partial
// results of the key ranges (each range's O rows, then every row's m and l).
static size_t arrivals_bytes(const KvLayout& kv) {
  return (size_t(kSplitMaxTokens) * kv.n_kv_heads * sizeof(unsigned) + 255) / 256 * 256;
}

size_t attention_workspace_bytes(const KvLayout& kv, int n_head, int max_tokens) {
  const size_t rows = size_t(std::min(max_tokens, kSplitMaxTokens)) * n_head;
  return arrivals_bytes(kv) + size_t(kDecodeSplits) * rows * (size_t(kv.head_dim) + 2) * sizeof(float);
}

void kv_write(const KvLayout& kv, void* base, const AttentionBatch& b, const float* k, const float* v,
              cudaStream_t stream) {
  if (b.n_tokens <= 0) return;
  const int64_t width = int64_t{kv.n_kv_heads} * kv.head_dim;
  constexpr int threads = 256;
  if (kv.elem == KvElem::f16) {
    const dim3 grid(static_cast<unsigned>((b.n_tokens * width + threads - 1) / threads), 2);
    launch(kv_write_f16_kernel, grid, threads, 0, stream, kv, static_cast<uint8_t*>(base), b, k, v);
  } else {
    if (kv.head_dim % 32 != 0) throw Error("q8_0 KV cache needs a head size that is a multiple of 32");
    const dim3 grid(static_cast<unsigned>((b.n_tokens * width + threads - 1) / threads), 2);
    launch(kv_write_q8_0_kernel, grid, threads, 0, stream, kv, static_cast<uint8_t*>(base), b, k, v);
  }
}

// Whether kv's pages take the warp-specialized kernel on the wgmma prefill path
// (wgmma_warp_specialized for their head size and element).
static bool warp_specialized(const KvLayout& kv) {
  const bool f16 = kv.elem == KvElem::f16;
  switch (kv.head_dim) {
    case 128: return f16 ? wgmma_warp_specialized<128, KvElem::f16>() : wgmma_warp_specialized<128, KvElem::q8_0>();
    case 256: return f16 ? wgmma_warp_specialized<256, KvElem::f16>() : wgmma_warp_specialized<256, KvElem::q8_0>();
    default: return false;
  }
}

bool prefill_tensor_copies(const KvLayout& kv, const void* base) {
  CUtensorMap map{};
  return wgmma_available() && warp_specialized(kv) && kv_tensor_map(kv, base, map);
}

bool attention(const KvLayout& kv, const void* base, const AttentionBatch& b, const float* q, float* out, int n_head,
               float scale, float* workspace, cudaStream_t stream, ActOut act) {
  if (b.n_tokens <= 0) return false;
  if (!attention_supports(kv) || n_head % kv.n_kv_heads != 0 || n_head / kv.n_kv_heads > kRows)
    throw Error("CUDA attention: unsupported geometry (head size " + std::to_string(kv.head_dim) + ", " +
                std::to_string(n_head) + " heads over " + std::to_string(kv.n_kv_heads) + " KV heads)");
  if (!tensor_core_head_dim(kv.head_dim)) {
    const int rows = b.n_tokens * n_head;
    launch(attention_any_kernel, (rows + 3) / 4, 128, 0, stream, kv, static_cast<const uint8_t*>(base), b, q, out,
           n_head, scale);
    return false;
  }
  // 8-bit activations on the decode path; the f16 copy on the wgmma prefill path.
  if (!takes_decode_path(kv, b, n_head)) {
    act.q = nullptr;
    act.s = nullptr;
  }
  if (!takes_wgmma_path(kv, b, n_head)) act.f16 = nullptr;
  auto* arrived = reinterpret_cast<unsigned*>(workspace);
  float* partials = workspace + arrivals_bytes(kv) / sizeof(float);
  if (kv.elem == KvElem::f16)
    dispatch_head_dim<KvElem::f16>(kv, base, b, q, out, n_head, scale, partials, arrived, act, stream);
  else
    dispatch_head_dim<KvElem::q8_0>(kv, base, b, q, out, n_head, scale, partials, arrived, act, stream);
  return act.q != nullptr || act.f16 != nullptr;
}

}  // namespace keel::cuda
