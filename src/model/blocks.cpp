#include "model/blocks.h"

#include "gguf/gguf.h"
#include "model/model.h"

namespace keel::model {

std::string blk(uint32_t il, const char* name) { return "blk." + std::to_string(il) + "." + name; }

backend::WeightView PlacedWeights::matrix(const std::string& name) const {
  return backend_.place_weight(name, model_.matrix(name));
}

const float* PlacedWeights::vector(const std::string& name) const {
  const float* host = model_.vector_f32(name);
  if (!host) return nullptr;
  return backend_.place_vector(name, host, static_cast<int64_t>(model_.find(name)->n_elements()));
}

}  // namespace keel::model
