// The fast path's integer GEMV with SDOT (compiled with -march=armv8.2-a+dotprod; reached only when
// best_isa() found dotprod; the i8mm level uses it too: SMMLA pairs two rows' dot products, which a
// one-row-at-a-time GEMV has no use for). The kernels are in matmul_q8_gemv_arm.h.
#include "backend/cpu/matmul_q8_gemv_arm.h"

namespace keel::cpu {

Q8GemvFn q8_gemv_dotprod(quant::Type type) { return gemv_table<DotSdot>(type); }

}  // namespace keel::cpu
