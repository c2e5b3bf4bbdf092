// Chat-template inputs as Hugging Face's apply_chat_template passes them: messages,
// add_generation_prompt, tools (only when given), special tokens, then extra variables.
#pragma once
#include <ctime>
#include <string>

#include <nlohmann/json.hpp>

namespace keel::tmpl {

// A conversation shaped like an entry of the chat-template corpus's cases.json:
// {"messages": [...], "add_generation_prompt": bool, "tools": [...]?, "vars": {...}?}.
// `tokens` (bos_token/eos_token) go in before the case's vars; `overrides` last.
// Throws keel::Error when the case is not of that shape, TemplateError(limit) when it nests deeper
// than kMaxValueDepth (checked before anything is copied).
nlohmann::ordered_json chat_context(const nlohmann::ordered_json& chat_case, const nlohmann::ordered_json& tokens,
                                    const nlohmann::ordered_json& overrides);

// Whether `j` nests arrays and objects more than `limit` levels deep ([1] is 1 level). It looks
// no deeper than that, so it is safe on any document nlohmann parsed (parsing and freeing do not
// recurse, but copying, dumping and converting a document do).
bool json_deeper_than(const nlohmann::ordered_json& j, int limit);

std::tm parse_date(const std::string& yyyy_mm_dd);  // throws keel::Error on a malformed date
std::tm today_local();

}  // namespace keel::tmpl
