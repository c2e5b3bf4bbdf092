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
  // Every CPU kernel file is compiled on x86-64 and chosen at run time (matmul.h, best_isa).
#ifdef KEEL_HAS_CUDA
  std::fprintf(out, "kernels compiled in: cpu generic, avx2, avx512 (vnni); cuda sm_90a + compute_90 PTX (--device cuda)\n");
#else
  std::fprintf(out, "kernels compiled in: cpu generic, avx2, avx512 (vnni); cuda not built\n");
#endif
  std::fprintf(out, "kernels selected:    cpu %s\n", cpu::isa_name(cpu::best_isa()));
  std::fprintf(out, "default model:       stories260K.gguf, embedded (%zu bytes)\n",
               embedded::default_model_bytes().size());
}

}  // namespace keel::cli
