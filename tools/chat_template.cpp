#include "chat_template.h"

#include "keel/error.h"
#include "run_common.h"

namespace keel::cli {

std::string chat_template_source(const std::optional<std::string>& template_file, const gguf::File* model) {
  if (template_file) return read_text_file(*template_file);
  if (!model) throw Error("no chat template: give -m MODEL or --chat-template FILE", ErrorKind::usage);
  std::optional<std::string> source = model->get_string("tokenizer.chat_template");
  if (!source)
    throw Error("model '" + model->path() +
                "' has no chat template (no tokenizer.chat_template in its metadata); give one with --chat-template FILE");
  return *source;
}

nlohmann::ordered_json special_tokens(const gguf::File& model) {
  nlohmann::ordered_json tokens = nlohmann::ordered_json::object();
  const gguf::Array* vocab = model.get_array("tokenizer.ggml.tokens");
  if (!vocab) return tokens;
  for (const auto& [key, name] : {std::pair{"tokenizer.ggml.bos_token_id", "bos_token"}, std::pair{"tokenizer.ggml.eos_token_id", "eos_token"}}) {
    std::optional<int64_t> id = model.get_int(key);
    if (!id || *id < 0 || *id >= static_cast<int64_t>(vocab->items.size())) continue;
    if (const std::string* text = vocab->items[static_cast<size_t>(*id)].as_string()) tokens[name] = *text;
  }
  return tokens;
}

}  // namespace keel::cli
