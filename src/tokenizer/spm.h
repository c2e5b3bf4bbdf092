// SentencePiece BPE (tokenizer.ggml.model = llama), as llama.cpp runs it: start from UTF-8
// characters, repeatedly merge the adjacent pair whose concatenation is the vocabulary piece
// with the highest score (ties: leftmost), and spell what never became a piece as <0xNN> bytes.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

#include "tokenizer/vocab.h"

namespace keel::tokenizer {

// `text` is already escaped (spaces as U+2581, the space prefix added); ids are appended.
// When the vocabulary allows it (Vocab::spm_words_independent) words are encoded separately.
void spm_encode(const Vocab& vocab, std::string_view text, std::vector<int32_t>& out);
// The reference: one merge session over the whole text, as llama.cpp runs it.
void spm_encode_whole(const Vocab& vocab, std::string_view text, std::vector<int32_t>& out);

}  // namespace keel::tokenizer
