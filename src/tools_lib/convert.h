// `keel convert`: a Hugging Face folder (config.json, *.safetensors) → GGUF for llama, qwen2,
// qwen3 and qwen35, applying llama.cpp's converter transforms (gguf_arch.md §3.2, qwen35.md
// §1.5): Llama's Q/K row permutation; for qwen35 the +1 of zero-centred norms, ssm_a = −exp(A_log),
// the conv1d squeeze, the grouped → tiled V-head reorder, dt_bias → ssm_dt.bias. Qwen3.5's
// multimodal layout (model.language_model.*) is accepted; vision and MTP tensors are skipped.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "gguf/writer.h"
#include "tools_lib/model_writer.h"
#include "tools_lib/safetensors.h"

namespace keel::tools {

struct ConvertOptions {
  std::string dir;
  std::string type = "auto";  // auto (the checkpoint's float type), f32, f16, bf16, q8_0, q4_k_m, ...
  std::string vocab_from;     // a GGUF or tokenizer.json; default DIR/tokenizer.json
  std::string pre;            // pre-tokenizer name for a tokenizer.json keel does not recognise
  std::string name;           // general.name; default: the folder's name
};

struct ConvertPlan {
  gguf::Metadata metadata;
  std::vector<TensorJob> jobs;  // read from `source`: keep the plan alive while writing
  std::vector<std::string> notes;
  std::shared_ptr<SafetensorsFolder> source;
};

ConvertPlan plan_convert(const ConvertOptions& options);

}  // namespace keel::tools
