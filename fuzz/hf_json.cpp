// Hugging Face tokenizer.json import, both ways keel reads one: Tokenizer::from_hf_json (then
// encode/decode of a fixed text with what it built) and the GGUF metadata synth/convert build
// from it (tools::import_tokenizer_json). Any keel::Error is a clean refusal; anything else is a
// defect.
#include <cstdint>

#include "fuzz_util.h"
#include "gguf/writer.h"
#include "keel/error.h"
#include "tokenizer/tokenizer.h"
#include "tools_lib/vocab_import.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const keel::fuzz::InputFile input("tokenizer.json");
  const std::string& path = input.write(data, size);
  try {
    const auto tok = keel::tokenizer::Tokenizer::from_hf_json(path);
    const auto ids = tok.encode("Hello world <s> \xC3\xA9\xF0\x9F\x98\x80 123\n", true, true);
    for (int32_t id : ids)
      if (id < 0 || id >= tok.n_vocab()) __builtin_trap();
    (void)tok.decode(ids);
  } catch (const keel::Error&) {
  }
  try {
    keel::gguf::Metadata metadata;
    keel::tools::import_tokenizer_json(path, "qwen2", metadata);
  } catch (const keel::Error&) {
  }
  return 0;
}
