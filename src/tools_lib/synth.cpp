#include "tools_lib/synth.h"

#include <cmath>
#include <cstring>
#include <sstream>

#include "embedded/default_model.h"
#include "keel/error.h"
#include "model/family.h"
#include "model/presets.h"
#include "model/recipe.h"
#include "tools_lib/arch_metadata.h"
#include "tools_lib/synth_random.h"
#include "tools_lib/vocab_import.h"

namespace keel::tools {
namespace {

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// Matrices (and ssm_conv1d's rows of K taps): N(0, 1/sqrt(n_in)), so activations keep their scale.
float matrix_std(const model::TensorSpec& spec) { return 1.0f / std::sqrt(static_cast<float>(spec.shape[0])); }

// A quantized matrix: its blocks drawn directly with the matrix's std (synth_random.h).
EncodedRowSource random_encoded_rows(const model::TensorSpec& spec, quant::Type type, uint64_t seed, uint64_t index) {
  const QuantRowDrawer drawer(type, matrix_std(spec));
  const auto ne0 = static_cast<int64_t>(spec.shape[0]);
  return [=](uint64_t row, void* out) {
    RowRng rng(seed, index, row);
    drawer.draw(rng, out, ne0);
  };
}

// The values of one row of a tensor, by what the tensor is for.
RowSource random_rows(const model::TensorSpec& spec, uint64_t seed, uint64_t index) {
  const uint64_t ne0 = spec.shape[0];
  using model::TensorRole;
  switch (spec.role) {
    case TensorRole::norm:
      return [=](uint64_t row, float* x) {
        RowRng rng(seed, index, row);
        rng.normal(x, ne0);
        for (uint64_t i = 0; i < ne0; ++i) x[i] = 1.0f + 0.02f * x[i];
      };
    case TensorRole::bias:
      return [=](uint64_t row, float* x) {
        RowRng rng(seed, index, row);
        rng.normal(x, ne0);
        for (uint64_t i = 0; i < ne0; ++i) x[i] *= 0.02f;
      };
    case TensorRole::ssm_f32:
      if (ends_with(spec.name, "ssm_a"))  // −A with A in [0.05, 1.5): decays exp(−A·dt) in (0, 1)
        return [=](uint64_t row, float* x) {
          RowRng rng(seed, index, row);
          for (uint64_t i = 0; i < ne0; ++i) x[i] = -(0.05f + 1.45f * rng.uniform());
        };
      if (ends_with(spec.name, "ssm_dt.bias"))  // softplus(dt) between ~0.05 and ~1
        return [=](uint64_t row, float* x) {
          RowRng rng(seed, index, row);
          for (uint64_t i = 0; i < ne0; ++i) x[i] = -3.0f + 3.5f * rng.uniform();
        };
      [[fallthrough]];  // ssm_conv1d: a row is one channel's K taps
    default: {
      const float scale = matrix_std(spec);
      return [=](uint64_t row, float* x) {
        RowRng rng(seed, index, row);
        rng.normal(x, ne0);
        for (uint64_t i = 0; i < ne0; ++i) x[i] *= scale;
      };
    }
  }
}

void apply_dims(model::Hparams& hp, const std::string& dims) {
  std::stringstream ss(dims);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string::npos) throw Error("--dims: '" + item + "' is not KEY=VALUE", ErrorKind::usage);
    const std::string key = item.substr(0, eq);
    uint32_t v = 0;
    try {
      v = static_cast<uint32_t>(std::stoul(item.substr(eq + 1)));
    } catch (...) {
      throw Error("--dims: '" + item + "' needs a positive integer", ErrorKind::usage);
    }
    if (v == 0) throw Error("--dims: " + key + " must be positive", ErrorKind::usage);
    if (key == "n_embd") hp.n_embd = v;
    else if (key == "n_ff") hp.n_ff = v;
    else if (key == "n_head") hp.n_head = v;
    else if (key == "n_head_kv") hp.n_head_kv = v;
    else if (key == "head_dim") hp.head_dim = v;
    else if (key == "n_rot") hp.n_rot = v;
    else if (key == "n_vocab") hp.n_vocab = v;
    else if (key == "n_ctx") hp.n_ctx_train = v;
    else if (key == "ssm_k_heads") hp.ssm_group_count = v;
    else if (key == "ssm_v_heads") hp.ssm_time_step_rank = v;
    else if (key == "ssm_head_dim") hp.ssm_state_size = v;
    else throw Error("--dims: unknown key '" + key + "' (" + synth_dims_help() + ")", ErrorKind::usage);
  }
  if (hp.n_rot > hp.head_dim) hp.n_rot = hp.head_dim;
  hp.ssm_inner_size = hp.ssm_time_step_rank * hp.ssm_state_size;
  if (hp.n_head % hp.n_head_kv != 0)
    throw Error("--dims: n_head " + std::to_string(hp.n_head) + " is not a multiple of n_head_kv " +
                std::to_string(hp.n_head_kv), ErrorKind::usage);
  if (hp.ssm_group_count && hp.ssm_time_step_rank % hp.ssm_group_count != 0)
    throw Error("--dims: ssm_v_heads must be a multiple of ssm_k_heads", ErrorKind::usage);
}

}  // namespace

std::string synth_dims_help() {
  return "keys: n_embd, n_ff, n_head, n_head_kv, head_dim, n_rot, n_vocab, n_ctx, ssm_k_heads, ssm_v_heads, "
         "ssm_head_dim";
}

SynthPlan plan_synth(const SynthOptions& options) {
  SynthPlan plan;
  model::Hparams hp = model::require_preset(options.preset);
  if (!options.arch.empty() && options.arch != hp.arch)
    throw Error("preset " + options.preset + " is a " + hp.arch + " model, not " + options.arch, ErrorKind::usage);
  const auto ftype = model::file_type_from_name(options.type);
  if (!ftype)
    throw Error("unknown type '" + options.type + "' (q8_0, q4_0, q4_k, q5_k, q6_k, q4_k_m, q5_k_m, f16, bf16, f32)",
                ErrorKind::usage);
  if (options.layers) {
    hp.n_layer = options.layers;
    if (!hp.recurrent.empty()) {  // keep the hybrid pattern: every 4th layer is full attention
      hp.recurrent.resize(hp.n_layer);
      for (uint32_t il = 0; il < hp.n_layer; ++il) hp.recurrent[il] = (il + 1) % 4 != 0;
    }
  }
  apply_dims(hp, options.dims);

  // The tokenizer decides the vocabulary: pad it up to the model's, or grow the model to it.
  gguf::Metadata tokenizer;
  const std::string tok_path = options.tokenizer.empty() ? std::string(embedded::kDefaultModelName) : options.tokenizer;
  import_tokenizer(tok_path, options.pre, tokenizer);
  const uint32_t n_tokens = tokenizer_vocab_size(tokenizer);
  if (n_tokens > hp.n_vocab) {
    plan.notes.push_back("the tokenizer has " + std::to_string(n_tokens) + " tokens, more than the preset's " +
                         std::to_string(hp.n_vocab) + ": the embedding grows to match");
    hp.n_vocab = n_tokens;
  } else if (n_tokens < hp.n_vocab) {
    pad_vocab(tokenizer, hp.n_vocab);
    plan.notes.push_back("vocabulary padded from " + std::to_string(n_tokens) + " to " + std::to_string(hp.n_vocab) +
                         " tokens with [PAD] entries");
  }

  const model::Family& family = model::family_for(hp.arch);
  std::vector<model::TensorSpec> specs;
  for (const model::TensorSpec& s : family.tensor_specs(hp))
    if (!(s.role == model::TensorRole::output && hp.tied_output)) specs.push_back(s);
  const std::vector<quant::Type> types = model::recipe_types(*ftype, specs);

  ArchKeyOptions keys;
  keys.vocab_size = hp.arch == "llama";
  set_arch_metadata(plan.metadata, hp, "keel-synth " + options.preset, keys);
  plan.metadata.set("general.description",
                    gguf::value_string("random weights with the shapes of " + options.preset + " (keel synth, seed " +
                                       std::to_string(options.seed) + ")"));
  plan.metadata.set("general.file_type", gguf::value_u32(model::llama_ftype_id(*ftype)));
  plan.metadata.set("general.quantization_version", gguf::value_u32(2));
  for (const auto& [key, value] : tokenizer.items()) plan.metadata.set(key, value);

  std::vector<float> rope_freqs;
  if (hp.has_rope_freqs)  // Llama-3.1's llama3 scaling (factor 8, low 1, high 4, original 8192)
    rope_freqs = llama3_rope_factors(hp.n_rot, hp.rope_base, 8.0f, 1.0f, 4.0f, 8192.0f);
  for (size_t i = 0; i < specs.size(); ++i) {
    TensorJob job;
    job.record = {specs[i].name, types[i], specs[i].shape};
    if (specs[i].role == model::TensorRole::rope_freqs) {
      job.rows = [rope_freqs](uint64_t, float* out) { std::copy(rope_freqs.begin(), rope_freqs.end(), out); };
    } else if (model::role_is_quantizable(specs[i].role) && QuantRowDrawer::supports(types[i])) {
      job.encoded_rows = random_encoded_rows(specs[i], types[i], options.seed, i);
    } else {
      job.rows = random_rows(specs[i], options.seed, i);
    }
    plan.jobs.push_back(std::move(job));
  }
  plan.hp = hp;
  return plan;
}

}  // namespace keel::tools
