#include "tools_lib/arch_metadata.h"

#include <cmath>

namespace keel::tools {

void set_arch_metadata(gguf::Metadata& md, const model::Hparams& hp, const std::string& name,
                       const ArchKeyOptions& options) {
  using namespace gguf;
  const std::string a = hp.arch + ".";
  md.set("general.architecture", value_string(hp.arch));
  md.set("general.type", value_string("model"));
  md.set("general.name", value_string(name));
  md.set(a + "block_count", value_u32(hp.n_layer));
  md.set(a + "context_length", value_u32(hp.n_ctx_train));
  md.set(a + "embedding_length", value_u32(hp.n_embd));
  md.set(a + "feed_forward_length", value_u32(hp.n_ff));
  md.set(a + "attention.head_count", value_u32(hp.n_head));
  md.set(a + "attention.head_count_kv", value_u32(hp.n_head_kv));
  if (hp.arch == "qwen35") {
    std::vector<Value> sections;
    for (int32_t s : options.rope_sections) sections.push_back(value_i32(s));
    md.set(a + "rope.dimension_sections", value_array(ValueType::i32, std::move(sections)));
  }
  md.set(a + "rope.freq_base", value_f32(hp.rope_base));
  md.set(a + "attention.layer_norm_rms_epsilon", value_f32(hp.rms_eps));
  if (options.head_dim_keys) {
    md.set(a + "attention.key_length", value_u32(hp.head_dim));
    md.set(a + "attention.value_length", value_u32(hp.head_dim));
  }
  if (options.vocab_size) md.set(a + "vocab_size", value_u32(hp.n_vocab));
  if (!options.rope_scaling.empty() && options.rope_scaling != "none") {
    md.set(a + "rope.scaling.type", value_string(options.rope_scaling));
    md.set(a + "rope.scaling.factor", value_f32(options.rope_scaling_factor));
    if (options.rope_scaling_orig_ctx)
      md.set(a + "rope.scaling.original_context_length", value_u32(options.rope_scaling_orig_ctx));
  }
  if (hp.arch == "qwen35") {
    md.set(a + "ssm.conv_kernel", value_u32(hp.ssm_conv_kernel));
    md.set(a + "ssm.state_size", value_u32(hp.ssm_state_size));
    md.set(a + "ssm.group_count", value_u32(hp.ssm_group_count));
    md.set(a + "ssm.time_step_rank", value_u32(hp.ssm_time_step_rank));
    md.set(a + "ssm.inner_size", value_u32(hp.ssm_inner_size));
    // The layer pattern: an interval when it is one, the explicit list otherwise.
    uint32_t interval = 0;
    for (uint32_t k = 1; k <= hp.n_layer && interval == 0; ++k) {
      bool fits = true;
      for (uint32_t il = 0; il < hp.n_layer; ++il) fits = fits && hp.is_recurrent(il) == ((il + 1) % k != 0);
      if (fits) interval = k;
    }
    if (interval) {
      md.set(a + "full_attention_interval", value_u32(interval));
    } else {
      std::vector<Value> rec;
      for (uint32_t il = 0; il < hp.n_layer; ++il) rec.push_back(value_bool(hp.is_recurrent(il)));
      md.set(a + "attention.recurrent_layers", value_array(ValueType::boolean, std::move(rec)));
    }
  }
  if (options.rope_dimension_count) md.set(a + "rope.dimension_count", value_u32(hp.n_rot));
}

std::vector<float> llama3_rope_factors(uint32_t n_rot, float rope_base, float factor, float low_freq_factor,
                                       float high_freq_factor, float original_ctx) {
  const double low_wavelen = original_ctx / low_freq_factor;
  const double high_wavelen = original_ctx / high_freq_factor;
  std::vector<float> out;
  for (uint32_t i = 0; i < n_rot / 2; ++i) {
    const double freq = 1.0 / std::pow(double{rope_base}, 2.0 * i / n_rot);
    const double wavelen = 2 * M_PI / freq;
    double f;
    if (wavelen < high_wavelen) {
      f = 1;
    } else if (wavelen > low_wavelen) {
      f = factor;
    } else {
      const double smooth = (original_ctx / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
      f = 1 / ((1 - smooth) / factor + smooth);
    }
    out.push_back(static_cast<float>(f));
  }
  return out;
}

}  // namespace keel::tools
