// Hugging Face tokenizer.json normalizers, applied as `tokenizers` applies them: to each piece
// of text between special tokens, before pre-tokenization. Supported: NFC, NFD, NFKC, NFKD
// (utf8proc), Lowercase, Replace (string or regex), Prepend, Strip, StripAccents, Sequence.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tokenizer/pretokenizer.h"

namespace keel::tokenizer {

class Normalizer {
 public:
  Normalizer() = default;  // changes nothing

  // The normalizer of a tokenizer.json ("normalizer" object or null). A type keel does not
  // know is left out and named in `unsupported` (the caller warns).
  static Normalizer from_json(const nlohmann::json& spec, std::vector<std::string>& unsupported);

  bool empty() const { return steps_.empty(); }
  // The normalized text. Invalid UTF-8 bytes pass through unchanged; the valid runs between
  // them are normalized.
  std::string apply(std::string_view text) const;

  enum class Kind { nfc, nfd, nfkc, nfkd, lowercase, replace_string, replace_regex, prepend, strip, strip_accents };
  struct Step {
    Kind kind;
    std::string pattern{};         // replace_string: the literal to find
    std::string content{};         // replace_*: the replacement; prepend: the prefix
    std::optional<Regex> regex{};  // replace_regex: the compiled pattern
    bool strip_left = false, strip_right = false;
  };

 private:
  std::vector<Step> steps_;
};

}  // namespace keel::tokenizer
