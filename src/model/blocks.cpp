#include "model/blocks.h"

#include <string>

#include "keel/error.h"
#include "quant/dequant.h"

namespace keel::model {

void embed_tokens(const gguf::TensorInfo& table, const int32_t* tokens, int64_t n, float* out) {
  const int64_t d = static_cast<int64_t>(table.ne[0]);
  const size_t row = quant::row_bytes(table.type, table.ne[0]);
  for (int64_t t = 0; t < n; ++t)
    if (tokens[t] < 0 || static_cast<uint64_t>(tokens[t]) >= table.ne[1])
      throw Error("token id " + std::to_string(tokens[t]) + " is outside the vocabulary (" +
                  std::to_string(table.ne[1]) + " tokens)");
  for (int64_t t = 0; t < n; ++t)
    quant::dequantize_row(table.type, table.data + row * static_cast<size_t>(tokens[t]), out + t * d, d);
}

}  // namespace keel::model
