// The fast path's integer GEMV with AVX-512 VNNI (vpdpbusd on 256-bit vectors; compiled with
// -mavx512{f,bw,vl,vnni}, reached only when cpu_has_avx512_vnni()). Decode is memory bound:
// 512-bit vectors would not read the weights faster, and 256 bits keep one kernel for both files.
// The kernels are in matmul_q8_gemv_x86.h.
#include "backend/cpu/matmul_q8_gemv_x86.h"

namespace keel::cpu {

Q8GemvFn q8_gemv_vnni(quant::Type type) { return gemv_table<DotVnni>(type); }

}  // namespace keel::cpu
