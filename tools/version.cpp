// `keel --version`.
#include <cstdio>

#include "backend/cpu/matmul.h"
#include "build_info.h"
#include "commands.h"
#include "embedded/default_model.h"

namespace keel::cli {

void print_version(FILE* out) {
  const BuildInfo& info = build_info();
  std::fprintf(out, "keel %s (git %s, %s build)\n", info.version, info.git_commit, info.build_type);
  // Every CPU kernel file of the target architecture is compiled and chosen at run time
  // (matmul.h, best_isa).
#if defined(__x86_64__)
  const char* cpu_kernels = "cpu generic, avx2, avxvnni, avx512 (vnni)";
#elif defined(__aarch64__)
  const char* cpu_kernels = "cpu generic, neon, dotprod, i8mm";
#else
  const char* cpu_kernels = "cpu generic";
#endif
#ifdef KEEL_HAS_CUDA
  std::fprintf(out, "kernels compiled in: %s; cuda sm_90a + compute_90 PTX (--device cuda)\n", cpu_kernels);
#else
  std::fprintf(out, "kernels compiled in: %s; cuda not built\n", cpu_kernels);
#endif
  std::fprintf(out, "kernels selected:    cpu %s\n", cpu::isa_name(cpu::best_isa()));
  std::fprintf(out, "default model:       stories260K.gguf, embedded (%zu bytes)\n",
               embedded::default_model_bytes().size());
}

}  // namespace keel::cli
