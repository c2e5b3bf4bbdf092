// Parses template tokens into a tree, following jinja2's grammar and operator precedence.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "template/ast.h"
#include "template/lexer.h"

namespace keel::tmpl {

struct ParseOptions {
  // jinja2 rejects a filter or test it does not know when the template compiles, unless the use
  // sits inside an {% if %} or an inline if (then only reaching it fails).
  std::function<bool(const std::string&)> known_filter;
  std::function<bool(const std::string&)> known_test;
  int max_depth = 200;  // nesting of expressions and blocks, so hostile input cannot blow the stack
};

// Throws TemplateError(syntax) with the line and what was expected.
Body parse(const std::vector<Token>& tokens, const ParseOptions& options);

}  // namespace keel::tmpl
