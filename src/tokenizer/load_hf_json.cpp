// Tokenizer::from_hf_json: a Hugging Face tokenizer.json with a byte-level BPE model (and its
// normalizer and decoder), plus the tokenizer_config.json beside it (BOS/EOS, add_bos_token)
// when there is one.
#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "keel/error.h"
#include "tokenizer/json_input.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_data.h"

namespace keel::tokenizer {

namespace {

using nlohmann::json;

json read_json(const std::string& path) { return read_json_file(path); }

std::string escape_regex(const std::string& literal) {
  std::string out;
  for (char c : literal) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

// HF's own spelling of the pre-tokenizer regexes llama.cpp knows by name.
std::string known_pre_name(const std::vector<std::string>& regexes) {
  if (regexes.size() != 1) return "";
  std::string r = regexes[0];
  const std::string hf_contractions = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
  if (r.rfind(hf_contractions, 0) == 0)
    r = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])" + r.substr(hf_contractions.size());
  for (const char* name : {"llama-bpe", "qwen2", "qwen35"})
    if (pre_tokenizer_spec(name).regexes == std::vector<std::string>{r}) return name;
  return "";
}

struct PreTokenizerJson {
  std::vector<std::string> regexes;
  bool byte_level = false;
  bool add_prefix_space = false;
};

void collect_pre_tokenizer(const std::string& path, const json& pt, PreTokenizerJson& out) {
  if (pt.is_null()) return;
  const std::string type = pt.value("type", "");
  if (type == "Sequence") {
    for (const json& p : pt.at("pretokenizers")) collect_pre_tokenizer(path, p, out);
  } else if (type == "Split") {
    const json& pattern = pt.at("pattern");
    const std::string behavior = pt.value("behavior", "Isolated");
    if (behavior != "Isolated" || pt.value("invert", false))
      throw Error(path + ": pre_tokenizer Split with behavior '" + behavior +
                  "' is not supported (keel supports Isolated, not inverted)");
    if (pattern.contains("Regex"))
      out.regexes.push_back(pattern.at("Regex").get<std::string>());
    else
      out.regexes.push_back(escape_regex(pattern.at("String").get<std::string>()));
  } else if (type == "ByteLevel") {
    out.byte_level = true;
    out.add_prefix_space = pt.value("add_prefix_space", false);
    if (pt.value("use_regex", true)) out.regexes.push_back(gpt2_regex() + R"(|\s+)");
  } else if (type == "Digits") {
    out.regexes.push_back(pt.value("individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)");
  } else {
    throw Error(path + ": pre_tokenizer type '" + type + "' is not supported");
  }
}

// A token given in tokenizer_config.json as "text" or {"content": "text", ...}.
std::string token_content(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content")) return v.at("content").get<std::string>();
  return "";
}

}  // namespace

Tokenizer Tokenizer::from_hf_json(const std::string& path) {
  const json root = read_json(path);
  auto data = std::make_shared<TokenizerData>();
  Vocab& vocab = data->vocab;
  vocab.kind = VocabKind::bpe;

  try {
    const json& model = root.at("model");
    if (model.value("type", "BPE") != "BPE")
      throw Error(path + ": model type '" + model.value("type", "") + "' is not supported (keel imports BPE)");

    // Ids: the model's vocabulary, then the added tokens; holes become unused [PADn] entries.
    const json& model_vocab = model.at("vocab");
    const json& added = root.value("added_tokens", json::array());
    int64_t n = 0;
    for (const auto& [text, id] : model_vocab.items())
      n = std::max(n, json_token_id(path, id, "model.vocab[\"" + text + "\"]") + 1);
    for (const json& t : added) n = std::max(n, json_token_id(path, t.at("id"), "added_tokens id") + 1);
    const auto listed = static_cast<int64_t>(model_vocab.size() + added.size());
    check_dense_ids(path, n, listed);
    vocab.text.assign(n, std::string());
    vocab.type.assign(n, TokenType::unused);
    for (const auto& [text, id] : model_vocab.items()) {
      const int64_t i = id.get<int64_t>();  // checked by json_token_id above
      vocab.text[i] = text;
      vocab.type[i] = TokenType::normal;
    }
    vocab.lstrip.assign(n, 0);
    vocab.rstrip.assign(n, 0);
    for (const json& t : added) {
      const int64_t i = t.at("id").get<int64_t>();
      vocab.text[i] = t.at("content").get<std::string>();
      vocab.type[i] = t.value("special", false) ? TokenType::control : TokenType::user_defined;
      vocab.lstrip[i] = t.value("lstrip", false);
      vocab.rstrip[i] = t.value("rstrip", false);
    }
    for (int64_t i = 0; i < n; ++i)
      if (vocab.type[i] == TokenType::unused) vocab.text[i] = "[PAD" + std::to_string(i) + "]";

    std::vector<std::pair<std::string, std::string>> merges;
    for (const json& m : model.at("merges")) {
      if (m.is_array() && m.size() == 2) {
        merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      } else if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ', 1);
        if (space == std::string::npos)
          merges.emplace_back();
        else
          merges.emplace_back(s.substr(0, space), s.substr(space + 1));
      } else {
        throw Error(path + ": a merge is neither \"a b\" nor [\"a\", \"b\"]");
      }
    }

    PreTokenizerJson pre;
    collect_pre_tokenizer(path, root.value("pre_tokenizer", json()), pre);
    if (!pre.byte_level)
      throw Error(path + ": no ByteLevel pre-tokenizer; keel imports byte-level BPE tokenizers only");
    std::vector<std::string> unsupported;
    data->normalizer = Normalizer::from_json(root.value("normalizer", json()), unsupported);
    for (const std::string& type : unsupported)
      data->warnings.push_back(path + ": normalizer '" + type + "' is not supported and not applied");
    unsupported.clear();
    data->decoder = Decoder::from_json(root.value("decoder", json()), unsupported);
    for (const std::string& type : unsupported)
      data->warnings.push_back(path + ": decoder '" + type + "' is not supported and not applied");

    data->pre_name = known_pre_name(pre.regexes);
    if (data->pre_name.empty()) data->pre_name = "tokenizer.json";
    data->prefix_space = pre.add_prefix_space;
    vocab.add_bos = data->pre_name == "llama-bpe";

    // BOS/EOS and add_bos: tokenizer_config.json, else a TemplateProcessing post-processor.
    std::string bos_text, eos_text;
    const json& post = root.value("post_processor", json());
    if (post.is_object() && post.value("type", "") == "TemplateProcessing" && post.contains("single")) {
      const json& single = post.at("single");
      vocab.add_bos = !single.empty() && single[0].contains("SpecialToken");
      if (vocab.add_bos) bos_text = single[0]["SpecialToken"].value("id", "");
    }
    const std::filesystem::path config_path = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
    if (std::filesystem::exists(config_path)) {
      const json config = read_json(config_path.string());
      if (config.contains("bos_token")) bos_text = token_content(config["bos_token"]);
      if (config.contains("eos_token")) eos_text = token_content(config["eos_token"]);
      if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean())
        vocab.add_bos = config["add_bos_token"].get<bool>();
    }

    vocab.finalize("");
    if (!bos_text.empty()) vocab.bos = vocab.index.find(bos_text);
    if (!eos_text.empty()) vocab.eos = vocab.index.find(eos_text);
    if (vocab.eos >= 0) vocab.eog[vocab.eos] = 1;

    data->bpe = BpeModel(vocab, merges, model.value("ignore_merges", false));
    data->pre = PreTokenizer(pre.regexes);
  } catch (const json::exception& e) {
    throw Error(path + ": unexpected tokenizer.json layout: " + e.what());
  }
  return Tokenizer(std::move(data));
}

}  // namespace keel::tokenizer
