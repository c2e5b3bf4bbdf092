#include "embedded/default_model.h"

// The model's bytes, placed by the assembler (.incbin) so the build needs no generated source.
// KEEL_DEFAULT_MODEL_FILE is set for this file alone by CMakeLists.txt (which also makes this
// object depend on the model, and passes the model's hash so ccache never reuses a stale object).
#ifndef KEEL_DEFAULT_MODEL_FILE
#error "KEEL_DEFAULT_MODEL_FILE must name the GGUF file to embed"
#endif

asm(".pushsection .rodata.keel_default_model, \"a\", @progbits\n"
    ".balign 64\n"
    ".globl keel_default_model_begin\n"
    ".hidden keel_default_model_begin\n"
    "keel_default_model_begin:\n"
    ".incbin \"" KEEL_DEFAULT_MODEL_FILE "\"\n"
    ".globl keel_default_model_end\n"
    ".hidden keel_default_model_end\n"
    "keel_default_model_end:\n"
    ".popsection\n");

extern "C" {
extern const uint8_t keel_default_model_begin[];
extern const uint8_t keel_default_model_end[];
}

namespace keel::embedded {

std::span<const uint8_t> default_model_bytes() {
  return {keel_default_model_begin, static_cast<size_t>(keel_default_model_end - keel_default_model_begin)};
}

gguf::File open_gguf(const std::string& name_or_path) {
  if (name_or_path != kDefaultModelName) return gguf::File::open(name_or_path);
  const std::span<const uint8_t> bytes = default_model_bytes();
  return gguf::File::from_memory("default (the embedded stories260K.gguf)", bytes.data(), bytes.size());
}

}  // namespace keel::embedded
