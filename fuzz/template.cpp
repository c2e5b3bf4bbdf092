// Chat-template engine (src/template): lex, parse and render a template with the product's
// limits, the way `keel template`, `keel run --chat` and the server do. Any keel::Error (a
// TemplateError: syntax, undefined, type, limit...) is a clean refusal; anything else, a hang past
// libFuzzer's -timeout, an allocation beyond -malloc_limit_mb or a leak is a defect.
// Input: the template text, then optionally a NUL byte and a conversation shaped like an entry
// of ../shared/chat-templates/cases.json ({"messages", "add_generation_prompt", "tools", "vars"});
// without one (or when it is not such an object) a fixed conversation with every kind of message.
#include <cstdint>
#include <cstring>
#include <string>

#include <nlohmann/json.hpp>

#include "keel/error.h"
#include "template/chat.h"
#include "template/template.h"

namespace {

using json = nlohmann::ordered_json;

const json& default_case() {
  static const json c = json::parse(R"({
    "messages": [
      {"role": "system", "content": "You are terse."},
      {"role": "user", "content": "Weather in Paris and \u00e9t\u00e9? {{ not_a_var }}"},
      {"role": "assistant", "content": null, "reasoning_content": "Call the tool.",
       "tool_calls": [{"id": "call_0001", "type": "function",
                       "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
                      {"id": "call_0002", "type": "function",
                       "function": {"name": "get_weather", "arguments": {"city": "Lyon"}}}]},
      {"role": "tool", "tool_call_id": "call_0001", "content": "18 C"},
      {"role": "tool", "tool_call_id": "call_0002", "content": "21 C"},
      {"role": "assistant", "content": "18 C in Paris, 21 C in Lyon."},
      {"role": "user", "content": [{"type": "text", "text": "Thanks \ud83d\ude00"}]}
    ],
    "add_generation_prompt": true,
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                              "required": ["city"]}}}],
    "vars": {"enable_thinking": true}
  })");
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* text = reinterpret_cast<const char*>(data);
  const void* nul = std::memchr(data, 0, size);
  const size_t template_size = nul ? static_cast<size_t>(static_cast<const uint8_t*>(nul) - data) : size;
  const std::string source(text, template_size);

  json chat_case = default_case();
  if (nul) {
    json given = json::parse(text + template_size + 1, text + size, nullptr, /*allow_exceptions=*/false);
    if (given.is_object() && given.contains("messages")) chat_case = std::move(given);
  }
  static const json tokens = {{"bos_token", "<s>"}, {"eos_token", "</s>"}};
  keel::tmpl::RenderOptions options;
  options.now = keel::tmpl::parse_date("2025-01-31");
  // The default work limit stops a runaway template in about a second natively but 20 s under
  // the sanitizers; a fifth of it keeps the fuzzer fast and still lets a template build strings
  // and lists of a hundred MB (the output and string limit stays the product's).
  options.limits.max_work = 4'000'000;
  try {
    const keel::tmpl::Template tmpl(source);
    (void)tmpl.render(keel::tmpl::chat_context(chat_case, tokens, nullptr), options);
  } catch (const keel::Error&) {
  }
  return 0;
}
