// The fast path's integer GEMV with AVX2 (vpmaddubsw/vpmaddwd; compiled with -mavx2 -mfma -mf16c,
// reached only after best_isa() saw AVX2). The kernels are in matmul_q8_gemv_x86.h.
#include "backend/cpu/matmul_q8_gemv_x86.h"

namespace keel::cpu {

Q8GemvFn q8_gemv_avx2(quant::Type type) { return gemv_table<DotAvx2>(type); }

}  // namespace keel::cpu
