// Chat templates for the CLI: where the template comes from (--chat-template FILE or the GGUF's
// tokenizer.chat_template), the special tokens Hugging Face passes with it, and rendering.
#pragma once
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "gguf/gguf.h"

namespace keel::cli {

// The template text: --chat-template's file when given, else the model's tokenizer.chat_template.
// Throws keel::Error naming the model and suggesting --chat-template when it has none.
std::string chat_template_source(const std::optional<std::string>& template_file, const gguf::File* model);

// bos_token / eos_token as Hugging Face passes them: the vocabulary's texts of those ids, absent
// when the model has no such token.
nlohmann::ordered_json special_tokens(const gguf::File& model);

}  // namespace keel::cli
