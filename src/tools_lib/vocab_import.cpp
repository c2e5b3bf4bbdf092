#include "tools_lib/vocab_import.h"

#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "embedded/default_model.h"
#include "gguf/gguf.h"
#include "keel/error.h"
#include "tokenizer/json_input.h"

namespace keel::tools {
namespace {

constexpr int32_t kTokenNormal = 1, kTokenControl = 3, kTokenUserDefined = 4, kTokenUnused = 5;

// Pre-tokenizer regexes as tokenizer.json writes them (docs/specs/gguf_arch.md §5.1).
struct KnownPre {
  const char* name;
  const char* regex;
};
const KnownPre kKnownPre[] = {
    {"qwen2", R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
    {"qwen35", R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
    {"llama-bpe", R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
};

void collect_regexes(const nlohmann::json& node, std::vector<std::string>& out) {
  if (node.is_object()) {
    if (node.contains("pattern") && node["pattern"].is_object() && node["pattern"].contains("Regex") &&
        node["pattern"]["Regex"].is_string())
      out.push_back(node["pattern"]["Regex"].get<std::string>());
    for (const auto& [k, v] : node.items()) collect_regexes(v, out);
  } else if (node.is_array()) {
    for (const auto& v : node) collect_regexes(v, out);
  }
}

nlohmann::json parse_json_file(const std::string& path) { return tokenizer::read_json_file(path); }

// tokenizer_config.json names special tokens either as strings or as {"content": ...}.
std::string token_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

}  // namespace

void copy_tokenizer_keys(const std::string& gguf_path, gguf::Metadata& to) {
  const gguf::File f = embedded::open_gguf(gguf_path);
  int n = 0;
  for (const auto& [key, value] : f.metadata())
    if (key.rfind("tokenizer.", 0) == 0) {
      to.set(key, value);
      ++n;
    }
  if (n == 0 || !to.find("tokenizer.ggml.tokens"))
    throw Error(gguf_path + ": has no tokenizer (no tokenizer.ggml.tokens key)");
}

void import_tokenizer_json(const std::string& json_path, const std::string& pre, gguf::Metadata& to) try {
  const nlohmann::json tj = parse_json_file(json_path);
  auto bad = [&](const std::string& what) { throw Error(json_path + ": " + what); };
  if (!tj.contains("model") || !tj["model"].is_object()) bad("no \"model\" object");
  const nlohmann::json& model = tj["model"];
  if (model.value("type", "") != "BPE") bad("model type '" + model.value("type", "?") + "': keel imports BPE tokenizers only");
  if (!model.contains("vocab") || !model["vocab"].is_object()) bad("no model.vocab");

  std::map<uint32_t, std::pair<std::string, int32_t>> by_id;  // id -> (text, type)
  int64_t listed = 0;
  for (const auto& [text, id] : model["vocab"].items()) {
    const int64_t i = tokenizer::json_token_id(json_path, id, "model.vocab[\"" + text + "\"]");
    by_id[static_cast<uint32_t>(i)] = {text, kTokenNormal};
    ++listed;
  }
  if (tj.contains("added_tokens") && tj["added_tokens"].is_array())
    for (const auto& a : tj["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a.contains("content") || !a["content"].is_string())
        bad("added_tokens entry without id or content");
      const int64_t i = tokenizer::json_token_id(json_path, a["id"], "added_tokens id");
      by_id[static_cast<uint32_t>(i)] = {a["content"].get<std::string>(),
                                         a.value("special", false) ? kTokenControl : kTokenUserDefined};
      ++listed;
    }
  const uint32_t n = by_id.empty() ? 0 : by_id.rbegin()->first + 1;
  tokenizer::check_dense_ids(json_path, n, listed);
  std::vector<gguf::Value> tokens, types;
  tokens.reserve(n);
  types.reserve(n);
  std::map<std::string, uint32_t> id_of;
  for (uint32_t id = 0; id < n; ++id) {
    auto it = by_id.find(id);
    if (it == by_id.end()) {
      tokens.push_back(gguf::value_string("[PAD" + std::to_string(id) + "]"));
      types.push_back(gguf::value_i32(kTokenUnused));
    } else {
      tokens.push_back(gguf::value_string(it->second.first));
      types.push_back(gguf::value_i32(it->second.second));
      id_of[it->second.first] = id;
    }
  }
  std::vector<gguf::Value> merges;
  if (model.contains("merges") && model["merges"].is_array()) {
    merges.reserve(model["merges"].size());
    for (const auto& m : model["merges"]) {
      if (m.is_string()) {
        merges.push_back(gguf::value_string(m.get<std::string>()));
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        merges.push_back(gguf::value_string(m[0].get<std::string>() + " " + m[1].get<std::string>()));
      } else {
        bad("a merge is neither \"a b\" nor [\"a\", \"b\"]");
      }
    }
  }
  std::string pre_name = pre;
  if (pre_name.empty()) {
    std::vector<std::string> regexes;
    if (tj.contains("pre_tokenizer")) collect_regexes(tj["pre_tokenizer"], regexes);
    for (const std::string& r : regexes)
      for (const KnownPre& k : kKnownPre)
        if (r == k.regex) pre_name = k.name;
    if (pre_name.empty())
      bad("its pre-tokenizer regex is not one keel knows (qwen2, qwen35, llama-bpe): pass --pre NAME");
  }
  to.set("tokenizer.ggml.model", gguf::value_string("gpt2"));
  to.set("tokenizer.ggml.pre", gguf::value_string(pre_name));
  to.set("tokenizer.ggml.tokens", gguf::value_array(gguf::ValueType::string, std::move(tokens)));
  to.set("tokenizer.ggml.token_type", gguf::value_array(gguf::ValueType::i32, std::move(types)));
  to.set("tokenizer.ggml.merges", gguf::value_array(gguf::ValueType::string, std::move(merges)));

  // Special ids and the chat template from tokenizer_config.json, when it sits beside.
  const std::filesystem::path cfg_path = std::filesystem::path(json_path).parent_path() / "tokenizer_config.json";
  if (std::filesystem::exists(cfg_path)) {
    const nlohmann::json cfg = parse_json_file(cfg_path.string());
    auto set_id = [&](const char* field, const char* key) {
      if (!cfg.contains(field)) return;
      auto it = id_of.find(token_text(cfg[field]));
      if (it != id_of.end()) to.set(key, gguf::value_u32(it->second));
    };
    set_id("bos_token", "tokenizer.ggml.bos_token_id");
    set_id("eos_token", "tokenizer.ggml.eos_token_id");
    set_id("pad_token", "tokenizer.ggml.padding_token_id");
    set_id("unk_token", "tokenizer.ggml.unknown_token_id");
    if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean())
      to.set("tokenizer.ggml.add_bos_token", gguf::value_bool(cfg["add_bos_token"].get<bool>()));
    if (cfg.contains("chat_template") && cfg["chat_template"].is_string())
      to.set("tokenizer.chat_template", gguf::value_string(cfg["chat_template"].get<std::string>()));
  }
  if (!to.find("tokenizer.ggml.eos_token_id"))
    for (const char* eos : {"<|endoftext|>", "<|end_of_text|>"})
      if (auto it = id_of.find(eos); it != id_of.end()) {
        to.set("tokenizer.ggml.eos_token_id", gguf::value_u32(it->second));
        break;
      }
} catch (const nlohmann::json::exception& e) {
  // A value of the wrong JSON type somewhere in the layout.
  throw Error(json_path + ": unexpected tokenizer.json layout: " + e.what());
}

void import_tokenizer(const std::string& path, const std::string& pre, gguf::Metadata& to) {
  if (path.size() >= 5 && path.substr(path.size() - 5) == ".json") return import_tokenizer_json(path, pre, to);
  copy_tokenizer_keys(path, to);
}

uint32_t tokenizer_vocab_size(const gguf::Metadata& md) {
  const gguf::Value* v = md.find("tokenizer.ggml.tokens");
  const gguf::Array* a = v ? v->as_array() : nullptr;
  return a ? static_cast<uint32_t>(a->items.size()) : 0;
}

void pad_vocab(gguf::Metadata& md, uint32_t n_vocab) {
  const uint32_t have = tokenizer_vocab_size(md);
  if (have >= n_vocab) return;
  auto grow = [&](const char* key, auto make) {
    const gguf::Value* v = md.find(key);
    if (!v || !v->as_array()) return;
    gguf::Value copy = *v;
    auto& items = std::get<gguf::Array>(copy.data).items;
    for (uint32_t i = static_cast<uint32_t>(items.size()); i < n_vocab; ++i) items.push_back(make(i));
    md.set(key, std::move(copy));
  };
  grow("tokenizer.ggml.tokens", [](uint32_t i) { return gguf::value_string("[PAD" + std::to_string(i) + "]"); });
  grow("tokenizer.ggml.token_type", [](uint32_t) { return gguf::value_i32(kTokenUnused); });
  grow("tokenizer.ggml.scores", [](uint32_t) { return gguf::value_f32(0.0f); });
}

}  // namespace keel::tools
