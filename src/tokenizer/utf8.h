// Small UTF-8 helpers shared by the tokenizers and the streaming decoder.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace keel::tokenizer::utf8 {

// Length of the sequence a lead byte announces (1 for ASCII, continuation and invalid bytes),
// by the high nibble as llama.cpp does: 0xC_/0xD_ -> 2, 0xE_ -> 3, 0xF_ -> 4.
inline size_t sequence_length(uint8_t lead) {
  static constexpr uint8_t kByHighNibble[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kByHighNibble[lead >> 4];
}

// Appends the UTF-8 encoding of a code point (<= 0x10FFFF).
void append(std::string& out, uint32_t code_point);

// Number of bytes at the end of `bytes` that form the start of a valid UTF-8 sequence still
// missing continuation bytes (0 when the text ends on a character boundary or the tail can
// never become valid, in which case it may be emitted as it is).
size_t incomplete_tail(std::string_view bytes);

// True when `bytes` is entirely valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool is_valid(std::string_view bytes);

}  // namespace keel::tokenizer::utf8
