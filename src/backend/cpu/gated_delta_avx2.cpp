// The AVX2/FMA twin of the gated delta rule head kernels: gated_delta_impl.h compiled with
// -mavx2 -mfma (the GEMM tiles and row loops vectorise 8 wide with FMA). Only reached after
// best_isa() saw avx2 and fma.
#include "backend/cpu/gated_delta_impl.h"

namespace keel::cpu {
namespace {

void recurrent_avx2(const GatedDeltaArgs& a, int64_t h, float* ws) { recurrent_head(a, h, ws); }
void chunked_avx2(const GatedDeltaArgs& a, int64_t h, int64_t chunk, float* ws) {
  chunked_head(a, h, chunk, carve_chunk_work(ws, a.d_k, a.d_v, chunk));
}

}  // namespace

GdnHeadKernels gdn_head_kernels_avx2() { return {recurrent_avx2, chunked_avx2}; }

}  // namespace keel::cpu
