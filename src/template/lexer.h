// Splits a template into tokens as jinja2's lexer does with trim_blocks and lstrip_blocks on:
// text between tags (whitespace control already applied), tag delimiters, and the tokens of the
// expressions inside tags. Comments and {% raw %} are resolved here.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace keel::tmpl {

enum class TokenType { text, var_begin, var_end, block_begin, block_end, name, string, integer, floating, op, eof };

struct Token {
  TokenType type;
  std::string text;  // text: the data; name: the identifier; string: the decoded value; op: the operator
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
};

struct LexOptions {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
  bool keep_trailing_newline = false;
};

// Throws TemplateError(syntax) on an unterminated tag, comment or string.
std::vector<Token> lex(const std::string& source, const LexOptions& options = {});

}  // namespace keel::tmpl
