#include "template/lexer.h"

#include <cctype>
#include <cstring>

#include "template/error.h"
#include "template/pystr.h"

namespace keel::tmpl {

namespace {

[[noreturn]] void fail(int line, const std::string& what) {
  throw TemplateError(ErrorType::syntax, what + " (template line " + std::to_string(line) + ")");
}

bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// Python's str.rstrip() on UTF-8 text.
std::string rstrip_text(const std::string& s) { return pystr::strip(s, std::nullopt, false, true); }

bool all_space_from(const std::string& s, size_t pos) {
  if (pos >= s.size()) return false;  // jinja2's `\s+` needs at least one character
  for (char32_t c : pystr::decode(std::string_view(s).substr(pos)))
    if (!pystr::is_space(c)) return false;
  return true;
}

int count_newlines(const std::string& s, size_t b, size_t e) {
  int n = 0;
  for (size_t i = b; i < e && i < s.size(); ++i) n += s[i] == '\n';
  return n;
}

// Python's "unicode-escape" decoding of a string literal's body.
std::string unescape(const std::string& body, int line) {
  std::string out;
  for (size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (c != '\\' || i + 1 >= body.size()) {
      out.push_back(c);
      continue;
    }
    char n = body[++i];
    auto hex = [&](int digits) {
      uint32_t v = 0;
      for (int k = 1; k <= digits; ++k) {
        if (i + k >= body.size()) fail(line, "truncated escape in string");
        char h = body[i + k];
        int d = (h >= '0' && h <= '9') ? h - '0' : (h >= 'a' && h <= 'f') ? h - 'a' + 10 : (h >= 'A' && h <= 'F') ? h - 'A' + 10 : -1;
        if (d < 0) fail(line, "bad escape in string");
        v = v * 16 + uint32_t(d);
      }
      i += digits;
      if (v > 0x10FFFF) fail(line, "bad escape in string");
      pystr::append_utf8(out, char32_t(v));
    };
    switch (n) {
      case 'n': out.push_back('\n'); break;
      case 't': out.push_back('\t'); break;
      case 'r': out.push_back('\r'); break;
      case '\\': out.push_back('\\'); break;
      case '\'': out.push_back('\''); break;
      case '"': out.push_back('"'); break;
      case 'a': out.push_back('\a'); break;
      case 'b': out.push_back('\b'); break;
      case 'f': out.push_back('\f'); break;
      case 'v': out.push_back('\v'); break;
      case '\n': break;  // line continuation
      case 'x': hex(2); break;
      case 'u': hex(4); break;
      case 'U': hex(8); break;
      default:
        if (n >= '0' && n <= '7') {
          uint32_t v = uint32_t(n - '0');
          for (int k = 0; k < 2 && i + 1 < body.size() && body[i + 1] >= '0' && body[i + 1] <= '7'; ++k)
            v = v * 8 + uint32_t(body[++i] - '0');
          pystr::append_utf8(out, char32_t(v));
        } else {
          out.push_back('\\');
          out.push_back(n);
        }
    }
  }
  return out;
}

const char* const kOperators[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[", "]", "(",
                                  ")", "{", "}", ">", "<", "=", ".", ":", "|", ",", ";"};

class Lexer {
 public:
  Lexer(std::string source, const LexOptions& o) : src_(std::move(source)), opt_(o) {}

  std::vector<Token> run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      size_t open = find_tag(pos_);
      if (open == std::string::npos) {
        emit_text(src_.substr(pos_));
        line_ += count_newlines(src_, pos_, src_.size());
        pos_ = src_.size();
        break;
      }
      std::string text = src_.substr(pos_, open - pos_);
      const char kind = src_[open + 1];  // '{', '%' or '#'
      char sign = 0;
      if (open + 2 < src_.size() && (src_[open + 2] == '-' || src_[open + 2] == '+')) sign = src_[open + 2];
      if (sign == '-') {
        text = rstrip_text(text);
      } else if (sign != '+' && opt_.lstrip_blocks && kind != '{') {
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if ((l_pos > 0 || line_starting) && all_space_from(text, l_pos)) text.resize(l_pos);
      }
      emit_text(text);
      line_ += count_newlines(src_, pos_, open);
      pos_ = open + 2 + (sign ? 1 : 0);
      if (kind == '#') {
        line_starting = lex_comment();
      } else if (kind == '%' && lex_raw()) {
        line_starting = true_if_newline_end_;
      } else {
        line_starting = lex_tag(kind == '%');
      }
    }
    tokens_.push_back(Token{TokenType::eof, "", 0, 0, line_});
    return std::move(tokens_);
  }

 private:
  size_t find_tag(size_t from) const {
    size_t at = from;
    while ((at = src_.find('{', at)) != std::string::npos) {
      if (at + 1 < src_.size() && (src_[at + 1] == '{' || src_[at + 1] == '%' || src_[at + 1] == '#')) return at;
      ++at;
    }
    return std::string::npos;
  }

  void emit_text(const std::string& text) {
    if (text.empty()) return;
    if (!tokens_.empty() && tokens_.back().type == TokenType::text) {
      tokens_.back().text += text;
      return;
    }
    tokens_.push_back(Token{TokenType::text, text, 0, 0, line_});
  }

  // After a closing delimiter: `-` strips all following whitespace; with trim_blocks a block or
  // comment end drops one newline. Returns whether the consumed end finished with a newline
  // (jinja2's line_starting, which decides lstrip_blocks for the next tag).
  bool after_end(char sign, bool is_block) {
    size_t start = pos_;
    if (sign == '-') {
      while (pos_ < src_.size() && is_ascii_space(src_[pos_])) ++pos_;
    } else if (sign != '+' && is_block && opt_.trim_blocks && pos_ < src_.size() && src_[pos_] == '\n') {
      ++pos_;
    }
    line_ += count_newlines(src_, start, pos_);
    return pos_ > 0 && src_[pos_ - 1] == '\n';
  }

  bool lex_comment() {
    size_t end = src_.find("#}", pos_);
    if (end == std::string::npos) fail(line_, "missing end of comment tag");
    char sign = 0;
    // jinja2 matches the comment body lazily, so the first "#}" closes it; a '-' or '+' just
    // before it is whitespace control.
    if (end > pos_ && (src_[end - 1] == '-' || src_[end - 1] == '+')) sign = src_[end - 1];
    line_ += count_newlines(src_, pos_, end);
    pos_ = end + 2;
    return after_end(sign, true);
  }

  // {% raw %}...{% endraw %}: the body is text, copied verbatim.
  bool lex_raw() {
    size_t p = pos_;
    while (p < src_.size() && is_ascii_space(src_[p])) ++p;
    if (src_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    while (p < src_.size() && is_ascii_space(src_[p])) ++p;
    char sign = 0;
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
    if (src_.compare(p, 2, "%}") != 0) return false;
    pos_ = p + 2;
    if (sign == '-') after_end('-', true);
    // Find {%[-+]? endraw [-+]?%}.
    size_t search = pos_;
    while (true) {
      size_t open = src_.find("{%", search);
      if (open == std::string::npos) fail(line_, "missing end of raw directive");
      size_t q = open + 2;
      char open_sign = 0;
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) open_sign = src_[q++];
      while (q < src_.size() && is_ascii_space(src_[q])) ++q;
      if (src_.compare(q, 6, "endraw") == 0) {
        q += 6;
        while (q < src_.size() && is_ascii_space(src_[q])) ++q;
        char close_sign = 0;
        if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) close_sign = src_[q++];
        if (src_.compare(q, 2, "%}") == 0) {
          std::string body = src_.substr(pos_, open - pos_);
          if (open_sign == '-') {
            body = rstrip_text(body);
          } else if (open_sign != '+' && opt_.lstrip_blocks) {
            size_t l_pos = body.rfind('\n');
            l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
            if (l_pos > 0 && all_space_from(body, l_pos)) body.resize(l_pos);
          }
          emit_text(body);
          line_ += count_newlines(src_, pos_, q + 2);
          pos_ = q + 2;
          true_if_newline_end_ = after_end(close_sign, true);
          return true;
        }
      }
      search = open + 2;
    }
  }

  bool lex_tag(bool is_block) {
    tokens_.push_back(Token{is_block ? TokenType::block_begin : TokenType::var_begin, "", 0, 0, line_});
    int depth = 0;
    while (true) {
      while (pos_ < src_.size() && is_ascii_space(src_[pos_])) {
        line_ += src_[pos_] == '\n';
        ++pos_;
      }
      if (pos_ >= src_.size()) fail(line_, is_block ? "unexpected end of template in a {% %} tag" : "unexpected end of template in a {{ }} tag");
      if (depth == 0) {
        const char* close = is_block ? "%}" : "}}";
        char sign = 0;
        size_t at = pos_;
        if ((src_[at] == '-' || (is_block && src_[at] == '+')) && src_.compare(at + 1, 2, close) == 0) sign = src_[at++];
        if (src_.compare(at, 2, close) == 0) {
          tokens_.push_back(Token{is_block ? TokenType::block_end : TokenType::var_end, "", 0, 0, line_});
          pos_ = at + 2;
          return after_end(sign, is_block);
        }
      }
      lex_expression_token(depth);
    }
  }

  void lex_expression_token(int& depth) {
    const char c = src_[pos_];
    const int line = line_;
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t b = pos_;
      auto digits = [&] {
        while (pos_ < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[pos_])) ||
                                      (src_[pos_] == '_' && pos_ + 1 < src_.size() && std::isdigit(static_cast<unsigned char>(src_[pos_ + 1])))))
          ++pos_;
      };
      digits();
      bool is_float = false;
      if (pos_ + 1 < src_.size() && src_[pos_] == '.' && std::isdigit(static_cast<unsigned char>(src_[pos_ + 1]))) {
        is_float = true;
        ++pos_;
        digits();
      }
      if (pos_ < src_.size() && (src_[pos_] == 'e' || src_[pos_] == 'E')) {
        size_t q = pos_ + 1;
        if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
        if (q < src_.size() && std::isdigit(static_cast<unsigned char>(src_[q]))) {
          is_float = true;
          pos_ = q;
          digits();
        }
      }
      std::string lit;
      for (size_t i = b; i < pos_; ++i)
        if (src_[i] != '_') lit.push_back(src_[i]);
      Token t{is_float ? TokenType::floating : TokenType::integer, lit, 0, 0, line};
      try {
        if (is_float) t.float_value = std::stod(lit);
        else t.int_value = std::stoll(lit);
      } catch (const std::exception&) {
        fail(line, "number literal out of range: " + lit);
      }
      tokens_.push_back(std::move(t));
      return;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t b = pos_;
      while (pos_ < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) ++pos_;
      tokens_.push_back(Token{TokenType::name, src_.substr(b, pos_ - b), 0, 0, line});
      return;
    }
    if (c == '\'' || c == '"') {
      size_t q = pos_ + 1;
      while (q < src_.size() && src_[q] != c) {
        if (src_[q] == '\\') ++q;
        ++q;
      }
      if (q >= src_.size()) fail(line, "unterminated string literal");
      std::string body = src_.substr(pos_ + 1, q - pos_ - 1);
      line_ += count_newlines(src_, pos_, q);
      pos_ = q + 1;
      tokens_.push_back(Token{TokenType::string, unescape(body, line), 0, 0, line});
      return;
    }
    for (const char* op : kOperators) {
      size_t n = std::strlen(op);
      if (src_.compare(pos_, n, op) != 0) continue;
      std::string o(op);
      if (o == "(" || o == "[" || o == "{") ++depth;
      if (o == ")" || o == "]" || o == "}") {
        if (depth == 0) fail(line, "unexpected '" + o + "'");
        --depth;
      }
      pos_ += n;
      tokens_.push_back(Token{TokenType::op, o, 0, 0, line});
      return;
    }
    fail(line, std::string("unexpected character '") + c + "'");
  }

  std::string src_;
  LexOptions opt_;
  size_t pos_ = 0;
  int line_ = 1;
  bool true_if_newline_end_ = false;
  std::vector<Token> tokens_;
};

// jinja2 normalises \r\n and \r to \n and drops one trailing newline before lexing.
std::string normalise_newlines(const std::string& source, bool keep_trailing_newline) {
  std::string s;
  s.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      s.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      s.push_back(source[i]);
    }
  }
  if (!keep_trailing_newline && !s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

}  // namespace

std::vector<Token> lex(const std::string& source, const LexOptions& options) {
  return Lexer(normalise_newlines(source, options.keep_trailing_newline), options).run();
}

}  // namespace keel::tmpl
