// GPT-2's byte-level alphabet: every byte maps to one printable code point (printable Latin-1
// bytes map to themselves, the others to U+0100 and up), so any byte string is a string of
// "characters" that BPE merges can work on. Space is U+0120 'Ġ', newline U+010A 'Ċ'.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace keel::tokenizer {

class ByteLevel {
 public:
  ByteLevel();
  // The UTF-8 text of the code point that stands for `byte`.
  const std::string& encode(uint8_t byte) const { return byte_to_text_[byte]; }
  std::string encode(std::string_view bytes) const;
  // Maps a byte-level string back to bytes. Code points outside the alphabet are kept as their
  // UTF-8 bytes (such a token is not byte-level text; passing it through loses nothing).
  std::string decode(std::string_view text) const;

 private:
  std::array<std::string, 256> byte_to_text_;
  std::array<int16_t, 512> code_point_to_byte_;  // -1 where no byte maps to that code point
};

}  // namespace keel::tokenizer
