// `keel quantize`: the plan that turns an input GGUF into one of a given file type. Tensors the
// architecture's family lists get the recipe's type (model/recipe.h, llama-quantize's rules);
// others are copied unchanged. A tensor already of its target type is copied byte for byte;
// any other computable type is dequantized row by row and quantized again.
#pragma once
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "model/recipe.h"
#include "tools_lib/model_writer.h"

namespace keel::tools {

struct RequantizePlan {
  gguf::Metadata metadata;
  std::vector<TensorJob> jobs;     // point into the input file's mapping: keep it open
  std::vector<std::string> notes;  // things the user should know (requantizing, copies)
};

// The file types `keel quantize` accepts, for messages.
std::string quantize_type_list();
model::FileType parse_quantize_type(const std::string& name);  // throws keel::Error(usage)

RequantizePlan plan_requantize(const gguf::File& in, model::FileType type);

}  // namespace keel::tools
