// Pre-tokenization for byte-level BPE: a list of regexes (PCRE2, UTF + Unicode properties),
// each splitting every piece left by the previous one into its matches and the gaps between
// them, as llama.cpp's unicode_regex_split does. `tokenizer.ggml.pre` selects the list.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace keel::tokenizer {

struct PreTokenizerSpec {
  std::string name;                  // the canonical pre-tokenizer name
  std::vector<std::string> regexes;  // applied in order
  bool ignore_merges = false;        // a piece that is already a token is emitted whole
  bool add_bos = false;              // default when tokenizer.ggml.add_bos_token is absent
};

// The spec for a `tokenizer.ggml.pre` value; throws keel::Error naming an unknown one.
PreTokenizerSpec pre_tokenizer_spec(std::string_view pre);
// Names accepted by pre_tokenizer_spec, for error messages and tests.
std::vector<std::string> known_pre_tokenizers();
// The GPT-2 regex (also HF's ByteLevel pre-tokenizer with use_regex).
const std::string& gpt2_regex();

struct Span {
  size_t offset;
  size_t length;
};

// One compiled pattern. Invalid UTF-8 in the subject never matches (PCRE2_MATCH_INVALID_UTF):
// such bytes end up in gaps and are tokenized as bytes.
class Regex {
 public:
  explicit Regex(const std::string& pattern);  // throws keel::Error with PCRE2's message
  const std::string& pattern() const { return pattern_; }
  // Splits text[span] into matches and gaps, appending the pieces to out.
  void split(std::string_view text, Span span, std::vector<Span>& out, void* match_data) const;
  // Every non-empty match in `text`, left to right, not overlapping (for Replace normalizers).
  std::vector<Span> find_all(std::string_view text) const;
  void* code() const { return code_.get(); }

 private:
  std::string pattern_;
  std::shared_ptr<void> code_;  // pcre2_code_8, freed by its deleter
};

class PreTokenizer {
 public:
  PreTokenizer() = default;
  explicit PreTokenizer(const std::vector<std::string>& patterns);
  bool empty() const { return regexes_.empty(); }
  // Pieces of `text`, in order, covering it exactly.
  std::vector<Span> split(std::string_view text) const;

 private:
  std::vector<Regex> regexes_;
};

}  // namespace keel::tokenizer
