#include "template/template.h"

#include "template/builtins.h"
#include "template/lexer.h"
#include "template/parser.h"

namespace keel::tmpl {

const char* error_type_name(ErrorType type) {
  switch (type) {
    case ErrorType::syntax: return "TemplateSyntaxError";
    case ErrorType::raised: return "TemplateError";
    case ErrorType::undefined: return "UndefinedError";
    case ErrorType::type: return "TypeError";
    case ErrorType::security: return "SecurityError";
    case ErrorType::runtime: return "TemplateRuntimeError";
    case ErrorType::limit: return "LimitExceeded";
  }
  return "TemplateError";
}

Template::Template(const std::string& source) {
  ParseOptions options;
  options.known_filter = is_known_filter;
  options.known_test = is_known_test;
  body_ = std::make_shared<const Body>(parse(lex(source), options));
}

std::string Template::render(const nlohmann::ordered_json& context, const RenderOptions& options) const {
  if (!context.is_object()) throw TemplateError(ErrorType::type, "the template context must be a JSON object");
  auto root = std::make_shared<Scope>();
  for (auto it = context.begin(); it != context.end(); ++it) root->vars[it.key()] = Value::from_json(it.value());
  Interpreter interpreter(options.limits, options.now);
  return interpreter.render(*body_, root);
}

}  // namespace keel::tmpl
