#include "tokenizer/byte_level.h"

#include "tokenizer/utf8.h"

namespace keel::tokenizer {

namespace {
bool maps_to_itself(int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); }
}  // namespace

ByteLevel::ByteLevel() {
  code_point_to_byte_.fill(-1);
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const int cp = maps_to_itself(b) ? b : next++;
    utf8::append(byte_to_text_[b], static_cast<uint32_t>(cp));
    code_point_to_byte_[cp] = static_cast<int16_t>(b);
  }
}

std::string ByteLevel::encode(std::string_view bytes) const {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += byte_to_text_[static_cast<uint8_t>(c)];
  return out;
}

std::string ByteLevel::decode(std::string_view text) const {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<uint8_t>(text[i]);
    size_t len = utf8::sequence_length(lead);
    if (i + len > text.size()) len = text.size() - i;
    uint32_t cp = lead;
    if (len == 2) cp = ((lead & 0x1F) << 6) | (static_cast<uint8_t>(text[i + 1]) & 0x3F);
    if (len == 1 && lead >= 0x80) cp = 0xFFFF;  // a stray byte: not in the alphabet
    if (cp < code_point_to_byte_.size() && code_point_to_byte_[cp] >= 0 && len <= 2) {
      out.push_back(static_cast<char>(code_point_to_byte_[cp]));
    } else {
      out.append(text.substr(i, len));
    }
    i += len;
  }
  return out;
}

}  // namespace keel::tokenizer
