// The fast path's integer GEMV with Advanced SIMD (every AArch64 CPU: SMULL + SADALP). The
// kernels are in matmul_q8_gemv_arm.h.
#include "backend/cpu/matmul_q8_gemv_arm.h"

namespace keel::cpu {

Q8GemvFn q8_gemv_neon(quant::Type type) { return gemv_table<DotNeon>(type); }

}  // namespace keel::cpu
