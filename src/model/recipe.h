// Quantization recipes: the tensor type each tensor of a model gets in a file of a given type,
// following llama.cpp's llama-quantize rules (docs/specs/quants.md §4-5). Used by `keel
// quantize`, `keel synth` and `keel plan --preset --type`.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/family.h"
#include "quant/types.h"

namespace keel::model {

enum class FileType { f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k, q4_k_m, q5_k_m };
std::optional<FileType> file_type_from_name(std::string_view name);  // "q5_k_m", "Q8_0", ...
std::string_view file_type_name(FileType t);
uint32_t llama_ftype_id(FileType t);  // general.file_type value

// One type per spec, in order. Non-quantizable tensors (norms, biases, ssm_a ...) stay F32.
// A row length that the chosen block does not divide falls back to Q8_0 (32) or F16.
std::vector<quant::Type> recipe_types(FileType file_type, const std::vector<TensorSpec>& specs);

// llama.cpp's use_more_bits(i, n): first and last eighth, and every third in between.
bool use_more_bits(int i, int n);

}  // namespace keel::model
