// keel's Jinja-subset template engine, for tokenizer.chat_template: renders byte for byte what
// Python's jinja2 renders in Hugging Face's setup (ImmutableSandboxedEnvironment with trim_blocks
// and lstrip_blocks, loopcontrols, {% generation %}, raise_exception, strftime_now and
// transformers' tojson).
#pragma once
#include <ctime>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "template/error.h"
#include "template/interpreter.h"

namespace keel::tmpl {

struct RenderOptions {
  std::tm now{};  // what strftime_now() formats
  Limits limits;
};

class Template {
 public:
  // Lexes and parses; throws TemplateError(syntax) for a template jinja2 would not compile.
  explicit Template(const std::string& source);

  // Renders with `context` (a JSON object: its keys become template variables). Throws
  // TemplateError with the type of error jinja2 would raise.
  std::string render(const nlohmann::ordered_json& context, const RenderOptions& options) const;

 private:
  std::shared_ptr<const Body> body_;
};

}  // namespace keel::tmpl
