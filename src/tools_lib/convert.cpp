#include "tools_lib/convert.h"

#include <cmath>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "keel/error.h"
#include "model/family.h"
#include "model/recipe.h"
#include "tools_lib/arch_metadata.h"
#include "tools_lib/vocab_import.h"

namespace keel::tools {
namespace {

using nlohmann::json;
using model::TensorRole;

enum class ValueOp { none, plus_one, neg_exp };

// How one GGUF tensor is read from its safetensors source: GGUF row r is source row
// row_map[r], element c is source element col_map[c] of that row (identity when empty).
struct Transform {
  const StTensor* src = nullptr;
  std::vector<uint32_t> row_map, col_map;
  ValueOp op = ValueOp::none;
};

struct Planned {
  model::TensorSpec spec;
  Transform transform;
};

// ---- config.json ----

struct Config {
  json root, text;  // text = text_config when present (multimodal checkpoints), else root
  std::string path;

  const json* find(const char* key) const {
    if (text.contains(key) && !text[key].is_null()) return &text[key];
    if (root.contains(key) && !root[key].is_null()) return &root[key];
    return nullptr;
  }
  uint32_t u32(const char* key) const {
    const json* v = find(key);
    if (!v) throw Error(path + ": '" + key + "' is missing");
    if (!v->is_number_unsigned()) throw Error(path + ": '" + key + "' is not a non-negative integer");
    return v->get<uint32_t>();
  }
  uint32_t u32_or(const char* key, uint32_t fallback) const { return find(key) ? u32(key) : fallback; }
  double num_or(const char* key, double fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    if (!v->is_number()) throw Error(path + ": '" + key + "' is not a number");
    return v->get<double>();
  }
  // rope_parameters (transformers 5) or rope_scaling (older), whichever is present.
  const json* rope() const {
    if (const json* r = find("rope_parameters"); r && r->is_object()) return r;
    if (const json* r = find("rope_scaling"); r && r->is_object()) return r;
    return nullptr;
  }
};

Config read_config(const std::string& dir) {
  Config c;
  c.path = (std::filesystem::path(dir) / "config.json").string();
  std::ifstream in(c.path);
  if (!in) throw Error(c.path + ": missing (a Hugging Face model folder has a config.json)");
  try {
    c.root = json::parse(in);
  } catch (const json::exception& e) {
    throw Error(c.path + ": not valid JSON: " + e.what());
  }
  c.text = c.root.contains("text_config") && c.root["text_config"].is_object() ? c.root["text_config"] : c.root;
  return c;
}

std::string detect_arch(const Config& c) {
  std::string hf;
  if (c.root.contains("architectures") && c.root["architectures"].is_array() && !c.root["architectures"].empty())
    hf = c.root["architectures"][0].get<std::string>();
  if (hf == "LlamaForCausalLM") return "llama";
  if (hf == "Qwen2ForCausalLM") return "qwen2";
  if (hf == "Qwen3ForCausalLM") return "qwen3";
  if (hf == "Qwen3_5ForCausalLM" || hf == "Qwen3_5ForConditionalGeneration") return "qwen35";
  throw Error(c.path + ": architecture '" + hf + "' is not one keel converts (LlamaForCausalLM, Qwen2ForCausalLM, "
              "Qwen3ForCausalLM, Qwen3_5ForCausalLM, Qwen3_5ForConditionalGeneration)");
}

model::Hparams read_hparams(const Config& c, const std::string& arch, ArchKeyOptions& keys) {
  model::Hparams hp;
  hp.arch = arch;
  hp.n_layer = c.u32("num_hidden_layers");
  hp.n_embd = c.u32("hidden_size");
  hp.n_ff = c.u32("intermediate_size");
  hp.n_head = c.u32("num_attention_heads");
  hp.n_head_kv = c.u32_or("num_key_value_heads", hp.n_head);
  hp.n_vocab = c.u32("vocab_size");
  if (hp.n_head == 0 || hp.n_head_kv == 0 || hp.n_head % hp.n_head_kv)
    throw Error(c.path + ": num_attention_heads " + std::to_string(hp.n_head) + " is not a multiple of num_key_value_heads " +
                std::to_string(hp.n_head_kv));
  keys.head_dim_keys = c.find("head_dim") != nullptr;
  hp.head_dim = c.u32_or("head_dim", hp.n_embd / hp.n_head);
  hp.n_ctx_train = c.u32_or("max_position_embeddings", 4096);
  hp.rms_eps = static_cast<float>(c.num_or("rms_norm_eps", 1e-6));
  const json* rope = c.rope();
  hp.rope_base = static_cast<float>(c.num_or("rope_theta", 10000.0));
  if (rope && rope->contains("rope_theta")) hp.rope_base = (*rope)["rope_theta"].get<float>();
  const json* tie = c.find("tie_word_embeddings");
  hp.tied_output = tie && tie->is_boolean() && tie->get<bool>();
  hp.n_rot = hp.head_dim;
  hp.rope_type = arch == "llama" ? model::RopeType::norm : model::RopeType::neox;
  hp.qkv_bias = arch == "qwen2";
  hp.qk_norm = arch == "qwen3" || arch == "qwen35";
  keys.rope_dimension_count = arch == "llama" || arch == "qwen35";
  keys.vocab_size = arch == "llama";
  if (rope) {
    const std::string type = rope->value("rope_type", rope->value("type", "default"));
    if (type == "linear" || type == "yarn") {
      keys.rope_scaling = type;
      keys.rope_scaling_factor = rope->value("factor", 1.0f);
      keys.rope_scaling_orig_ctx = rope->value("original_max_position_embeddings", 0u);
    } else if (type == "llama3") {
      hp.has_rope_freqs = true;
    } else if (type != "default" && type != "mrope") {
      throw Error(c.path + ": rope type '" + type + "' is not one keel converts (default, linear, yarn, llama3)");
    }
  }
  if (arch == "qwen35") {
    double partial = c.num_or("partial_rotary_factor", 1.0);
    if (rope && rope->contains("partial_rotary_factor")) partial = (*rope)["partial_rotary_factor"].get<double>();
    hp.n_rot = static_cast<uint32_t>(hp.head_dim * partial);
    hp.gated_attention = true;
    hp.ssm_conv_kernel = c.u32("linear_conv_kernel_dim");
    hp.ssm_state_size = c.u32("linear_key_head_dim");
    hp.ssm_group_count = c.u32("linear_num_key_heads");
    hp.ssm_time_step_rank = c.u32("linear_num_value_heads");
    const uint32_t d_v = c.u32("linear_value_head_dim");
    if (d_v != hp.ssm_state_size)
      throw Error(c.path + ": linear_value_head_dim " + std::to_string(d_v) + " differs from linear_key_head_dim " +
                  std::to_string(hp.ssm_state_size) + " (the GGUF format stores one head size)");
    if (hp.ssm_group_count == 0 || hp.ssm_time_step_rank % hp.ssm_group_count)
      throw Error(c.path + ": linear_num_value_heads must be a multiple of linear_num_key_heads");
    hp.ssm_inner_size = hp.ssm_time_step_rank * d_v;
    hp.recurrent.assign(hp.n_layer, false);
    if (const json* lt = c.find("layer_types"); lt && lt->is_array()) {
      if (lt->size() != hp.n_layer) throw Error(c.path + ": layer_types has " + std::to_string(lt->size()) + " entries");
      for (uint32_t il = 0; il < hp.n_layer; ++il) hp.recurrent[il] = (*lt)[il] == "linear_attention";
    } else {
      const uint32_t interval = c.u32_or("full_attention_interval", 4);
      for (uint32_t il = 0; il < hp.n_layer; ++il) hp.recurrent[il] = (il + 1) % interval != 0;
    }
    if (rope && rope->contains("mrope_section") && (*rope)["mrope_section"].is_array()) {
      keys.rope_sections.clear();
      for (const auto& s : (*rope)["mrope_section"]) keys.rope_sections.push_back(s.get<int32_t>());
      keys.rope_sections.resize(4, 0);
    }
  }
  return hp;
}

// ---- permutations ----

// Llama: HF row half·(d/2) + i of each head becomes GGUF row 2i + half (gguf_arch.md §3.2).
std::vector<uint32_t> llama_qk_rows(uint32_t n_heads, uint32_t head_dim) {
  std::vector<uint32_t> map(n_heads * head_dim);
  for (uint32_t h = 0; h < n_heads; ++h)
    for (uint32_t r = 0; r < head_dim; ++r) map[h * head_dim + r] = h * head_dim + (r % 2) * (head_dim / 2) + r / 2;
  return map;
}

// Qwen3.5 V heads: GGUF head j·n_k + g comes from HF head g·r + j (qwen35.md §1.5), in blocks
// of `block` consecutive rows/elements, after `offset` untouched ones.
std::vector<uint32_t> v_head_map(uint32_t offset, uint32_t n_k, uint32_t n_v, uint32_t block) {
  const uint32_t r = n_v / n_k;
  std::vector<uint32_t> map(offset + n_v * block);
  for (uint32_t i = 0; i < offset; ++i) map[i] = i;
  for (uint32_t hp = 0; hp < n_v; ++hp) {
    const uint32_t g = hp % n_k, j = hp / n_k, src = g * r + j;
    for (uint32_t e = 0; e < block; ++e) map[offset + hp * block + e] = offset + src * block + e;
  }
  return map;
}

std::string blk(uint32_t il, const std::string& name) { return "blk." + std::to_string(il) + "." + name; }

// ---- the tensor list ----

class Mapper {
 public:
  Mapper(const SafetensorsFolder& st, const model::Hparams& hp, std::string prefix)
      : st_(st), hp_(hp), prefix_(std::move(prefix)) {}

  // Adds GGUF tensor `name` from HF `hf_name` (relative to the text model's prefix) if present.
  Transform* add(const std::string& name, const std::string& hf_name, TensorRole role, bool required,
                 bool absolute = false) {
    const std::string full = absolute ? hf_name : prefix_ + hf_name;
    const StTensor* t = st_.find(full);
    if (!t) {
      if (required) throw Error("the checkpoint has no tensor '" + full + "' (" + hp_.arch + " needs it for " + name + ")");
      return nullptr;
    }
    if (!t->is_float())
      throw Error(t->file + ": tensor '" + full + "' has dtype " + t->dtype_name + "; keel converts F32, F16 and BF16");
    used_.insert(full);
    Planned p;
    p.spec.name = name;
    p.spec.role = role;
    p.spec.shape.assign(t->shape.rbegin(), t->shape.rend());
    if (p.spec.shape.empty()) p.spec.shape = {1};
    p.transform.src = t;
    out_.push_back(std::move(p));
    return &out_.back().transform;
  }

  void squeeze_last(const std::vector<uint64_t>& shape) { out_.back().spec.shape = shape; }
  std::deque<Planned>& planned() { return out_; }
  const std::set<std::string>& used() const { return used_; }

 private:
  const SafetensorsFolder& st_;
  const model::Hparams& hp_;
  std::string prefix_;
  std::deque<Planned> out_;  // a deque: add() hands out pointers that must stay valid
  std::set<std::string> used_;
};

void check_shape(const Planned& p, const std::vector<uint64_t>& expect) {
  if (p.spec.shape != expect) {
    auto str = [](const std::vector<uint64_t>& s) {
      std::string out = "[";
      for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
      return out + "]";
    };
    throw Error("tensor " + p.transform.src->name + " → " + p.spec.name + " has GGUF shape " + str(p.spec.shape) +
                ", config.json implies " + str(expect));
  }
}

void map_tensors(Mapper& m, const model::Hparams& hp) {
  const bool q35 = hp.arch == "qwen35";
  const ValueOp norm_op = q35 ? ValueOp::plus_one : ValueOp::none;
  auto norm = [&](const std::string& name, const std::string& hf) {
    if (Transform* t = m.add(name, hf, TensorRole::norm, true)) t->op = norm_op;
  };
  m.add("token_embd.weight", "embed_tokens.weight", TensorRole::token_embd, true);
  norm("output_norm.weight", "norm.weight");
  if (!m.add("output.weight", "lm_head.weight", TensorRole::output, !hp.tied_output, /*absolute=*/true)) {
    // tied: token_embd is the LM head
  }
  const uint32_t d = hp.head_dim;
  const uint32_t n_k = hp.ssm_group_count, n_v = hp.ssm_time_step_rank, d_v = hp.ssm_state_size;
  const uint32_t key_dim = n_k * hp.ssm_state_size;
  for (uint32_t il = 0; il < hp.n_layer; ++il) {
    const std::string L = "layers." + std::to_string(il) + ".";
    norm(blk(il, "attn_norm.weight"), L + "input_layernorm.weight");
    if (hp.is_recurrent(il)) {
      const std::string A = L + "linear_attn.";
      m.add(blk(il, "attn_qkv.weight"), A + "in_proj_qkv.weight", TensorRole::attn_qkv, true)->row_map =
          v_head_map(2 * key_dim, n_k, n_v, d_v);
      m.add(blk(il, "attn_gate.weight"), A + "in_proj_z.weight", TensorRole::attn_gate, true)->row_map =
          v_head_map(0, n_k, n_v, d_v);
      m.add(blk(il, "ssm_beta.weight"), A + "in_proj_b.weight", TensorRole::ssm_matrix, true)->row_map =
          v_head_map(0, n_k, n_v, 1);
      m.add(blk(il, "ssm_alpha.weight"), A + "in_proj_a.weight", TensorRole::ssm_matrix, true)->row_map =
          v_head_map(0, n_k, n_v, 1);
      Transform* a = m.add(blk(il, "ssm_a"), A + "A_log", TensorRole::ssm_f32, true);
      a->col_map = v_head_map(0, n_k, n_v, 1);
      a->op = ValueOp::neg_exp;
      m.add(blk(il, "ssm_dt.bias"), A + "dt_bias", TensorRole::ssm_f32, true)->col_map = v_head_map(0, n_k, n_v, 1);
      Transform* conv = m.add(blk(il, "ssm_conv1d.weight"), A + "conv1d.weight", TensorRole::ssm_f32, true);
      conv->row_map = v_head_map(2 * key_dim, n_k, n_v, d_v);
      const auto& cs = conv->src->shape;  // (C, 1, K)
      if (cs.size() != 3 || cs[1] != 1)
        throw Error("tensor " + conv->src->name + " should have shape (channels, 1, kernel)");
      m.squeeze_last({cs[2], cs[0]});
      m.add(blk(il, "ssm_norm.weight"), A + "norm.weight", TensorRole::norm, true);  // gated norm: no +1
      m.add(blk(il, "ssm_out.weight"), A + "out_proj.weight", TensorRole::ssm_matrix, true)->col_map =
          v_head_map(0, n_k, n_v, d_v);
    } else {
      const std::string S = L + "self_attn.";
      Transform* q = m.add(blk(il, "attn_q.weight"), S + "q_proj.weight", TensorRole::attn_q, true);
      Transform* k = m.add(blk(il, "attn_k.weight"), S + "k_proj.weight", TensorRole::attn_k, true);
      m.add(blk(il, "attn_v.weight"), S + "v_proj.weight", TensorRole::attn_v, true);
      if (hp.arch == "llama") {
        q->row_map = llama_qk_rows(hp.n_head, d);
        k->row_map = llama_qk_rows(hp.n_head_kv, d);
      }
      if (hp.qkv_bias) {
        m.add(blk(il, "attn_q.bias"), S + "q_proj.bias", TensorRole::bias, true);
        m.add(blk(il, "attn_k.bias"), S + "k_proj.bias", TensorRole::bias, true);
        m.add(blk(il, "attn_v.bias"), S + "v_proj.bias", TensorRole::bias, true);
      }
      if (hp.qk_norm) {
        norm(blk(il, "attn_q_norm.weight"), S + "q_norm.weight");
        norm(blk(il, "attn_k_norm.weight"), S + "k_norm.weight");
      }
      m.add(blk(il, "attn_output.weight"), S + "o_proj.weight", TensorRole::attn_output, true);
    }
    norm(blk(il, q35 ? "post_attention_norm.weight" : "ffn_norm.weight"), L + "post_attention_layernorm.weight");
    m.add(blk(il, "ffn_gate.weight"), L + "mlp.gate_proj.weight", TensorRole::ffn_gate, true);
    m.add(blk(il, "ffn_up.weight"), L + "mlp.up_proj.weight", TensorRole::ffn_up, true);
    m.add(blk(il, "ffn_down.weight"), L + "mlp.down_proj.weight", TensorRole::ffn_down, true);
  }
}

// Shapes from config.json, checked before anything is written.
void check_shapes(const std::deque<Planned>& planned, const model::Hparams& hp) {
  const uint64_t e = hp.n_embd, v = hp.n_vocab, ff = hp.n_ff;
  const uint64_t qw = uint64_t{hp.n_head} * hp.head_dim * (hp.gated_attention ? 2 : 1);
  const uint64_t kvw = uint64_t{hp.n_head_kv} * hp.head_dim, ow = uint64_t{hp.n_head} * hp.head_dim;
  const uint64_t n_v = hp.ssm_time_step_rank, key_dim = uint64_t{hp.ssm_group_count} * hp.ssm_state_size;
  const uint64_t conv = 2 * key_dim + hp.ssm_inner_size;
  for (const Planned& p : planned) {
    const std::string& n = p.spec.name;
    auto ends = [&](const char* s) { return n.size() >= std::strlen(s) && n.compare(n.size() - std::strlen(s), std::string::npos, s) == 0; };
    if (n == "token_embd.weight" || n == "output.weight") check_shape(p, {e, v});
    else if (n == "output_norm.weight" || ends("attn_norm.weight") || ends("ffn_norm.weight") || ends("post_attention_norm.weight")) check_shape(p, {e});
    else if (ends("attn_q.weight")) check_shape(p, {e, qw});
    else if (ends("attn_k.weight") || ends("attn_v.weight")) check_shape(p, {e, kvw});
    else if (ends("attn_q.bias")) check_shape(p, {qw});
    else if (ends("attn_k.bias") || ends("attn_v.bias")) check_shape(p, {kvw});
    else if (ends("attn_q_norm.weight") || ends("attn_k_norm.weight")) check_shape(p, {hp.head_dim});
    else if (ends("attn_output.weight")) check_shape(p, {ow, e});
    else if (ends("ffn_gate.weight") || ends("ffn_up.weight")) check_shape(p, {e, ff});
    else if (ends("ffn_down.weight")) check_shape(p, {ff, e});
    else if (ends("attn_qkv.weight")) check_shape(p, {e, conv});
    else if (ends("attn_gate.weight")) check_shape(p, {e, hp.ssm_inner_size});
    else if (ends("ssm_beta.weight") || ends("ssm_alpha.weight")) check_shape(p, {e, n_v});
    else if (ends("ssm_a") || ends("ssm_dt.bias")) check_shape(p, {n_v});
    else if (ends("ssm_conv1d.weight")) check_shape(p, {hp.ssm_conv_kernel, conv});
    else if (ends("ssm_norm.weight")) check_shape(p, {hp.ssm_state_size});
    else if (ends("ssm_out.weight")) check_shape(p, {hp.ssm_inner_size, e});
  }
}

// Tensors of the checkpoint that a text-only GGUF leaves out.
bool skipped(const std::string& name) {
  for (const char* p : {"model.visual.", "visual.", "model.vision_tower.", "mtp.", "model.mtp."})
    if (name.rfind(p, 0) == 0) return true;
  return name.find("rotary_emb.inv_freq") != std::string::npos;
}

model::FileType output_type(const std::string& name, const StTensor& embd) {
  if (name == "auto") {
    switch (embd.dtype) {
      case StDtype::f16: return model::FileType::f16;
      case StDtype::bf16: return model::FileType::bf16;
      default: return model::FileType::f32;
    }
  }
  if (auto t = model::file_type_from_name(name)) return *t;
  throw Error("unknown output type '" + name + "' (auto, f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k, q4_k_m, q5_k_m)",
              ErrorKind::usage);
}

RowSource make_row_source(Transform t) {
  return [t = std::move(t)](uint64_t row, float* out) {
    thread_local std::vector<float> tmp;
    const uint64_t src_row = t.row_map.empty() ? row : t.row_map[row];
    const uint64_t n = t.src->row_elems();
    if (t.col_map.empty()) {
      read_row_f32(*t.src, src_row, out);
    } else {
      tmp.resize(n);
      read_row_f32(*t.src, src_row, tmp.data());
      for (uint64_t c = 0; c < n; ++c) out[c] = tmp[t.col_map[c]];
    }
    if (t.op == ValueOp::plus_one) {
      for (uint64_t c = 0; c < n; ++c) out[c] += 1.0f;
    } else if (t.op == ValueOp::neg_exp) {
      for (uint64_t c = 0; c < n; ++c) out[c] = -std::exp(out[c]);
    }
  };
}

}  // namespace

ConvertPlan plan_convert(const ConvertOptions& options) {
  namespace fs = std::filesystem;
  const Config config = read_config(options.dir);
  const std::string arch = detect_arch(config);
  ArchKeyOptions keys;
  const model::Hparams hp_config = read_hparams(config, arch, keys);

  ConvertPlan plan;
  plan.source = std::make_shared<SafetensorsFolder>(SafetensorsFolder::open(options.dir));
  const SafetensorsFolder& st = *plan.source;
  std::string prefix = "model.";
  if (st.find("model.language_model.embed_tokens.weight")) prefix = "model.language_model.";
  else if (!st.find("model.embed_tokens.weight"))
    throw Error(options.dir + ": no model.embed_tokens.weight or model.language_model.embed_tokens.weight: not a "
                "decoder checkpoint keel knows");
  model::Hparams hp = hp_config;
  if (!st.find("lm_head.weight")) hp.tied_output = true;

  Mapper mapper(st, hp, prefix);
  map_tensors(mapper, hp);
  std::deque<Planned>& planned = mapper.planned();
  check_shapes(planned, hp);
  for (const StTensor* t : st.tensors()) {
    if (mapper.used().count(t->name) || skipped(t->name)) continue;
    if (t->name == "lm_head.weight") continue;
    throw Error(options.dir + ": tensor '" + t->name + "' has no place in a " + arch + " GGUF (keel does not know it)");
  }
  int n_skipped = 0;
  for (const StTensor* t : st.tensors()) n_skipped += skipped(t->name) && t->name.find("inv_freq") == std::string::npos;
  if (n_skipped) plan.notes.push_back(std::to_string(n_skipped) + " vision/MTP tensors skipped (text model only)");

  // llama3 rope scaling: a computed tensor, no source.
  std::vector<float> rope_freqs;
  if (hp.has_rope_freqs) {
    const json& r = *config.rope();
    rope_freqs = llama3_rope_factors(hp.n_rot, hp.rope_base, r.value("factor", 8.0f), r.value("low_freq_factor", 1.0f),
                                     r.value("high_freq_factor", 4.0f),
                                     r.value("original_max_position_embeddings", 8192.0f));
  }

  // The family's own tensor list, when keel runs this architecture, must agree with ours.
  try {
    const model::Family& family = model::family_for(arch);
    std::set<std::string> ours;
    for (const Planned& p : planned) ours.insert(p.spec.name);
    for (const model::TensorSpec& s : family.tensor_specs(hp)) {
      if (s.role == TensorRole::rope_freqs) continue;
      if (!ours.count(s.name) && !s.optional)
        throw Error("internal error: convert does not produce " + s.name + ", which " + arch + " needs");
    }
  } catch (const Error& e) {
    if (std::string(e.what()).rfind("internal error", 0) == 0) throw;  // an unknown family is fine
  }

  const model::FileType ftype = output_type(options.type, *st.find(prefix + "embed_tokens.weight"));
  std::vector<model::TensorSpec> specs;
  for (const Planned& p : planned) specs.push_back(p.spec);
  const std::vector<quant::Type> types = model::recipe_types(ftype, specs);

  // Metadata: general and {arch}.* keys, then the tokenizer.
  const std::string name = options.name.empty() ? fs::path(options.dir).filename().string() : options.name;
  set_arch_metadata(plan.metadata, hp, name.empty() ? fs::absolute(options.dir).parent_path().filename().string() : name, keys);
  plan.metadata.set("general.file_type", gguf::value_u32(model::llama_ftype_id(ftype)));
  plan.metadata.set("general.quantization_version", gguf::value_u32(2));
  std::string vocab = options.vocab_from;
  if (vocab.empty()) {
    const fs::path tj = fs::path(options.dir) / "tokenizer.json";
    if (!fs::exists(tj))
      throw Error(options.dir + ": no tokenizer.json; pass --vocab-from FILE (a GGUF or a tokenizer.json)");
    vocab = tj.string();
  }
  import_tokenizer(vocab, options.pre, plan.metadata);
  const uint32_t n_tokens = tokenizer_vocab_size(plan.metadata);
  if (n_tokens > hp.n_vocab)
    throw Error(vocab + ": the tokenizer has " + std::to_string(n_tokens) + " tokens, the model's embedding only " +
                std::to_string(hp.n_vocab) + " rows");
  if (n_tokens < hp.n_vocab) {
    pad_vocab(plan.metadata, hp.n_vocab);
    plan.notes.push_back("vocabulary padded from " + std::to_string(n_tokens) + " to " + std::to_string(hp.n_vocab) +
                         " tokens with [PAD] entries");
  }

  for (size_t i = 0; i < planned.size(); ++i) {
    TensorJob job;
    job.record = {planned[i].spec.name, types[i], planned[i].spec.shape};
    job.note = planned[i].transform.src->name;
    job.rows = make_row_source(std::move(planned[i].transform));
    plan.jobs.push_back(std::move(job));
  }
  if (!rope_freqs.empty()) {
    TensorJob job;
    job.record = {"rope_freqs.weight", quant::Type::F32, {rope_freqs.size()}};
    job.note = "llama3 rope factors";
    job.rows = [f = std::move(rope_freqs)](uint64_t, float* out) { std::copy(f.begin(), f.end(), out); };
    plan.jobs.insert(plan.jobs.begin() + (hp.tied_output ? 2 : 3), std::move(job));
  }
  return plan;
}

}  // namespace keel::tools
