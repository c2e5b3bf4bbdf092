// `keel synth`: a GGUF with the exact shapes, tensor types and metadata of a real model (a
// preset, optionally shrunk for tests) and seeded random weights, generated and quantized row by
// row straight into the file by a pool of threads (the same bytes for any thread count). Weights
// are scaled so activations stay finite through many layers: matrices N(0, 1/sqrt(n_in)), norms
// ≈ 1, biases small, qwen35's ssm_a negative (decays in (0, 1)) and dt biases in a realistic
// range. Quantized matrices are drawn as blocks with that std, not quantized from floats
// (synth_random.h). The tokenizer comes from a GGUF or tokenizer.json.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gguf/writer.h"
#include "model/hparams.h"
#include "tools_lib/model_writer.h"

namespace keel::tools {

struct SynthOptions {
  std::string arch;       // must match the preset's architecture when given
  std::string preset;     // model/presets.h
  std::string type;       // file type: q8_0, q5_k_m, f16, ...
  uint64_t seed = 0;
  std::string tokenizer;  // GGUF or tokenizer.json; empty: the embedded default model
  std::string pre;        // pre-tokenizer name for an unrecognised tokenizer.json
  uint32_t layers = 0;    // 0: the preset's
  std::string dims;       // overrides "n_embd=256,n_ff=512,..." (see synth_dims_help())
};

struct SynthPlan {
  model::Hparams hp;
  gguf::Metadata metadata;
  std::vector<TensorJob> jobs;
  std::vector<std::string> notes;
};

std::string synth_dims_help();
SynthPlan plan_synth(const SynthOptions& options);

}  // namespace keel::tools
