#include "model/model.h"

#include "embedded/default_model.h"
#include "keel/error.h"

namespace keel::model {

std::shared_ptr<const Model> Model::load(const std::string& path) {
  gguf::File file = embedded::open_gguf(path);  // "default": the embedded model
  auto arch = file.get_string("general.architecture");
  if (!arch) throw Error(path + ": metadata 'general.architecture' is missing");
  const Family& family = family_for(*arch);
  Hparams hp = family.read_hparams(file);
  std::shared_ptr<const Model> model(new Model(std::move(file), std::move(hp), family));
  model->validate();
  return model;
}

void Model::validate() const {
  const std::string& path = file_.path();
  for (const TensorSpec& spec : family_->tensor_specs(hp_)) {
    const gguf::TensorInfo* t = file_.find_tensor(spec.name);
    if (!t) {
      if (spec.optional) continue;
      throw Error(path + ": tensor '" + spec.name + "' is missing (architecture " + hp_.arch + ")");
    }
    bool same = t->n_dims == spec.shape.size();
    for (size_t d = 0; same && d < spec.shape.size(); ++d) same = t->ne[d] == spec.shape[d];
    if (!same) {
      std::string want = "[";
      for (size_t d = 0; d < spec.shape.size(); ++d) want += (d ? ", " : "") + std::to_string(spec.shape[d]);
      throw Error(path + ": tensor '" + spec.name + "' has shape " + t->shape_string() + ", expected " + want + "]");
    }
    if (!quant::info(t->type).computable)
      throw Error(path + ": tensor '" + spec.name + "' has type " + std::string(quant::type_name(t->type)) +
                  ", which keel cannot compute with (supported: f32, f16, bf16, q4_0, q8_0, q4_K, q5_K, q6_K)");
    if (spec.shape.size() == 1 && t->type != quant::Type::F32)
      throw Error(path + ": tensor '" + spec.name + "' has type " + std::string(quant::type_name(t->type)) +
                  ", expected f32 for a vector");
  }
}

backend::WeightView Model::matrix(const std::string& name) const {
  const gguf::TensorInfo& t = file_.require_tensor(name);
  return backend::WeightView{t.type, t.data, static_cast<int64_t>(t.ne[0]), static_cast<int64_t>(t.n_rows())};
}

const float* Model::vector_f32(const std::string& name) const {
  const gguf::TensorInfo* t = file_.find_tensor(name);
  return t ? reinterpret_cast<const float*>(t->data) : nullptr;
}

}  // namespace keel::model
