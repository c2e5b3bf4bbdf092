// The fast path's integer GEMV with AVX-VNNI (VEX vpdpbusd; compiled with -mavx2 -mfma -mf16c -mbmi2
// -mavxvnni, reached only at the avxvnni level): the VNNI kernels of matmul_q8_gemv_x86.h, whose
// 256-bit instructions AVX-VNNI has in full, so their results are the AVX-512 VNNI file's.
#include "backend/cpu/matmul_q8_gemv_x86.h"

namespace keel::cpu {

Q8GemvFn q8_gemv_avxvnni(quant::Type type) { return gemv_table<DotVnni>(type); }

}  // namespace keel::cpu
