// A loaded model: the mapped GGUF, its hparams and family, every tensor validated against the
// family's expected shapes. Loading reads only the header; weights are used in place.
#pragma once
#include <memory>
#include <string>

#include "backend/types.h"
#include "gguf/gguf.h"
#include "model/family.h"
#include "model/hparams.h"

namespace keel::model {

class Model {
 public:
  static std::shared_ptr<const Model> load(const std::string& path);

  const gguf::File& file() const { return file_; }
  const Hparams& hparams() const { return hp_; }
  const Family& family() const { return *family_; }

  // A 2-D weight for matmul; `name` must exist (validated at load).
  backend::WeightView matrix(const std::string& name) const;
  // A 1-D F32 tensor (norm, bias) or nullptr when optional and absent.
  const float* vector_f32(const std::string& name) const;
  const gguf::TensorInfo* find(const std::string& name) const { return file_.find_tensor(name); }

 private:
  Model(gguf::File file, Hparams hp, const Family& family)
      : file_(std::move(file)), hp_(std::move(hp)), family_(&family) {}
  void validate() const;
  gguf::File file_;
  Hparams hp_;
  const Family* family_;
};

}  // namespace keel::model
