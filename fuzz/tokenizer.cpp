// Every tokenizer keel can load from ../shared/vocab: encode and decode any bytes, with and
// without BOS and special-token parsing. Checks: ids are inside the vocabulary, decode accepts
// them, and for valid UTF-8 decode(encode(s)) == s whenever the vocabulary can spell every byte
// of s on its own (llama.cpp drops bytes a vocabulary cannot spell, and keel matches its ids)
// and, for SentencePiece, s has no U+2581 (its stand-in for a space).
// Input: byte 0 picks the vocabulary, byte 1 the flags, the rest is the text.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "gguf/gguf.h"
#include "keel/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_data.h"
#include "tokenizer/utf8.h"

namespace {

using keel::tokenizer::Tokenizer;

struct Loaded {
  std::string name;
  Tokenizer tokenizer;
  std::array<bool, 256> spells_byte{};  // the byte alone has a token (BPE) or a byte token (SPM)
};

std::vector<Loaded> load_all() {
  std::vector<std::string> paths;
  for (const auto& e : std::filesystem::directory_iterator(keel::fuzz::shared("vocab")))
    if (e.path().extension() == ".gguf") paths.push_back(e.path().string());
  std::sort(paths.begin(), paths.end());
  std::vector<Loaded> out;
  const keel::tokenizer::ByteLevel byte_level;
  for (const std::string& path : paths) {
    try {
      Loaded l{std::filesystem::path(path).stem().string(),
               Tokenizer::from_gguf(keel::gguf::File::open(path)), {}};
      const auto& vocab = l.tokenizer.internals().vocab;
      for (int b = 0; b < 256; ++b)
        l.spells_byte[b] = l.tokenizer.is_spm()
                               ? vocab.byte_token[b] >= 0 && vocab.byte_token[b] != vocab.unk
                               : vocab.index.find(byte_level.encode(static_cast<uint8_t>(b))) >= 0;
      out.push_back(std::move(l));
    } catch (const keel::Error&) {
      // a vocabulary keel does not support (e.g. WordPiece) is not fuzzed
    }
  }
  if (out.empty()) {
    std::fprintf(stderr, "fuzz_tokenizer: no loadable vocabulary in %s\n", keel::fuzz::shared("vocab").c_str());
    std::abort();
  }
  return out;
}

[[noreturn]] void fail(const Loaded& l, const char* what) {
  std::fprintf(stderr, "fuzz_tokenizer (%s): %s\n", l.name.c_str(), what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<Loaded> tokenizers = load_all();
  if (size < 2) return 0;
  const Loaded& l = tokenizers[data[0] % tokenizers.size()];
  const bool add_bos = data[1] & 1, parse_special = data[1] & 2;
  const std::string text(reinterpret_cast<const char*>(data + 2), size - 2);

  const Tokenizer& tok = l.tokenizer;
  const std::vector<int32_t> ids = tok.encode(text, add_bos, parse_special);
  for (int32_t id : ids)
    if (id < 0 || id >= tok.n_vocab()) fail(l, "encode returned an id outside the vocabulary");
  const std::string back = tok.decode(ids);

  keel::tokenizer::StreamDecoder stream(tok);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.push(id);
  streamed += stream.flush();

  if (parse_special || !keel::tokenizer::utf8::is_valid(text)) return 0;
  for (unsigned char c : text)
    if (!l.spells_byte[c]) return 0;
  // SentencePiece writes spaces as U+2581 and decodes every U+2581 as a space (llama.cpp too).
  if (tok.is_spm() && text.find("\xE2\x96\x81") != std::string::npos) return 0;
  if (back != text) fail(l, "decode(encode(s)) != s for valid UTF-8");
  return 0;
}
