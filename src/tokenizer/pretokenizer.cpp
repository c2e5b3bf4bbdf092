#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/pretokenizer.h"

#include <pcre2.h>

#include <algorithm>

#include "keel/error.h"

namespace keel::tokenizer {

namespace {

// The patterns below are the pre-tokenizers' published splitting rules (HF tokenizer.json),
// in the form llama.cpp applies them: `(?i:'s|...)` spelled as explicit case classes.
const std::string kGpt2 = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
const std::string kLlama3 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const std::string kQwen2 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const std::string kQwen35 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// DeepSeek's cased-letter class, as code point ranges.
const std::string kDeepseekLetters =
    R"([A-Za-z\x{b5}\x{c0}-\x{d6}\x{d8}-\x{f6}\x{f8}-\x{1ba}\x{1bc}-\x{1bf}\x{1c4}-\x{293}\x{295}-\x{2af})"
    R"(\x{370}-\x{373}\x{376}\x{377}\x{37b}-\x{37d}\x{37f}\x{386}\x{388}-\x{38a}\x{38c}\x{38e}-\x{3a1})"
    R"(\x{3a3}-\x{3f5}\x{3f7}-\x{481}\x{48a}-\x{52f}\x{531}-\x{556}\x{10a0}-\x{10c5}\x{13a0}-\x{13f5})"
    R"(\x{13f8}-\x{13fd}\x{1c90}-\x{1cba}\x{1cbd}-\x{1cbf}\x{1d00}-\x{1d2b}\x{1d6b}-\x{1d77}\x{1d79}-\x{1d9a})"
    R"(\x{1e00}-\x{1f15}\x{1f18}-\x{1f1d}\x{1f20}-\x{1f45}\x{1f48}-\x{1f4d}\x{1f50}-\x{1f57}\x{1f59}\x{1f5b})"
    R"(\x{1f5d}\x{1f5f}-\x{1f7d}\x{1f80}-\x{1fb4}\x{1fb6}-\x{1fbc}\x{1fbe}\x{1fc2}-\x{1fc4}\x{1fc6}-\x{1fcc})"
    R"(\x{1fd0}-\x{1fd3}\x{1fd6}-\x{1fdb}\x{1fe0}-\x{1fec}\x{1ff2}-\x{1ff4}\x{1ff6}-\x{1ffc}\x{2102}\x{2107})"
    R"(\x{210a}-\x{2113}\x{2115}\x{2119}-\x{211d}\x{2124}\x{2126}\x{2128}\x{212a}-\x{212d}\x{212f}-\x{2134})"
    R"(\x{2139}\x{213c}-\x{213f}\x{2145}-\x{2149}\x{214e}\x{2183}\x{2184}\x{2c00}-\x{2c7b}\x{2c7e}-\x{2ce4})"
    R"(\x{2ceb}-\x{2cee}\x{2cf2}\x{2cf3}\x{a640}-\x{a66d}\x{a680}-\x{a69b}\x{a722}-\x{a76f}\x{a771}-\x{a787})"
    R"(\x{a78b}-\x{a78e}\x{ab70}-\x{abbf}\x{fb00}-\x{fb06}\x{fb13}-\x{fb17}\x{ff21}-\x{ff3a}\x{ff41}-\x{ff5a})"
    R"(\x{10400}-\x{1044f}\x{104b0}-\x{104d3}\x{104d8}-\x{104fb}\x{10c80}-\x{10cb2}\x{10cc0}-\x{10cf2})"
    R"(\x{118a0}-\x{118df}\x{1e900}-\x{1e943}])";
// DeepSeek's CJK/Hangul run: U+4E00-9FA5, U+0800-4E00, U+AC00-D7FF. llama.cpp matches this class
// after turning non-ASCII whitespace into U+000B, so those code points are left out here.
const std::string kDeepseekCjk =
    R"([\x{4e00}-\x{9fa5}\x{800}-\x{167f}\x{1681}-\x{1fff}\x{200b}-\x{2027}\x{202a}-\x{202e})"
    R"(\x{2030}-\x{205e}\x{2060}-\x{2fff}\x{3001}-\x{4e00}\x{ac00}-\x{d7ff}]+)";
// DeepSeek's punctuation run: ASCII punctuation, fullwidth forms, quotes, U+3001-3002.
const std::string kDeepseekPunct =
    R"(\s?[!-/:-~\x{ff01}-\x{ff0f}\x{ff1a}-\x{ff5e}\x{2018}-\x{201f}\x{3001}-\x{3002}]+)";

struct Entry {
  std::vector<std::string> names;
  PreTokenizerSpec spec;
};

const std::vector<Entry>& table() {
  static const std::vector<Entry> entries = {
      {{"default"}, {"default", {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", "[0-9][0-9][0-9]"}}},
      {{"gpt-2", "gpt2", "gpt-neox", "phi-2", "roberta-bpe", "olmo", "jais", "mpt"}, {"gpt-2", {kGpt2}}},
      {{"llama-bpe", "llama3", "llama-v3", "falcon3"}, {"llama-bpe", {kLlama3}, true, true}},
      {{"dbrx", "smaug-bpe"}, {"dbrx", {kLlama3}}},
      {{"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"}, {"qwen2", {kQwen2}}},
      {{"qwen35"}, {"qwen35", {kQwen35}}},
      {{"deepseek-llm"},
       {"deepseek-llm", {"[\r\n]", R"(\s?)" + kDeepseekLetters + "+", kDeepseekPunct, R"(\s+$)", kDeepseekCjk, R"(\p{N}+)"}}},
      {{"deepseek-coder"},
       {"deepseek-coder", {"[\r\n]", R"(\s?\p{L}+)", R"(\s?\p{P}+)", kDeepseekCjk, R"(\p{N})"}}},
      {{"falcon"}, {"falcon", {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2, "[0-9][0-9][0-9]"}}},
      {{"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"},
       {"starcoder", {R"(\p{N})", kGpt2}}},
  };
  return entries;
}

// llama.cpp (and HF's Rust regex) count U+0085 as whitespace; PCRE2's \s does not. Spell it in.
std::string with_nel_as_space(const std::string& p) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char n = p[i + 1];
      if (n == 's') {
        out += in_class ? R"(\s\x{85})" : R"([\s\x{85}])";
      } else if (n == 'S' && !in_class) {
        out += R"([^\s\x{85}])";
      } else {
        out += c;
        out += n;
      }
      ++i;
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];  // a literal ']' first in a class
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

struct CodeDeleter {
  void operator()(void* code) const { pcre2_code_free(static_cast<pcre2_code*>(code)); }
};

struct MatchData {
  explicit MatchData(const Regex& r)
      : data(pcre2_match_data_create_from_pattern(static_cast<pcre2_code*>(r.code()), nullptr)) {
    if (!data) throw Error("tokenizer: out of memory creating PCRE2 match data");
  }
  ~MatchData() { pcre2_match_data_free(data); }
  MatchData(const MatchData&) = delete;
  MatchData& operator=(const MatchData&) = delete;
  pcre2_match_data* data;
};

}  // namespace

PreTokenizerSpec pre_tokenizer_spec(std::string_view pre) {
  for (const Entry& e : table())
    if (std::find(e.names.begin(), e.names.end(), pre) != e.names.end()) return e.spec;
  std::string known;
  for (const auto& name : known_pre_tokenizers()) known += (known.empty() ? "" : ", ") + name;
  throw Error("unknown tokenizer.ggml.pre '" + std::string(pre) + "' (keel knows: " + known + ")");
}

std::vector<std::string> known_pre_tokenizers() {
  std::vector<std::string> names;
  for (const Entry& e : table()) names.insert(names.end(), e.names.begin(), e.names.end());
  return names;
}

const std::string& gpt2_regex() { return kGpt2; }

Regex::Regex(const std::string& pattern) : pattern_(pattern) {
  const std::string translated = with_nel_as_space(pattern);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY | PCRE2_MATCH_INVALID_UTF,
                                   &error_code, &error_offset, nullptr);
  if (!code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof message);
    throw Error("tokenizer: cannot compile pre-tokenizer regex '" + pattern + "' at offset " +
                std::to_string(error_offset) + ": " + reinterpret_cast<const char*>(message));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // JIT when available; the interpreter otherwise
  code_ = std::shared_ptr<void>(code, CodeDeleter{});
}

void Regex::split(std::string_view text, Span span, std::vector<Span>& out, void* match_data) const {
  auto* code = static_cast<pcre2_code*>(code_.get());
  auto* md = static_cast<pcre2_match_data*>(match_data);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + span.offset);
  size_t pos = 0, last = 0;
  uint32_t options = 0;
  while (pos < span.length) {
    int rc = pcre2_match(code, subject, span.length, pos, options, md, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      options |= PCRE2_NO_JIT;  // deep backtracking: the interpreter has no fixed stack
      continue;
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof message);
      throw Error("tokenizer: regex match failed: " + std::string(reinterpret_cast<const char*>(message)));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t begin = ov[0], end = ov[1];
    if (end == begin) {  // an empty match: step over one byte and keep looking
      pos = begin + 1;
      continue;
    }
    if (begin > last) out.push_back({span.offset + last, begin - last});
    out.push_back({span.offset + begin, end - begin});
    last = pos = end;
  }
  if (last < span.length) out.push_back({span.offset + last, span.length - last});
}

std::vector<Span> Regex::find_all(std::string_view text) const {
  std::vector<Span> matches;
  MatchData md(*this);
  auto* code = static_cast<pcre2_code*>(code_.get());
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  uint32_t options = 0;
  while (pos < text.size()) {
    const int rc = pcre2_match(code, subject, text.size(), pos, options, md.data, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !(options & PCRE2_NO_JIT)) {
      options |= PCRE2_NO_JIT;
      continue;
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof message);
      throw Error("tokenizer: regex match failed: " + std::string(reinterpret_cast<const char*>(message)));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.data);
    if (ov[1] == ov[0]) {  // an empty match replaces nothing: step over one byte
      pos = ov[0] + 1;
      continue;
    }
    matches.push_back({ov[0], ov[1] - ov[0]});
    pos = ov[1];
  }
  return matches;
}

PreTokenizer::PreTokenizer(const std::vector<std::string>& patterns) {
  for (const auto& p : patterns) regexes_.emplace_back(p);
}

std::vector<Span> PreTokenizer::split(std::string_view text) const {
  std::vector<Span> pieces;
  if (text.empty()) return pieces;
  pieces.push_back({0, text.size()});
  std::vector<Span> next;
  for (const Regex& regex : regexes_) {
    MatchData md(regex);
    next.clear();
    next.reserve(pieces.size() * 2);
    for (const Span& s : pieces) regex.split(text, s, next, md.data);
    pieces.swap(next);
  }
  return pieces;
}

}  // namespace keel::tokenizer
