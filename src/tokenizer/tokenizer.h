// keel's tokenizer: text <-> token ids exactly as the model was trained, for SentencePiece
// (tokenizer.ggml.model = llama) and byte-level BPE (gpt2) vocabularies, loaded from GGUF
// metadata (vocab-only files too) or from a Hugging Face tokenizer.json.
//
// A Tokenizer is immutable once loaded; copies share the tables (copying and moving are cheap)
// and every method is safe to call from several threads at once.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace keel::gguf {
class File;
}

namespace keel::tokenizer {

struct TokenizerData;  // vocabulary, merges, pre-tokenizer (tokenizer.cpp)

// decode() concatenates the tokens' pieces, so decode(encode(s)) == s for valid UTF-8. It does
// not apply llama.cpp's optional "clean spaces" pass (" ," -> ","), which would break that.
struct DecodeOptions {
  bool skip_leading_bos = true;    // drop ids[0] when it is BOS
  bool strip_space_prefix = true;  // SPM: drop the space the encoder put before the first text
  bool render_special = true;      // control tokens appear as their text (else they vanish)
};

class Tokenizer {
 public:
  // Throws keel::Error naming the file and key for a missing or malformed vocabulary, an
  // unsupported tokenizer model or an unknown tokenizer.ggml.pre.
  static Tokenizer from_gguf(const gguf::File& file);
  // Byte-level BPE tokenizer.json (vocab, merges, added tokens, normalizer, Split/ByteLevel
  // pre-tokenizers, decoder);
  // tokenizer_config.json beside it, when present, gives BOS/EOS and add_bos_token.
  static Tokenizer from_hf_json(const std::string& tokenizer_json_path);

  // add_bos: prepend BOS (when the vocabulary has one). parse_special: CONTROL and UNKNOWN
  // tokens written in the text become their ids (USER_DEFINED ones always do, as in llama.cpp).
  // Invalid UTF-8 never throws: the bytes are encoded as byte tokens.
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const;
  bool add_bos_by_default() const;
  bool add_eos_by_default() const;  // tokenizer.ggml.add_eos_token; encode never appends EOS itself

  std::string token_to_piece(int32_t id) const;  // the bytes this token stands for
  std::string decode(const std::vector<int32_t>& ids) const { return decode(ids, DecodeOptions{}); }
  std::string decode(const std::vector<int32_t>& ids, const DecodeOptions& options) const;

  int32_t n_vocab() const;
  int32_t bos() const;  // -1 when absent
  int32_t eos() const;
  int32_t eot() const;
  bool is_end_of_generation(int32_t id) const;
  const std::string& token_text(int32_t id) const;  // raw vocabulary string
  int32_t token_type(int32_t id) const;             // tokenizer.ggml.token_type value
  int32_t find_token(std::string_view text) const;  // id of a vocabulary string, -1 if none
  bool is_spm() const;
  const std::string& pre_tokenizer() const;  // "spm" for SentencePiece, else the pre name
  // Things the loader accepted but could not honour exactly (e.g. an HF normalizer).
  const std::vector<std::string>& warnings() const;
  // The tables behind this tokenizer (tokenizer_data.h), for src/tokenizer and its tests.
  const TokenizerData& internals() const { return *data_; }

 private:
  explicit Tokenizer(std::shared_ptr<const TokenizerData> data) : data_(std::move(data)) {}
  void check_id(int32_t id) const;
  std::shared_ptr<const TokenizerData> data_;
};

// Streaming decode for `keel run`: returns the text of each new token as soon as it forms
// whole UTF-8 characters, holding back a sequence cut between tokens.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  std::string push(int32_t id);
  std::string flush();  // whatever is held back (an incomplete sequence at the very end)

 private:
  Tokenizer tokenizer_;  // a shared copy: the decoder may outlive the caller's Tokenizer
  std::string pending_;
};

}  // namespace keel::tokenizer
