// What a loaded Tokenizer shares between its copies (internal to src/tokenizer).
#pragma once
#include <string>
#include <vector>

#include "tokenizer/bpe.h"
#include "tokenizer/decoder.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/vocab.h"

namespace keel::tokenizer {

struct TokenizerData {
  Vocab vocab;
  BpeModel bpe;             // byte-level BPE only
  PreTokenizer pre;         // byte-level BPE only
  std::string pre_name;     // "spm" for SentencePiece
  bool prefix_space = false;  // HF ByteLevel add_prefix_space: a space before each text fragment
  Normalizer normalizer;      // tokenizer.json: applied to each text fragment before pre-tokenizing
  Decoder decoder;            // tokenizer.json: applied by decode() to the pieces
  std::vector<std::string> warnings;
};

}  // namespace keel::tokenizer
