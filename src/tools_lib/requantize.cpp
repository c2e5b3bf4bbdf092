#include "tools_lib/requantize.h"

#include <map>

#include "keel/error.h"
#include "model/family.h"
#include "quant/dequant.h"

namespace keel::tools {
namespace {

// Bits per weight of a type, to tell "requantizing to fewer bits" from "to more".
double bits_of(quant::Type t) {
  const quant::TypeInfo ti = quant::info(t);
  return 8.0 * ti.block_bytes / ti.block_elems;
}

gguf::Metadata copy_metadata(const gguf::File& in) {
  gguf::Metadata md;
  for (const auto& [key, value] : in.metadata()) md.set(key, value);
  return md;
}

}  // namespace

std::string quantize_type_list() { return "q8_0, q4_0, q4_k, q5_k, q6_k, q4_k_m, q5_k_m, f16, bf16, f32"; }

model::FileType parse_quantize_type(const std::string& name) {
  if (auto t = model::file_type_from_name(name)) return *t;
  throw Error("unknown quantization type '" + name + "' (choose one of: " + quantize_type_list() + ")",
              ErrorKind::usage);
}

RequantizePlan plan_requantize(const gguf::File& in, model::FileType type) {
  const std::string arch = in.get_string("general.architecture").value_or("");
  if (arch.empty()) throw Error(in.path() + ": no general.architecture: cannot choose per-tensor types");
  const model::Family& family = model::family_for(arch);  // throws, listing supported ones
  const model::Hparams hp = family.read_hparams(in);
  std::vector<model::TensorSpec> specs;
  for (const model::TensorSpec& s : family.tensor_specs(hp)) {
    const gguf::TensorInfo* t = in.find_tensor(s.name);
    if (!t) {
      if (s.optional) continue;
      throw Error(in.path() + ": tensor '" + s.name + "' is missing (" + arch + " needs it)");
    }
    std::vector<uint64_t> shape(t->ne, t->ne + t->n_dims);
    if (shape != s.shape)
      throw Error(in.path() + ": tensor '" + s.name + "' has shape " + t->shape_string() + ", " + arch +
                  " expects another from the file's hyper-parameters");
    specs.push_back(s);
  }
  const std::vector<quant::Type> types = model::recipe_types(type, specs);
  std::map<std::string, quant::Type, std::less<>> target;
  for (size_t i = 0; i < specs.size(); ++i) target[specs[i].name] = types[i];

  RequantizePlan plan;
  plan.metadata = copy_metadata(in);
  plan.metadata.set("general.file_type", gguf::value_u32(model::llama_ftype_id(type)));
  plan.metadata.set("general.quantization_version", gguf::value_u32(2));
  int n_copied_unknown = 0, n_lower = 0;
  for (const gguf::TensorInfo& t : in.tensors()) {
    TensorJob job;
    job.record.name = t.name;
    job.record.shape.assign(t.ne, t.ne + t.n_dims);
    auto it = target.find(t.name);
    const quant::Type to = it == target.end() ? t.type : it->second;
    job.record.type = to;
    if (it == target.end()) {
      ++n_copied_unknown;
      job.note = "copied (not a " + arch + " tensor keel knows)";
    }
    if (to == t.type) {
      job.raw = t.data;
    } else {
      if (!quant::info(t.type).computable)
        throw Error(in.path() + ": tensor '" + t.name + "' has type " + std::string(quant::type_name(t.type)) +
                    ", which keel cannot read: it cannot requantize this file");
      const bool was_quantized = quant::info(t.type).block_elems > 1;
      if (was_quantized) {
        job.note = "requantized from " + std::string(quant::type_name(t.type));
        if (bits_of(t.type) < bits_of(to)) ++n_lower;
      }
      const gguf::TensorInfo* src = &t;
      const size_t src_row_bytes = quant::row_bytes(t.type, t.ne[0]);
      job.rows = [src, src_row_bytes](uint64_t row, float* out) {
        quant::dequantize_row(src->type, src->data + row * src_row_bytes, out, static_cast<int64_t>(src->ne[0]));
      };
    }
    plan.jobs.push_back(std::move(job));
  }
  int n_requant = 0;
  for (const TensorJob& j : plan.jobs) n_requant += j.note.rfind("requantized", 0) == 0;
  if (n_requant > 0)
    plan.notes.push_back("the input is already quantized: " + std::to_string(n_requant) +
                         " tensors are requantized (dequantize, then quantize), which adds the new type's error "
                         "to the old one's");
  if (n_lower > 0)
    plan.notes.push_back(std::to_string(n_lower) + " tensors go from fewer bits to more: this cannot restore "
                         "the precision the input lost");
  if (n_copied_unknown > 0)
    plan.notes.push_back(std::to_string(n_copied_unknown) + " tensors that " + arch +
                         " does not list were copied unchanged");
  return plan;
}

}  // namespace keel::tools
