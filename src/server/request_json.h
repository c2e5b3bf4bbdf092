// Request bodies are untrusted JSON: parsed into an ordered_json (key order matters to a chat
// template's tojson) in time linear in the body, with nesting bounded while parsing.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace keel::server {

// Arrays and objects in a request body nest at most this deep (a tool's JSON schema needs a few
// dozen levels at most; the chat template's own limit, tmpl::kMaxValueDepth, is higher).
constexpr int kMaxRequestDepth = 64;

// Parses `text` as nlohmann's ordered_json parser does (a repeated key keeps its first place and
// its last value), but appends each key in constant time where ordered_map searches all the keys
// before it (a 1 MB body of 100k keys took a minute), and refuses nesting deeper than
// kMaxRequestDepth as soon as it is reached (copying and dumping a document recurse). Throws
// ApiError(400) for invalid JSON or too deep a body.
nlohmann::ordered_json parse_request_json(const std::string& text);

}  // namespace keel::server
