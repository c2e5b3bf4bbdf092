// Hugging Face tokenizer.json decoders for byte-level BPE, applied as `tokenizers` applies them
// to the tokens' texts: ByteLevel and Fuse join the tokens into one text; Replace (string or
// regex) and Strip (a character, up to `start` times at the front and `stop` at the back) work
// on each token in turn; Sequence chains them. A decoder of ByteLevel alone changes nothing
// (keel's pieces are already bytes) and is left empty.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tokenizer/pretokenizer.h"

namespace keel::tokenizer {

class Decoder {
 public:
  Decoder() = default;  // concatenates the pieces

  // The decoder of a tokenizer.json ("decoder" object or null); types keel does not know are
  // named in `unsupported` and left out.
  static Decoder from_json(const nlohmann::json& spec, std::vector<std::string>& unsupported);

  bool empty() const { return steps_.empty(); }
  std::string apply(std::vector<std::string> tokens) const;

  enum class Kind { fuse, replace_string, replace_regex, strip };
  struct Step {
    Kind kind;
    std::string pattern{};  // replace_string: the literal; strip: the character (UTF-8)
    std::string content{};  // replace_*: the replacement
    std::optional<Regex> regex{};
    size_t start = 0, stop = 0;  // strip: how many times at most at each end
  };

 private:
  std::vector<Step> steps_;
};

}  // namespace keel::tokenizer
