// The vocabulary shared by both tokenizer kinds: token texts, scores, types, the text -> id
// index and the special ids. Filled by a loader (GGUF or tokenizer.json), then `finalize()`d.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/piece_index.h"

namespace keel::tokenizer {

// tokenizer.ggml.token_type values.
enum class TokenType : int32_t {
  undefined = 0, normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6,
};

enum class VocabKind { spm, bpe };

struct Vocab {
  VocabKind kind = VocabKind::spm;
  std::vector<std::string> text;  // [n_vocab] raw vocabulary strings
  std::vector<float> score;       // [n_vocab] SPM merge scores (0 for BPE)
  std::vector<TokenType> type;    // [n_vocab]
  std::vector<uint8_t> lstrip, rstrip;  // [n_vocab] special-token whitespace stripping (HF flags)
  PieceIndex index;               // text -> id

  int32_t bos = -1, eos = -1, eot = -1, eom = -1, unk = -1, pad = -1;
  bool add_bos = false;
  bool add_eos = false;           // tokenizer.ggml.add_eos_token (reported, not applied by encode)
  bool add_space_prefix = false;  // SPM: a leading space before text that starts a fragment

  // Built by finalize():
  std::vector<int32_t> specials;  // CONTROL/USER_DEFINED/UNKNOWN ids, longest text first
  std::array<std::vector<int32_t>, 256> specials_by_first_byte;
  std::vector<std::string> piece; // [n_vocab] the bytes each token decodes to
  std::vector<uint8_t> eog;       // [n_vocab] 1 for end-of-generation tokens
  std::array<int32_t, 256> byte_token{};  // SPM byte fallback: id of <0xNN> (or the 1-byte token), -1
  // SPM: no token has U+2581 right after another character, so no merge crosses the start of
  // a word and words can be encoded one by one (with the same result, much faster).
  bool spm_words_independent = false;

  int32_t n_vocab() const { return static_cast<int32_t>(text.size()); }
  bool is_special(int32_t id) const {
    const TokenType t = type[id];
    return t == TokenType::control || t == TokenType::user_defined || t == TokenType::unknown;
  }
  // Fills in the derived tables; `model_name` is general.name (phi-3 strips after specials).
  void finalize(std::string_view model_name);
};

}  // namespace keel::tokenizer
