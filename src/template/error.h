// Template errors: which of jinja2's exceptions the reference would raise, and its message.
#pragma once
#include <string>

#include "keel/error.h"

namespace keel::tmpl {

enum class ErrorType {
  syntax,         // TemplateSyntaxError / TemplateAssertionError: the template does not compile
  raised,         // TemplateError from raise_exception(msg): msg is the template's own text
  undefined,      // UndefinedError: an undefined value was used
  type,           // TypeError: an operation on values of the wrong type
  security,       // SecurityError: a mutating method the immutable sandbox refuses
  runtime,        // TemplateRuntimeError, e.g. an unknown filter reached at runtime
  limit,          // keel's own guard: recursion, loop, output or work limit exceeded
};

const char* error_type_name(ErrorType type);  // jinja2's exception class name ("UndefinedError")

class TemplateError : public keel::Error {
 public:
  TemplateError(ErrorType type, std::string message)
      : keel::Error(std::move(message)), type_(type) {}
  ErrorType type() const { return type_; }

 private:
  ErrorType type_;
};

}  // namespace keel::tmpl
