#include "model/family.h"

#include "keel/error.h"

namespace keel::model {

// Each family file defines its accessor; add new families here.
const Family& llama_family();
const Family& qwen2_family();
const Family& qwen3_family();
const Family& qwen35_family();

namespace {
const std::vector<const Family*>& registry() {
  static const std::vector<const Family*> families = {&llama_family(), &qwen2_family(), &qwen3_family(),
                                                      &qwen35_family()};
  return families;
}
}  // namespace

bool role_is_quantizable(TensorRole role) {
  switch (role) {
    case TensorRole::norm: case TensorRole::bias: case TensorRole::rope_freqs: case TensorRole::ssm_f32:
      return false;
    default:
      return true;
  }
}

std::vector<std::string_view> supported_architectures() {
  std::vector<std::string_view> out;
  for (const Family* f : registry()) out.push_back(f->arch);
  return out;
}

const Family& family_for(std::string_view arch) {
  for (const Family* f : registry())
    if (f->arch == arch) return *f;
  std::string list;
  for (std::string_view a : supported_architectures()) list += (list.empty() ? "" : ", ") + std::string(a);
  throw Error("architecture '" + std::string(arch) + "' is not supported (keel runs: " + list + ")");
}

void check_batch_fits(const backend::Batch& batch, const SessionShape& shape) {
  if (batch.n_tokens <= 0 || batch.n_tokens > shape.max_tokens)
    throw Error("internal: batch of " + std::to_string(batch.n_tokens) + " tokens exceeds the planned " +
                std::to_string(shape.max_tokens));
  if (batch.n_logit_rows > shape.max_logit_rows) throw Error("internal: more logit rows than planned");
}

}  // namespace keel::model
