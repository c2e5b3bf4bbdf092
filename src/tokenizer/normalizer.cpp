#include "tokenizer/normalizer.h"

#include <utf8proc.h>

#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>

#include "keel/error.h"
#include "tokenizer/utf8.h"

namespace keel::tokenizer {

namespace {

using nlohmann::json;

// Calls `normalize` on each maximal run of valid UTF-8 and keeps invalid bytes as they are
// (Hugging Face only ever sees valid text; keel tokenizes invalid bytes as bytes).
template <typename Fn>
std::string map_valid_runs(std::string_view text, Fn&& normalize) {
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  size_t pos = 0, run = 0;
  while (pos < text.size()) {
    utf8proc_int32_t cp;
    const utf8proc_ssize_t n = utf8proc_iterate(bytes + pos, static_cast<utf8proc_ssize_t>(text.size() - pos), &cp);
    if (n > 0) {
      pos += static_cast<size_t>(n);
      continue;
    }
    if (pos > run) normalize(text.substr(run, pos - run), out);
    out.push_back(text[pos]);
    run = ++pos;
  }
  if (pos > run) normalize(text.substr(run, pos - run), out);
  return out;
}

// Calls fn(code point) for each code point of valid UTF-8 text.
template <typename Fn>
void for_each_code_point(std::string_view text, Fn&& fn) {
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    utf8proc_int32_t cp;
    const utf8proc_ssize_t n = utf8proc_iterate(bytes + pos, static_cast<utf8proc_ssize_t>(text.size() - pos), &cp);
    pos += static_cast<size_t>(n);  // the text is valid (map_valid_runs), so n > 0
    fn(static_cast<uint32_t>(cp));
  }
}

void unicode_form(std::string_view run, utf8proc_option_t form, std::string& out) {
  // ASCII is the same in all four forms (the common case of long English or code prompts).
  bool ascii = true;
  for (char c : run) ascii = ascii && static_cast<uint8_t>(c) < 0x80;
  if (ascii) {
    out.append(run);
    return;
  }
  utf8proc_uint8_t* mapped = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(run.data()),
                                          static_cast<utf8proc_ssize_t>(run.size()), &mapped,
                                          static_cast<utf8proc_option_t>(UTF8PROC_STABLE | form));
  const std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(mapped, &std::free);
  if (n < 0) throw Error(std::string("tokenizer: Unicode normalization failed: ") + utf8proc_errmsg(n));
  out.append(reinterpret_cast<const char*>(mapped), static_cast<size_t>(n));
}

// Rust's char::to_lowercase, which `tokenizers` applies one character at a time: the simple
// mapping, except U+0130 (capital I with dot), the one unconditional multi-character lowering.
void lowercase(std::string_view run, std::string& out) {
  for_each_code_point(run, [&](uint32_t cp) {
    if (cp == 0x130) {
      out += "i\xCC\x87";  // i + U+0307 combining dot above
      return;
    }
    utf8::append(out, static_cast<uint32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
  });
}

// StripAccents drops every mark (General_Category M: Mn, Mc, Me), as unicode-normalization's
// is_combining_mark decides.
void strip_marks(std::string_view run, std::string& out) {
  for_each_code_point(run, [&](uint32_t cp) {
    const utf8proc_category_t c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
    if (c != UTF8PROC_CATEGORY_MN && c != UTF8PROC_CATEGORY_MC && c != UTF8PROC_CATEGORY_ME) utf8::append(out, cp);
  });
}

// Unicode White_Space, Rust's char::is_whitespace (what Strip trims).
bool is_white_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

// Length of the valid UTF-8 white space character starting at text[pos] (0 if none).
size_t white_space_at(std::string_view text, size_t pos) {
  utf8proc_int32_t cp;
  const utf8proc_ssize_t n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(text.data() + pos),
                                              static_cast<utf8proc_ssize_t>(text.size() - pos), &cp);
  return n > 0 && is_white_space(static_cast<uint32_t>(cp)) ? static_cast<size_t>(n) : 0;
}

std::string strip(std::string_view text, bool left, bool right) {
  size_t begin = 0, end = text.size();
  if (left)
    while (begin < end) {
      const size_t n = white_space_at(text, begin);
      if (n == 0) break;
      begin += n;
    }
  if (right)
    while (end > begin) {
      size_t start = end - 1;  // back to the lead byte of the last character
      while (start > begin && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80 && end - start < 4) --start;
      if (white_space_at(text.substr(0, end), start) != end - start) break;
      end = start;
    }
  return std::string(text.substr(begin, end - begin));
}

std::string replace_literal(std::string_view text, const std::string& pattern, const std::string& content) {
  if (pattern.empty()) return std::string(text);
  std::string out;
  size_t pos = 0;
  for (size_t found; (found = text.find(pattern, pos)) != std::string_view::npos; pos = found + pattern.size()) {
    out.append(text.substr(pos, found - pos));
    out += content;
  }
  out.append(text.substr(pos));
  return out;
}

std::string replace_matches(std::string_view text, const Regex& regex, const std::string& content) {
  std::string out;
  size_t pos = 0;
  for (const Span& m : regex.find_all(text)) {
    out.append(text.substr(pos, m.offset - pos));
    out += content;
    pos = m.offset + m.length;
  }
  out.append(text.substr(pos));
  return out;
}

void collect(const json& spec, std::vector<Normalizer::Step>& steps, std::vector<std::string>& unsupported) {
  using Kind = Normalizer::Kind;
  if (spec.is_null()) return;
  const std::string type = spec.value("type", "");
  const auto add = [&](Kind kind) -> Normalizer::Step& { return steps.emplace_back(Normalizer::Step{.kind = kind}); };
  if (type == "Sequence") {
    for (const json& s : spec.at("normalizers")) collect(s, steps, unsupported);
  } else if (type == "NFC") {
    add(Kind::nfc);
  } else if (type == "NFD") {
    add(Kind::nfd);
  } else if (type == "NFKC") {
    add(Kind::nfkc);
  } else if (type == "NFKD") {
    add(Kind::nfkd);
  } else if (type == "Lowercase") {
    add(Kind::lowercase);
  } else if (type == "StripAccents") {
    add(Kind::strip_accents);
  } else if (type == "Strip") {
    Normalizer::Step& s = add(Kind::strip);
    s.strip_left = spec.value("strip_left", true);
    s.strip_right = spec.value("strip_right", true);
  } else if (type == "Prepend") {
    add(Kind::prepend).content = spec.at("prepend").get<std::string>();
  } else if (type == "Replace") {
    const json& pattern = spec.at("pattern");
    const std::string content = spec.at("content").get<std::string>();
    if (pattern.contains("Regex")) {
      Normalizer::Step& s = add(Kind::replace_regex);
      s.regex.emplace(pattern.at("Regex").get<std::string>());
      s.content = content;
    } else {
      Normalizer::Step& s = add(Kind::replace_string);
      s.pattern = pattern.at("String").get<std::string>();
      s.content = content;
    }
  } else {
    unsupported.push_back(type.empty() ? "?" : type);
  }
}

}  // namespace

Normalizer Normalizer::from_json(const json& spec, std::vector<std::string>& unsupported) {
  Normalizer n;
  collect(spec, n.steps_, unsupported);
  return n;
}

std::string Normalizer::apply(std::string_view input) const {
  std::string text(input);
  for (const Step& s : steps_) {
    switch (s.kind) {
      case Kind::nfc:
        text = map_valid_runs(text, [](std::string_view r, std::string& o) { unicode_form(r, UTF8PROC_COMPOSE, o); });
        break;
      case Kind::nfd:
        text = map_valid_runs(text, [](std::string_view r, std::string& o) { unicode_form(r, UTF8PROC_DECOMPOSE, o); });
        break;
      case Kind::nfkc:
        text = map_valid_runs(text, [](std::string_view r, std::string& o) {
          unicode_form(r, static_cast<utf8proc_option_t>(UTF8PROC_COMPOSE | UTF8PROC_COMPAT), o);
        });
        break;
      case Kind::nfkd:
        text = map_valid_runs(text, [](std::string_view r, std::string& o) {
          unicode_form(r, static_cast<utf8proc_option_t>(UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT), o);
        });
        break;
      case Kind::lowercase: text = map_valid_runs(text, lowercase); break;
      case Kind::strip_accents: text = map_valid_runs(text, strip_marks); break;
      case Kind::strip: text = strip(text, s.strip_left, s.strip_right); break;
      case Kind::prepend:
        if (!text.empty()) text = s.content + text;
        break;
      case Kind::replace_string: text = replace_literal(text, s.pattern, s.content); break;
      case Kind::replace_regex: text = replace_matches(text, *s.regex, s.content); break;
    }
  }
  return text;
}

}  // namespace keel::tokenizer
