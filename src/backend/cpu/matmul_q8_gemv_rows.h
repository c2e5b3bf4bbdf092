// The row loop of the fast path's SIMD GEMV kernels (matmul_q8_gemv_x86.h, matmul_q8_gemv_arm.h),
// shared by every weight type and instruction set. Internal linkage, like the kernels that
// include it: each file compiles its own copy under its own instruction-set flags.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "backend/cpu/matmul_q8.h"

namespace keel::cpu {
namespace {

// Rows are prefetched this many rows ahead: a row is 0.5-2 KiB at the widths of small models,
// about one DRAM latency of work. (The f32 GEMV measured +40-65 % GB/s from its prefetch of cold
// weights on one thread: the hardware prefetcher alone keeps too few lines in flight.)
constexpr int64_t kPrefetchRows = 2;

// On x86 into L2 only (prefetcht1): a decode's GEMVs went from 12 to 16 GB/s on two threads of a
// Sapphire Rapids VM (keel_bench MatmulFast/*/tokens:1/threads:2/cold, Q8_0, Q4_K, Q6_K alike;
// prefetcht0 fills the L1's few fill buffers with lines the kernel reaches only later, and
// prefetchnta measured 7-10 GB/s). Other targets keep the all-levels hint; not measured there.
#if defined(__x86_64__)
constexpr int kPrefetchLocality = 2;
#else
constexpr int kPrefetchLocality = 3;
#endif

inline void prefetch_row(const char* row, size_t row_bytes) {
  for (size_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(row + off, 0, kPrefetchLocality);
}

// Kernel::run<NT>(row, n_in, a, lda, out): out[t] = Σ_k W_row[k] · xq_t[k] for t < NT, where
// token t's activation blocks start at a + t * lda. Rows one at a time (a lone token: two at a
// time where the kernel has run_pair, each row's sum unchanged), tokens up to 4 at a time: each
// weight block is read once per 4 tokens. A token's result comes from the same instructions
// whatever NT, so it does not depend on the other tokens of the call.
template <class Kernel>
void gemv_rows(const void* w, size_t row_bytes, int64_t n_in, int64_t n_rows, const GemvActQ8* act,
               int64_t n_tok, float* y, int64_t ldy) {
  const int64_t nkb = (n_in + kQ8BlockK - 1) / kQ8BlockK;
  const char* base = static_cast<const char*>(w);
  for (int64_t t0 = 0; t0 < n_tok; t0 += 4) {
    const int nt = static_cast<int>(std::min<int64_t>(4, n_tok - t0));
    const GemvActQ8* a = act + t0 * nkb;
    for (int64_t r = 0; r < n_rows; ++r) {
      const char* row = base + static_cast<size_t>(r) * row_bytes;
      if (t0 == 0) {  // later groups of tokens find the rows where the first group left them
        if (r == 0)
          for (int64_t p = 1; p < std::min(kPrefetchRows, n_rows); ++p) prefetch_row(row + p * row_bytes, row_bytes);
        if (r + kPrefetchRows < n_rows) prefetch_row(row + kPrefetchRows * row_bytes, row_bytes);
      }
      if constexpr (requires { &Kernel::run_pair; }) {
        if (nt == 1 && r + 1 < n_rows) {  // decode: two rows at a time where the kernel has it
          if (t0 == 0 && r + 1 + kPrefetchRows < n_rows) prefetch_row(row + (kPrefetchRows + 1) * row_bytes, row_bytes);
          float pair[2];
          Kernel::run_pair(row, row + row_bytes, n_in, a, pair);
          y[t0 * ldy + r] = pair[0];
          y[t0 * ldy + r + 1] = pair[1];
          ++r;
          continue;
        }
      }
      float out[4];
      switch (nt) {
        case 1: Kernel::template run<1>(row, n_in, a, nkb, out); break;
        case 2: Kernel::template run<2>(row, n_in, a, nkb, out); break;
        case 3: Kernel::template run<3>(row, n_in, a, nkb, out); break;
        default: Kernel::template run<4>(row, n_in, a, nkb, out); break;
      }
      for (int t = 0; t < nt; ++t) y[(t0 + t) * ldy + r] = out[t];
    }
  }
}

}  // namespace
}  // namespace keel::cpu
