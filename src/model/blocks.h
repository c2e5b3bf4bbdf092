// Building blocks shared by the model families.
#pragma once
#include <cstdint>
#include <string>

#include "backend/backend.h"

namespace keel::model {

class Model;

// "blk.<il>.<name>": the GGUF name of a layer's tensor.
std::string blk(uint32_t il, const char* name);

// A model's tensors as the backend reads them (placed once, when the forward pass is built).
class PlacedWeights {
 public:
  PlacedWeights(const Model& model, backend::Backend& backend) : model_(model), backend_(backend) {}
  backend::WeightView matrix(const std::string& name) const;   // must exist
  const float* vector(const std::string& name) const;          // nullptr when optional and absent

 private:
  const Model& model_;
  backend::Backend& backend_;
};

}  // namespace keel::model
