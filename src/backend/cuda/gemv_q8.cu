#include "backend/cuda/gemv_q8.cuh"

#include <algorithm>
#include <string>

#include "backend/cuda/act_q8.cuh"
#include "backend/cuda/async_copy.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/dequant.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/warp.cuh"
#include "keel/error.h"

namespace keel::cuda {
namespace {

using quant::Type;

constexpr int kWarps = 4;  // warps per CTA: kWarps / split rows

size_t align256(size_t n) { return (n + 255) / 256 * 256; }

// ---- activations ------------------------------------------------------------------------------

// One warp per group of 32 inputs.
__global__ void quantize_act_kernel(const float* __restrict__ x, int64_t n_groups, int8_t* __restrict__ q,
                                    float2* __restrict__ s) {
  pdl_enter();
  const int64_t g = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  if (g >= n_groups) return;
  quantize_group_q8(x[g * kActGroup + threadIdx.x % 32], threadIdx.x % 32, q + g * kActGroup, s + g);
}

struct ActView {
  const int8_t* q;   // [n_tok][n_in]
  const float2* s;   // [n_tok][n_in / 32]: (d, d·Σq)
};

ActView act_view(const void* act, int64_t n_in, int64_t n_tokens) {
  int8_t* q = nullptr;
  float2* s = nullptr;
  act_q8_parts(const_cast<void*>(act), n_in, n_tokens, q, s);
  return {q, s};
}

// ---- weights ----------------------------------------------------------------------------------

// N little-endian 32-bit words starting at byte `off` of a 16-byte aligned shared buffer (blocks
// at even bytes, such as Q8_0's): N + 1 aligned loads and a funnel shift each. Buffers are padded
// by a word. The alignment comes from the offset, not the pointer (a pointer's would need its
// generic address), so a lane whose offsets repeat from chunk to chunk computes it once.
template <int N>
__device__ __forceinline__ void words_unaligned(const uint8_t* buf, int off, uint32_t* w) {
  const int mis = off & 3;
  const uint32_t* base = reinterpret_cast<const uint32_t*>(buf + (off - mis));
  const unsigned shift = 8 * mis;
  uint32_t prev = base[0];
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const uint32_t next = base[i + 1];
    w[i] = __funnelshift_r(prev, next, shift);
    prev = next;
  }
}
// 8 words from a 16-byte aligned address.
__device__ __forceinline__ void words8_aligned(const uint8_t* p, uint32_t* w) {
  const uint4 a = reinterpret_cast<const uint4*>(p)[0], b = reinterpret_cast<const uint4*>(p)[1];
  w[0] = a.x; w[1] = a.y; w[2] = a.z; w[3] = a.w; w[4] = b.x; w[5] = b.y; w[6] = b.z; w[7] = b.w;
}
__device__ __forceinline__ float f16_at(const uint8_t* p) { return f16_bits_to_f32(*reinterpret_cast<const uint16_t*>(p)); }

// One lane's share ("item") of a weight block: its quants as int8 words, in input order, and the
// factors that turn integer sums with the activations into its part of the dot product:
//   a · d_x · Σ_lo + c · d_x · Σ_hi − b · d_x Σ q_x
// (lo / hi: the first / second half of the words; c = a unless the halves have their own scales).
// b is set and used only by types with has_min (an offset term); item_dot skips it otherwise.
template <int NW>
struct Item {
  uint32_t q[NW];
  float a, c, b;
};

// Per type: `blocks` per chunk (a multiple of 16 bytes: the copy unit), `lanes` items per block,
// and where an item's inputs lie: activation group `group(sub)` of the block, offset `x_off(sub)`.
template <Type T> struct QDot;

// Q8_0's item is half a block. An item of a whole block (one scale load, 9 word loads and 8
// funnel shifts where two halves take 10 and 8; chunks of 32 blocks, 3 stages, as Q4_0) ran the
// GEMVs alone at the same rate on an H100 (keel_cuda_bench gemv, GB/s: 4096 x 12288 2583 ->
// 2642, 4096 x 4096 2113 -> 2146, the others within 1%) but decoded slower (Qwen3-8B Q8_0 at
// depth 0 / 4096 / 32768 289.4 / 257.9 / 186.5 and 285.1 / 257.6 / 184.1 -> 260.0 / 249.0 /
// 179.4 and 262.4 / 248.2 / 173.8 tok/s). The likely cause, not isolated: its stages take 13.5
// KB of shared memory a CTA against 9.2, and in a decode step each kernel's CTAs are scheduled
// beside the previous kernel's (PDL), so the footprint counts there and not in the benchmark.
template <> struct QDot<Type::Q8_0> {  // item = 16 quants (half a block)
  static constexpr int bytes = 34, elems = 32, blocks = 16, lanes = 2, nw = 4, stages = 4;
  static constexpr int wide_blocks = 32, wide_stages = 3;  // tall matrices: see wide_for
  __device__ static int group(int) { return 0; }
  __device__ static int x_off(int sub) { return 16 * sub; }
  static constexpr bool has_min = false;
  __device__ static Item<nw> unpack(const uint8_t* buf, int off, int sub) {
    Item<nw> it;
    words_unaligned<4>(buf, off + 2 + 16 * sub, it.q);
    it.a = it.c = f16_at(buf + off);
    return it;
  }
};

template <> struct QDot<Type::Q4_0> {  // item = the whole block: low nibbles 0..15, high 16..31
  static constexpr int bytes = 18, elems = 32, blocks = 32, lanes = 1, nw = 8, stages = 4;
  static constexpr int wide_blocks = blocks, wide_stages = stages;
  __device__ static int group(int) { return 0; }
  __device__ static int x_off(int) { return 0; }
  static constexpr bool has_min = true;
  __device__ static Item<nw> unpack(const uint8_t* buf, int off, int) {
    Item<nw> it;
    uint32_t raw[4];
    words_unaligned<4>(buf, off + 2, raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      it.q[i] = raw[i] & 0x0F0F0F0Fu;
      it.q[4 + i] = (raw[i] >> 4) & 0x0F0F0F0Fu;
    }
    it.a = it.c = f16_at(buf + off);
    it.b = 8.0f * it.a;  // quants are stored + 8
    return it;
  }
};

// Q4_K / Q5_K: item = sub-block j (32 inputs): the low (j even) or high (j odd) nibbles of qs
// bytes [32 (j/2), +32), Q5_K's fifth bit from bit j of qh[0..32).
// Chunks measured on the H200 (one token, keel_cuda_bench gemv): Q4_K 4 blocks and 4 stages ->
// 8 and 3, 4096 x 4096 6.9 -> 5.4 us, 24576 x 4096 24.1 -> 22.5 (Qwen3-8B Q4_K_M decode 341 ->
// 358 tok/s with Q6_K's below). Q5_K: 8 blocks and 4 stages through TMA (see launch_gemv_with).
// An item of a sub-block pair (both nibbles of the same qs bytes, the qh and scale words read
// once for two sub-blocks: fewer instructions a byte, 80 registers) measured slower on the H200:
// Qwen3.5-27B Q5_K_M decode 123 -> 113 tok/s, Qwen3-8B Q4_K_M 396-399 -> 340.
template <Type T> struct QDotK45 {
  static constexpr bool five = T == Type::Q5_K;
  static constexpr int bytes = five ? 176 : 144, elems = 256, blocks = 8, lanes = 8, nw = 8, stages = five ? 4 : 3;
  static constexpr int wide_blocks = blocks, wide_stages = stages;
  __device__ static int group(int sub) { return sub; }
  __device__ static int x_off(int) { return 0; }
  static constexpr bool has_min = true;
  // Sub-block j's shifts and masks depend on j alone (a lane keeps its j from chunk to chunk).
  __device__ static Item<nw> unpack(const uint8_t* buf, int off, int j) {  // blocks are 16-byte aligned here
    const uint8_t* p = buf + off;
    Item<nw> it;
    const uint32_t* w32 = reinterpret_cast<const uint32_t*>(p);
    const uint32_t dm = w32[0], sc[3] = {w32[1], w32[2], w32[3]};
    uint32_t qs[8];
    words8_aligned(p + (five ? 48 : 16) + 32 * (j / 2), qs);
    const unsigned shift = 4 * (j % 2);
#pragma unroll
    for (int i = 0; i < 8; ++i) it.q[i] = (qs[i] >> shift) & 0x0F0F0F0Fu;
    if constexpr (five) {
      // Bit j of each qh byte to bit 4: a rotation by 4 - j (bits that wrap land outside bit 4
      // of any byte for j in 0..7), then one mask.
      uint32_t qh[8];
      words8_aligned(p + 16, qh);
      const unsigned rot = unsigned(4 - j) & 31u;
#pragma unroll
      for (int i = 0; i < 8; ++i) it.q[i] |= __funnelshift_l(qh[i], qh[i], rot) & 0x10101010u;
    }
    int s, m;
    scale_min_k4_branchless(j, sc, s, m);
    it.a = it.c = f16_bits_to_f32(uint16_t(dm)) * float(s);
    it.b = f16_bits_to_f32(uint16_t(dm >> 16)) * float(m);
    return it;
  }
};
template <> struct QDot<Type::Q4_K> : QDotK45<Type::Q4_K> {};
template <> struct QDot<Type::Q5_K> : QDotK45<Type::Q5_K> {};

// Q6_K: item s = (half n = s / 4, quarter qq = s % 4): inputs 128 n + 32 qq + [0, 32), low bits
// from ql[64 n + 32 (qq % 2) + l] (high nibble when qq >= 2), high bits 2 qq of qh[32 n + l],
// minus 32 (signed bytes); scales sc[8 n + 2 qq] for l < 16 and sc[8 n + 2 qq + 1] above.
// Q6_K: 3 stages (2 before: 4096 x 12288 20.1 -> 18.9 us, the 151936-row output 200 -> 187).
template <> struct QDot<Type::Q6_K> {
  static constexpr int bytes = 210, elems = 256, blocks = 8, lanes = 8, nw = 8, stages = 3;
  static constexpr int wide_blocks = blocks, wide_stages = stages;
  __device__ static int group(int sub) { return sub; }
  __device__ static int x_off(int) { return 0; }
  static constexpr bool has_min = false;
  __device__ static Item<nw> unpack(const uint8_t* buf, int off, int s) {
    const uint8_t* p = buf + off;
    const int n = s / 4, qq = s % 4;
    Item<nw> it;
    uint32_t ql[8], qh[8];
    words_unaligned<8>(buf, off + 64 * n + 32 * (qq % 2), ql);
    words_unaligned<8>(buf, off + 128 + 32 * n, qh);
    const unsigned lshift = 4 * (qq / 2), hshift = 2 * qq;
#pragma unroll
    for (int i = 0; i < 8; ++i)
      it.q[i] = __vsub4(((ql[i] >> lshift) & 0x0F0F0F0Fu) | (((qh[i] >> hshift) & 0x03030303u) << 4), 0x20202020u);
    const float d = f16_at(p + 208);
    const auto* sc = reinterpret_cast<const int8_t*>(p + 192 + 8 * n + 2 * qq);
    it.a = d * float(sc[0]);
    it.c = d * float(sc[1]);
    return it;
  }
};

// One token's activations for an item: its NW·4 quants and its group's (d, d·Σq).
template <int NW>
struct ItemAct {
  int4 x[NW / 4];
  float2 s;
};
// xq: 16-byte aligned. The activations are read-only while a GEMV runs (the non-coherent path).
// kShared: xq and s point into shared memory.
template <int NW, bool kShared>
__device__ __forceinline__ ItemAct<NW> load_item_act(const int8_t* xq, const float2* s) {
  ItemAct<NW> a;
#pragma unroll
  for (int v = 0; v < NW / 4; ++v)
    a.x[v] = kShared ? reinterpret_cast<const int4*>(xq)[v] : __ldg(reinterpret_cast<const int4*>(xq) + v);
  a.s = kShared ? *s : __ldg(s);
  return a;
}

// The item's part of one token's dot product. kMin: the type has an offset term (b); without
// one it is not computed.
template <bool kMin, int NW>
__device__ __forceinline__ float item_dot(const Item<NW>& it, const ItemAct<NW>& a) {
  int lo = 0, hi = 0;
  if constexpr (NW == 4) {
    lo = __dp4a(int(it.q[0]), a.x[0].x, __dp4a(int(it.q[1]), a.x[0].y, 0));
    hi = __dp4a(int(it.q[2]), a.x[0].z, __dp4a(int(it.q[3]), a.x[0].w, 0));
  } else {
    const int4 x0 = a.x[0], x1 = a.x[1];
    lo = __dp4a(int(it.q[0]), x0.x, __dp4a(int(it.q[1]), x0.y, __dp4a(int(it.q[2]), x0.z, __dp4a(int(it.q[3]), x0.w, 0))));
    hi = __dp4a(int(it.q[4]), x1.x, __dp4a(int(it.q[5]), x1.y, __dp4a(int(it.q[6]), x1.z, __dp4a(int(it.q[7]), x1.w, 0))));
  }
  const float dot = a.s.x * (it.a * float(lo) + it.c * float(hi));
  if constexpr (kMin) return dot - it.b * a.s.y;
  else return dot;
}

// The weights of one launch (one type and input width, the same activations): CTAs
// [first_cta, next target's first_cta) take target k's rows.
constexpr int kMaxTargets = 4;
struct Target {
  const uint8_t* w;
  float* y;
  int n_out;
  int split;  // parts per row (split_for)
  int first_cta;
};
struct Targets {
  Target t[kMaxTargets];
  int count;
};

// A CTA of kWarps warps takes kWarps / split rows; each row is cut into `split` parts (split
// warps) that take interleaved chunks of it. A warp streams its chunks through STAGES
// shared-memory buffers of BLOCKS blocks (cp.async, 16 bytes per lane per copy; or with TMA one
// bulk copy per chunk from lane 0, landing on the stage's mbarrier; the next chunks in flight
// while one is used); each lane then takes its items of the chunk. Up to NT
// tokens share every unpacked item. The parts' sums are added in part order (deterministic).
// A lane's items sit at the same place in every chunk (same block, sub-item and offsets), so
// their geometry, and the shifts and masks that depend on it, are computed once per row: with
// that and fewer copy instructions, the instructions a Q4_K item costs fell by 13%, Q8_0's by
// 20% (ncu), and decode rose (H200, tok/s at depth 0 / 4096 / 32768, one run, old and new in
// turn): Qwen3-8B Q4_K_M 347 / 308 / 234 -> 375 / 338 / 249, Q8_0 (with the prefetch below)
// 293 / 269 / 213 -> 311 / 284 / 218; Qwen3.5-27B Q5_K_M at depth 0 111 -> 120.
//
// A warp that streamed several whole rows, its copies running on across row ends, measured no
// faster, though with one row a warp the per-warp setup was 37% of a Q5_K GEMV's instructions at
// 5120 inputs (ncu source counters): on the H200 (keel_cuda_bench gemv, GB/s, one row a warp ->
// 2 / 4 consecutive rows a warp) Q5_K 17408 x 5120 2811 -> 2774 / 2700, 34816 x 5120 3056 -> 3131
// / 3151, 5120 x 17408 2657 -> 2202 / 1315 (too few warps for the rows); a wave of warps taking
// rows g, g + W, ... 2941 / 3084 / 2242 on the same three (2812 / 3047 / 2710 in that run);
// Qwen3.5-27B Q5_K_M decode 124.4 -> 119.6 / 108.3 and 125.4 -> 125.1 tok/s (waves). The row's
// bytes, not the setup, bound it.
//
// Q8_0 with one token loads a chunk's activations before awaiting its weights, so their
// latency hides behind the wait, and keeps 16 CTAs an SM (at most 32 registers: without the
// bound the held activations cost occupancy). Measured on the H200 (keel_cuda_bench gemv, one
// token; before -> prefetch): 4096 x 4096 8.8 -> 7.1 us, 4096 x 12288 19.0 -> 16.6. The other
// types measured slower with it (rows x inputs: Q4_K 24576 x 4096 20.3 -> 22.6, Q6_K 5120 x
// 17408 25.9 -> 32.5): their items hold more registers, and the bound spills them. Without the
// bound, long rows of the other types gain from it too (act_from).
//
// Where a lane's activations come from (one token; act_from picks per launch): global memory as
// it uses them, registers loaded before it awaits the chunk's weights, or the CTA's shared memory,
// copied there once after the wait. Several tokens read global memory.
enum class ActFrom { global, regs, shared };

template <Type T, int NT, int BLOCKS, int STAGES, bool TMA, ActFrom ACT>
__global__ void __launch_bounds__(32 * kWarps, ACT == ActFrom::regs && T == Type::Q8_0 ? 16 : 1)
    gemv_q8_kernel(Targets targets, int row_bytes, int n_in, ActView act, int n_tok) {
  using D = QDot<T>;
  constexpr bool kPrefetch = ACT == ActFrom::regs;
  static_assert(ACT == ActFrom::global || NT == 1, "one token's activations");
  int k = 0;  // this CTA's weight
  while (k + 1 < targets.count && int(blockIdx.x) >= targets.t[k + 1].first_cta) ++k;
  const uint8_t* __restrict__ w = targets.t[k].w;
  float* __restrict__ y = targets.t[k].y;
  const int n_out = targets.t[k].n_out, split = targets.t[k].split;
  // Rows of the types read with words_unaligned (Q8_0, Q4_0, Q6_K) may start at any even byte
  // (row bytes not a multiple of 16: Q6_K rows of 5120 or 17408 inputs, Qwen3.5-27B's): the copies
  // then take the 16-byte aligned window around the chunk (one more piece) and the items read at
  // the row's offset `mis` in it. Buffers: the chunk, that piece, and the word words_unaligned
  // may read past the end.
  constexpr bool kAnyAlign = T == Type::Q8_0 || T == Type::Q4_0 || T == Type::Q6_K;
  constexpr int kChunk = BLOCKS * D::bytes, kStride = kChunk + (kAnyAlign ? 32 : 16), kStages = STAGES;
  constexpr int kItemsPerLane = BLOCKS * D::lanes / 32, kGroups = D::elems / int(kActGroup);
  constexpr int kCopies = (kChunk / 16 + (kAnyAlign ? 1 : 0) + 31) / 32;  // cp.async copies a lane makes per chunk, at most
  static_assert(kChunk % 16 == 0 && BLOCKS * D::lanes % 32 == 0 && kStride % 16 == 0, "chunks of whole copies and items");
  __shared__ __align__(16) uint8_t smem[kWarps][kStages][kStride];
  __shared__ float part_sum[kWarps][NT];
  __shared__ __align__(8) uint64_t landed[kWarps][kStages];  // TMA: a stage's copy has landed
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row = (int(blockIdx.x) - targets.t[k].first_cta) * (kWarps / split) + warp / split, part = warp % split;
  const int n_blocks = n_in / D::elems, n_chunks = (n_blocks + BLOCKS - 1) / BLOCKS;
  const int my_chunks = row < n_out && part < n_chunks ? (n_chunks - part + split - 1) / split : 0;
  const uint8_t* wr = w + static_cast<size_t>(row < n_out ? row : 0) * row_bytes;
  const int mis = kAnyAlign ? int(reinterpret_cast<uintptr_t>(wr) & 15) : 0;
  const uint8_t* wa = wr - mis;                                  // 16-byte aligned
  const int span = row_bytes + mis, pieces = kChunk / 16 + (mis != 0);  // the row's bytes from wa; pieces a chunk
  const int groups_per_row = n_in / int(kActGroup);
  uint8_t* const stages = smem[warp][0];

  if constexpr (TMA) {
    if (lane == 0)
      for (int st = 0; st < kStages; ++st) mbarrier_init(&landed[warp][st]);
    mbarrier_init_fence();
    __syncwarp();
  }
  auto issue = [&](int j) {  // this warp's j-th chunk; cp.async always commits (uniform group counts)
    const int base = (part + j * split) * kChunk;
    if constexpr (TMA) {
      if (j < my_chunks && lane == 0) {
        const int bytes = min(16 * pieces, (span - base + 15) / 16 * 16);  // ends within the allocation (256-byte rounded)
        bulk_copy(stages + (j % kStages) * kStride, wa + base, uint32_t(bytes), &landed[warp][j % kStages]);
      }
      return;
    }
    if (j < my_chunks) {
      // Lane copies pieces lane + 32 m; pieces from the row's end on are zero-filled (only in
      // its last chunk: `whole` spares the others the test).
      uint8_t* dst = stages + (j % kStages) * kStride + 16 * lane;
      const int first = base + 16 * lane;
      const bool whole = base + 16 * pieces <= span;
#pragma unroll
      for (int m = 0; m < kCopies; ++m)
        if (lane + 32 * m < pieces) {
          const bool valid = whole || first + 512 * m < span;
          cp_async16(dst + 512 * m, wa + (valid ? first + 512 * m : 0), valid);
        }
    }
    cp_async_commit();
  };
#pragma unroll
  for (int j = 0; j < kStages - 1; ++j) issue(j);  // weights only: they may stream in before ...
  release_dependents();
  dependency_wait();                                // ... the kernels that make the activations end
  extern __shared__ __align__(16) uint8_t act_smem[];  // ActFrom::shared: [n_in] quants, then the groups' (d, d·Σq)
  if constexpr (ACT == ActFrom::shared) {
    const int4* gq = reinterpret_cast<const int4*>(act.q);
    for (int i = threadIdx.x; i < n_in / 16; i += blockDim.x) reinterpret_cast<int4*>(act_smem)[i] = __ldg(gq + i);
    for (int i = threadIdx.x; i < groups_per_row; i += blockDim.x)
      reinterpret_cast<float2*>(act_smem + n_in)[i] = __ldg(act.s + i);
    __syncthreads();
  }
  const int8_t* const act_q = ACT == ActFrom::shared ? reinterpret_cast<const int8_t*>(act_smem) : act.q;
  const float2* const act_s = ACT == ActFrom::shared ? reinterpret_cast<const float2*>(act_smem + n_in) : act.s;

  // This lane's items in every chunk: item lane + 32 i is sub-item sub[i] of block blk[i]; its
  // bytes start at off[i] of the stage, its activations at act_off[i] (quants) and group
  // act_group[i] from the chunk's first. All fixed from chunk to chunk.
  int blk[kItemsPerLane], sub[kItemsPerLane], off[kItemsPerLane], act_group[kItemsPerLane], act_off[kItemsPerLane];
#pragma unroll
  for (int i = 0; i < kItemsPerLane; ++i) {
    const int item = lane + 32 * i;
    blk[i] = item / D::lanes;
    sub[i] = item % D::lanes;
    off[i] = mis + blk[i] * D::bytes;
    act_group[i] = blk[i] * kGroups + D::group(sub[i]);
    act_off[i] = act_group[i] * int(kActGroup) + D::x_off(sub[i]);
  }
  float acc[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = 0.0f;
  for (int j = 0; j < my_chunks; ++j) {
    issue(j + kStages - 1);
    const int block0 = (part + j * split) * BLOCKS;
    const int8_t* xq = act_q + block0 * D::elems;
    const float2* xs = act_s + block0 * kGroups;
    ItemAct<D::nw> xa[kPrefetch ? kItemsPerLane : 1];  // ActFrom::regs
    if constexpr (kPrefetch) {
#pragma unroll
      for (int i = 0; i < kItemsPerLane; ++i)
        if (block0 + blk[i] < n_blocks) xa[i] = load_item_act<D::nw, false>(xq + act_off[i], xs + act_group[i]);
    }
    if constexpr (TMA) {
      mbarrier_wait(&landed[warp][j % kStages], uint32_t(j / kStages) & 1u);
    } else {
      cp_async_wait<kStages - 1>();  // chunk j has landed (for this lane's copies) ...
      __syncwarp();                  // ... and for every lane's
    }
    const uint8_t* buf = stages + (j % kStages) * kStride;
    // Under ncu (H100, one token, rows x inputs) these kernels' largest stall is their
    // shared-memory loads (Q5_K 5120 x 17408: 5.9 of 10.8 cycles between a warp's instructions;
    // 17408 x 5120 3.9 of 10.7; Q6_K 5120 x 17408 3.5 of 8.3; Q8_0 12288 x 4096 9.1 of 17.5), and
    // in the SASS the branch below keeps a lane's second item's loads behind its first item's
    // arithmetic. Without it (one token: every item computed, those past the row's end from the
    // row's first activations and dropped with a select) the loads issue together, but the kernels
    // took more registers (Q5_K 72 -> 80, Q6_K 79 -> 90) and measured slower (H100, GB/s, main ->
    // no branch -> no branch bounded to 6 CTAs an SM): Q5_K 17408 x 5120 2560 -> 2320 / 2282, 34816
    // x 5120 2831 -> 2541 / 2505, Q6_K 248320 x 5120 3051 -> 2620 / 2602; decode, tok/s,
    // Qwen3.5-27B Q5_K_M at depth 0 118.9 / 118.9 -> 112.1 / 111.7 -> 109.8 / 110.0, Qwen3-8B Q8_0
    // at depth 0 / 4096 296.2 / 263.4 -> 260.4 / 237.7 -> 261.1 / 237.9; and token 0's bits then
    // differed from the several-token kernel's (GemvQ8EveryTypeMatchesReference's
    // alone-versus-among check failed).
#pragma unroll
    for (int i = 0; i < kItemsPerLane; ++i) {
      if (block0 + blk[i] >= n_blocks) continue;  // past the row's end (its last chunk)
      const auto it = D::unpack(buf, off[i], sub[i]);
      if constexpr (kPrefetch) {
        acc[0] += item_dot<D::has_min>(it, xa[i]);
      } else {
#pragma unroll
        for (int t = 0; t < NT; ++t)
          if (NT == 1 || t < n_tok)
            acc[t] += item_dot<D::has_min>(it, load_item_act<D::nw, ACT == ActFrom::shared>(
                                                   xq + t * n_in + act_off[i], xs + t * groups_per_row + act_group[i]));
      }
    }
    __syncwarp();  // every lane is done with this stage before it is refilled
  }
  if constexpr (!TMA) cp_async_wait<0>();
  if (split == 1) {  // whole rows: no barrier, so a finished warp's CTA slot frees at once
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const float s = warp_sum(acc[t]);
      if (lane == 0 && (NT == 1 || t < n_tok) && row < n_out) y[static_cast<size_t>(t) * n_out + row] = s;
    }
    return;
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float s = warp_sum(acc[t]);
    if (lane == 0) part_sum[warp][t] = s;
  }
  __syncthreads();  // split is the same for the whole CTA
  if (part == 0 && row < n_out && lane < n_tok) {
    float s = part_sum[warp][lane];
    for (int p = 1; p < split; ++p) s += part_sum[warp + p][lane];
    y[static_cast<size_t>(lane) * n_out + row] = s;
  }
}

// Whether a launch takes its type's wide chunks (Q8_0 only: 32 blocks, 3 stages). Measured on
// the H200, one token, weights in turn from memory (keel_cuda_bench gemv), 16 -> 32 blocks:
// 4096 x 4096 7.8 -> 9.1 us, 6144 x 4096 11.5 -> 10.7, 24576 x 4096 32.9 -> 30.8, the 151936-row
// output 188 -> 164, but 4096 x 12288 17.4 -> 21.5: wide for tall matrices of short rows. In
// decode too (H200, Qwen3-8B Q8_0 at depth 0 / 4096 / 32768, tok/s, two rounds): this rule 355.7
// / 308.4 / 235.3 and 356.1 / 306.2 / 235.1; the Q/K/V launch (6144 rows) narrow, so its CTAs
// fit one wave, 352.6 / 306.6 / 234.7 and 353.3 / 307.8 / 235.3; every launch narrow 329.0 /
// 291.5 / 226.1 and 329.1 / 291.8 / 226.4.
template <Type T>
bool wide_for(int64_t rows, int64_t n_in) {
  return T == Type::Q8_0 && rows >= 6144 && n_in <= 8192;
}

// Warps the GPU keeps resident (its SM count times 64), read once.
int resident_warps() {
  static const int warps = [] {
    int device = 0, sms = 0;
    check(cudaGetDevice(&device), "cudaGetDevice");
    check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
    return sms * 64;
  }();
  return warps;
}

// Parts per row. Whole rows (1) unless their warps would leave the GPU's last wave less than 60%
// full (a decode matmul lasts a few microseconds: rows too few to fill one wave, as in the K and
// V projections, or a half-empty last wave leave bandwidth unused); then the part count (2 or 4,
// each warp keeping at least two chunks to pipeline) that fills it best. Measured on the H200
// (Qwen3-8B-shaped decode): cutting every row in parts where that filled the waves better raised
// Q8_0 (183 -> 199 tok/s) but lowered Q4_K_M (234 -> 220); this rule measured 188 / 222.
// The 64 warps an SM is not what the K-quant kernels keep resident (Q5_K: 69 registers, 28 warps),
// but counting their real occupancy (cudaOccupancyMaxActiveBlocksPerMultiprocessor) and bounding
// them to 64 registers (32 warps, no spills) measured slower on the H200: Qwen3.5-27B Q5_K_M decode
// 123.4 -> 118.1 tok/s, 111.3 with the part count that fills the last wave best; Qwen3-8B Q8_0 329.2
// -> 326.1 (one run). More warps did not raise the Q5_K rows' rate (17408-wide rows 2.54 -> 2.44
// TB/s): under ncu they issue an instruction every 8 cycles with 22 warps resident.
int split_for(int64_t n_out, int n_chunks) {
  const int64_t slots = resident_warps();
  auto fill = [&](int s) {
    const int64_t tasks = n_out * s;
    return double(tasks) / double((tasks + slots - 1) / slots * slots);
  };
  int best = 1;
  if (fill(1) >= 0.6) return best;
  for (int s = 2; s <= kWarps && 2 * s <= n_chunks; s *= 2)
    if (fill(s) > fill(best) + 1e-9) best = s;
  return best;
}

// Where one token's activations come from (ActFrom), per launch. Measured on an H100 (one
// token, keel_cuda_bench gemv, GB/s; then decode, tok/s, old and new rule in turn, two rounds):
//   - Q8_0's wide launches (tall matrices of short rows): the activations in shared memory, 24576 x
//     4096 2688 -> 2845, 6144 x 4096 2294 -> 2394; its other launches keep registers (shared: 4096
//     x 4096 2161 -> 1843, 4096 x 12288 2587 -> 2298).
//   - the other types' rows of 8192 inputs or more: registers, a chunk ahead (ncu: without them
//     their dot products waited on the loads, 41% of the stall samples of Q5_K 17408 x 5120),
//     Q5_K 5120 x 17408 2165 -> 2381, Q6_K 5120 x 17408 2278 -> 2454, Q4_K 4096 x 12288 2039 ->
//     2108; shorter rows keep global loads (registers: Q4_K 4096 x 4096 1799 -> 1457, Q5_K 17408
//     x 5120 2527 -> 2491; shared: slower for every K-quant shape).
//   Decode, old -> this rule: Qwen3-8B Q8_0 264.6 / 263.7 -> 272.5 / 272.5 at depth 0, Q4_K_M
//   377.2 / 377.0 -> 378.8 / 380.2, Qwen3.5-27B Q5_K_M 114.5 / 114.7 -> 116.0 / 116.5.
// Wide launches have rows of at most 8192 inputs (wide_for): their activations take at most 10 KB
// of shared memory beside the stages. Bounding the
// shared kernel to 16 CTAs an SM (32 registers, from 55) measured no better: 24576 x 4096 2839 ->
// 2823 GB/s, 6144 x 4096 2383 -> 2289, Qwen3-8B Q8_0 decode at depth 0 272.7 / 272.9 -> 271.5 /
// 271.6 tok/s.
template <Type T>
ActFrom act_from(int64_t n_in, bool wide) {
  if (T == Type::Q8_0) return wide ? ActFrom::shared : ActFrom::regs;
  return n_in >= 8192 ? ActFrom::regs : ActFrom::global;
}

// The dynamic shared memory of an ActFrom::shared launch: a token's quants, then its groups' (d, d·Σq).
size_t act_shared_bytes(int64_t n_in) { return static_cast<size_t>(n_in) + n_in / kActGroup * sizeof(float2); }

template <Type T, bool TMA>
void launch_gemv(const GemvOut* outs, int count, const void* act, int64_t n_tokens, cudaStream_t stream) {
  using D = QDot<T>;
  const DeviceWeight& w0 = *outs[0].w;
  const int rb = static_cast<int>(quant::row_bytes(w0.type, static_cast<uint64_t>(w0.n_in)));
  int64_t rows = 0;
  for (int i = 0; i < count; ++i) rows += outs[i].w->n_out;
  const bool wide = wide_for<T>(rows, w0.n_in);
  const int blocks = wide ? D::wide_blocks : D::blocks;
  const int n_chunks = static_cast<int>((w0.n_in / D::elems + blocks - 1) / blocks);
  Targets targets{};
  targets.count = count;
  int ctas = 0;
  for (int i = 0; i < count; ++i) {
    const DeviceWeight& w = *outs[i].w;
    const int split = split_for(w.n_out, n_chunks), rows_per_cta = kWarps / split;
    targets.t[i] = {static_cast<const uint8_t*>(w.data), outs[i].y, int(w.n_out), split, ctas};
    ctas += static_cast<int>((w.n_out + rows_per_cta - 1) / rows_per_cta);
  }
  const ActView a = act_view(act, w0.n_in, n_tokens);
  if (n_tokens > 1) {
    if (wide)
      launch(gemv_q8_kernel<T, kGemvMaxTokens, D::wide_blocks, D::wide_stages, TMA, ActFrom::global>, ctas, 32 * kWarps, 0,
             stream, targets, rb, int(w0.n_in), a, int(n_tokens));
    else
      launch(gemv_q8_kernel<T, kGemvMaxTokens, D::blocks, D::stages, TMA, ActFrom::global>, ctas, 32 * kWarps, 0, stream,
             targets, rb, int(w0.n_in), a, int(n_tokens));
    return;
  }
  const ActFrom from = act_from<T>(w0.n_in, wide);
  const size_t smem = from == ActFrom::shared ? act_shared_bytes(w0.n_in) : 0;
  auto go = [&](auto kernel) { launch(kernel, ctas, 32 * kWarps, smem, stream, targets, rb, int(w0.n_in), a, 1); };
  // Only the kernels act_from may pick are instantiated.
  if constexpr (T == Type::Q8_0) {
    if (!wide) return go(gemv_q8_kernel<T, 1, D::blocks, D::stages, TMA, ActFrom::regs>);
    if (from == ActFrom::shared) return go(gemv_q8_kernel<T, 1, D::wide_blocks, D::wide_stages, TMA, ActFrom::shared>);
    return go(gemv_q8_kernel<T, 1, D::wide_blocks, D::wide_stages, TMA, ActFrom::regs>);
  } else {
    if (from == ActFrom::regs) return go(gemv_q8_kernel<T, 1, D::blocks, D::stages, TMA, ActFrom::regs>);
    return go(gemv_q8_kernel<T, 1, D::blocks, D::stages, TMA, ActFrom::global>);
  }
}

// How the weights stream in: one bulk copy (TMA) per chunk, or cp.async by every lane. Measured
// on the H200 (one token, keel_cuda_bench gemv; cp.async -> TMA): Q6_K 4096 x 12288 18.9 -> 17.6
// us, the 151936-row output 187 -> 171; Q8_0 16-block chunks 4096 x 4096 7.8 -> 7.4, 4096 x
// 12288 17.4 -> 16.8, but its wide chunks 24576 x 4096 30.8 -> 45.7; Q4_K even. Q5_K, 4-block
// chunks through cp.async -> 8 blocks through TMA (4 stages), two machines: 5120 x 17408
// 24.1 / 23.9 -> 23.2 / 22.9 us, 34816 x 5120 40.4 / 40.6 -> 40.2 / 40.2, 16384 x 5120 20.6 ->
// 20.8 / 20.7, 5120 x 6144 10.0 -> 10.3; Qwen3.5-27B Q5_K_M decode at depth 0 123.1 / 122.8 /
// 123.1 / 122.6 -> 124.9 / 124.9 / 124.2 / 124.7 tok/s. Slower, in the same runs: Q5_K with 6 or
// 8 stages (decode 117-118), Q6_K with 4 or 6 stages or 16-block chunks, Q8_0 with 5 stages.
// Q8_0 with 3 stages (a quarter less shared memory) or 2: faster alone on an H100 (keel_cuda_bench
// gemv, GB/s, 4 / 3 / 2 stages: 4096 x 4096 2120 / 2254 / 2289, 4096 x 12288 2538 / 2634 / 2495)
// but not in decode (Qwen3-8B Q8_0 at depth 0 / 4096 / 32768, two rounds: 286.5 / 256.9 / 185.8
// and 289.6 / 257.4 / 185.9 with 4, 289.7 / 252.5 / 187.0 and 290.8 / 258.1 / 187.2 with 3,
// 279.9 / 252.1 / 184.2 and 281.5 / 248.8 / 174.8 with 2).
// Also slower: each launch's last CTAs prefetching into L2 (cp.async.bulk.prefetch.L2) the first
// megabytes of the weight the next GEMV of the step reads (learned from the step before), to keep
// the bus busy across the norms and attention between them: Qwen3-8B Q8_0 decode at depth 0
// 318.0 / 318.0 tok/s without, 316.3 with 4 MB, 310.9 / 312.2 with 8, 289.3 with 16, 270.8 with 32;
// Qwen3.5-27B Q5_K_M 123.9 / 123.7 without, 122.9 / 122.5 with 8, 120.0 with 16 (H200, one run).
template <Type T>
void launch_gemv_with(const GemvOut* outs, int count, const void* act, int64_t n_tokens, cudaStream_t stream) {
  int64_t rows = 0;
  for (int i = 0; i < count; ++i) rows += outs[i].w->n_out;
  const bool tma = T == Type::Q6_K || T == Type::Q5_K || (T == Type::Q8_0 && !wide_for<T>(rows, outs[0].w->n_in));
  if (tma) launch_gemv<T, true>(outs, count, act, n_tokens, stream);
  else launch_gemv<T, false>(outs, count, act, n_tokens, stream);
}

}  // namespace

void act_q8_parts(void* act, int64_t n_in, int64_t n_tokens, int8_t*& q, float2*& s) {
  auto* base = static_cast<uint8_t*>(act);
  q = reinterpret_cast<int8_t*>(base);
  s = reinterpret_cast<float2*>(base + align256(static_cast<size_t>(n_in * n_tokens)));
}

size_t act_q8_bytes(int64_t n_in, int64_t n_tokens) {
  const size_t n = static_cast<size_t>(n_in * n_tokens);
  return align256(n) + align256(n / kActGroup * sizeof(float2));
}

bool gemv_q8_supports(const DeviceWeight& w) {
  switch (w.type) {
    case Type::Q4_0: case Type::Q8_0: case Type::Q4_K: case Type::Q5_K: case Type::Q6_K: break;
    default: return false;
  }
  const uint64_t rb = quant::row_bytes(w.type, static_cast<uint64_t>(w.n_in));
  // Q4_K and Q5_K items read their blocks 16-byte aligned (their rows always are); the others
  // take rows that start at any even byte (gemv_q8_kernel's window).
  const bool aligned = w.type != Type::Q4_K && w.type != Type::Q5_K ? rb % 2 == 0 : rb % 16 == 0;
  return aligned && rb < (uint64_t{1} << 31) && w.n_in % kActGroup == 0;
}

void quantize_act_q8(const float* x, int64_t n_tokens, int64_t n_in, void* act, cudaStream_t stream) {
  if (n_in % kActGroup != 0) throw Error("internal: 8-bit activations need rows of a multiple of 32 inputs");
  int8_t* q = nullptr;
  float2* s = nullptr;
  act_q8_parts(act, n_in, n_tokens, q, s);
  const int64_t groups = n_tokens * n_in / kActGroup;
  constexpr int threads = 256;
  launch(quantize_act_kernel, static_cast<unsigned>((groups * 32 + threads - 1) / threads), threads, 0, stream, 
         x, groups, q, s);
}

void gemv_q8(const DeviceWeight& w, const void* act, int64_t n_tokens, float* y, cudaStream_t stream) {
  const GemvOut out{&w, y};
  gemv_q8_many(&out, 1, act, n_tokens, stream);
}

void gemv_q8_many(const GemvOut* outs, int count, const void* act, int64_t n_tokens, cudaStream_t stream) {
  if (n_tokens > kGemvMaxTokens) throw Error("internal: gemv_q8 takes at most 8 tokens");
  if (count > kMaxTargets) throw Error("internal: gemv_q8_many takes at most 4 weights");
  for (int i = 0; i < count; ++i)
    if (!gemv_q8_supports(*outs[i].w) || outs[i].w->n_in != outs[0].w->n_in)
      throw Error("internal: gemv_q8 cannot multiply this weight");
  // One launch per weight type (the order of the outputs is free).
  GemvOut same[kMaxTargets];
  bool done[kMaxTargets] = {};
  for (int i = 0; i < count; ++i) {
    if (done[i]) continue;
    int n = 0;
    for (int j = i; j < count; ++j)
      if (!done[j] && outs[j].w->type == outs[i].w->type) {
        same[n++] = outs[j];
        done[j] = true;
      }
    switch (outs[i].w->type) {
      case Type::Q4_0: launch_gemv_with<Type::Q4_0>(same, n, act, n_tokens, stream); break;
      case Type::Q8_0: launch_gemv_with<Type::Q8_0>(same, n, act, n_tokens, stream); break;
      case Type::Q4_K: launch_gemv_with<Type::Q4_K>(same, n, act, n_tokens, stream); break;
      case Type::Q5_K: launch_gemv_with<Type::Q5_K>(same, n, act, n_tokens, stream); break;
      case Type::Q6_K: launch_gemv_with<Type::Q6_K>(same, n, act, n_tokens, stream); break;
      default: throw Error("internal: gemv_q8 type");
    }
  }
}

}  // namespace keel::cuda
