// The `{arch}.*` metadata keys of a model, written from its hyper-parameters the way llama.cpp's
// converter writes them (docs/specs/gguf_arch.md §1, qwen35.md §1.2), for synth and convert.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gguf/writer.h"
#include "model/hparams.h"

namespace keel::tools {

struct ArchKeyOptions {
  bool head_dim_keys = true;       // attention.key_length / value_length
  bool rope_dimension_count = true;
  bool vocab_size = false;         // the llama converter writes {arch}.vocab_size
  std::vector<int32_t> rope_sections = {11, 11, 10, 0};  // qwen35 rope.dimension_sections
  std::string rope_scaling;        // "", "linear", "yarn"
  float rope_scaling_factor = 1.0f;
  uint32_t rope_scaling_orig_ctx = 0;
};

// general.architecture, general.name and the {arch}.* keys; general.file_type is the caller's.
void set_arch_metadata(gguf::Metadata& md, const model::Hparams& hp, const std::string& name,
                       const ArchKeyOptions& options);

// llama3 rope scaling factors (gguf_arch.md §3.3): n_rot/2 values for rope_freqs.weight.
std::vector<float> llama3_rope_factors(uint32_t n_rot, float rope_base, float factor, float low_freq_factor,
                                       float high_freq_factor, float original_ctx);

}  // namespace keel::tools
