// The fast path's integer GEMV with AVX-512 VNNI (compiled with -mavx512{f,bw,vl,vnni}, reached only
// when cpu_has_avx512_vnni()): the 512-bit twins of matmul_q8_gemv_x86.h's kernels, whose results
// are the 256-bit kernels' (and so the AVX-VNNI file's) bit for bit.
// GCC 12 warns inside its own unmasked AVX-512 intrinsics once they are inlined into loops (the
// `__Y = __Y` of _mm512_undefined_*, GCC bug 105593); the warning is noise.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "backend/cpu/matmul_q8_gemv_x86.h"

namespace keel::cpu {

Q8GemvFn q8_gemv_vnni(quant::Type type) { return gemv_table_512(type); }

}  // namespace keel::cpu
