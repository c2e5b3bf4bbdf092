// The tokenizer part of a GGUF written by synth and convert: the tokenizer.* keys copied from
// another GGUF, or built from a Hugging Face tokenizer.json (byte-level BPE: tokens, token types,
// merges, the pre-tokenizer name, special token ids and the chat template from a
// tokenizer_config.json beside it). Vocabularies shorter than the model's embedding are padded
// with `[PAD{i}]` tokens of type UNUSED, as the real Qwen files are.
#pragma once
#include <cstdint>
#include <string>

#include "gguf/writer.h"

namespace keel::tools {

// Copies every key that starts with "tokenizer." from the GGUF at `path`.
void copy_tokenizer_keys(const std::string& gguf_path, gguf::Metadata& to);

// Builds the keys from tokenizer.json; `pre` overrides the pre-tokenizer name, which is otherwise
// recognised from the tokenizer's split regex (qwen2, qwen35, llama-bpe) or refused.
void import_tokenizer_json(const std::string& json_path, const std::string& pre, gguf::Metadata& to);

// Either of the above by the file's extension (.gguf or .json).
void import_tokenizer(const std::string& path, const std::string& pre, gguf::Metadata& to);

uint32_t tokenizer_vocab_size(const gguf::Metadata& md);  // 0 if there is no token list

// Pads tokens (and scores / token_type when present) to n_vocab entries.
void pad_vocab(gguf::Metadata& md, uint32_t n_vocab);

}  // namespace keel::tools
