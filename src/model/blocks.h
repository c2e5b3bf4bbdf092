// Building blocks shared by the model families.
#pragma once
#include <cstdint>

#include "gguf/gguf.h"

namespace keel::model {

// out[t] = row tokens[t] of the embedding table, dequantized: [n, n_embd] f32. A token outside
// the table is a keel::Error (checked before anything is written).
void embed_tokens(const gguf::TensorInfo& table, const int32_t* tokens, int64_t n, float* out);

}  // namespace keel::model
