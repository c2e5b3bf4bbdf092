// The OpenAI-compatible wire format: request validation for /v1/chat/completions and
// /v1/completions (unknown fields ignored, wrong types rejected with the parameter's name),
// error objects, response bodies and SSE framing.
#pragma once
#include <ctime>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "server/engine.h"
#include "template/template.h"

namespace keel::server {

using json = nlohmann::ordered_json;

// An error answered as {"error": {"message", "type", "param", "code"}} with an HTTP status.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string param = "", std::string type = "", std::string code = "")
      : std::runtime_error(std::move(message)), status(status), param(std::move(param)), type(std::move(type)),
        code(std::move(code)) {}
  int status;
  std::string param;
  std::string type;  // empty: derived from the status
  std::string code;  // OpenAI's machine-readable code (e.g. "model_not_found"); empty: null
};

json error_body(int status, const std::string& message, const std::string& param = "", const std::string& type = "",
                const std::string& code = "");

struct ApiRequest {
  bool chat = false;
  json messages;                   // chat: the messages array as sent
  json tools;                      // chat: tools array or null
  std::string prompt;              // completions
  std::string model;
  int64_t max_tokens = -1;         // -1: not given
  SamplingParams sampling;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;      // stream_options.include_usage
  bool logprobs = false;           // chat: "logprobs": true; completions: "logprobs": N present
  int top_logprobs = 0;            // chat: top_logprobs (0..20); completions: logprobs (0..5)
};

// Parses a request body (raw bytes: see parse_request_json for the JSON itself); throws
// ApiError(400) naming the offending parameter.
ApiRequest parse_request(const std::string& body, bool chat);

// The prompt text of a chat request: `chat_template` rendered with its messages and tools (null:
// none), add_generation_prompt true, the model's special tokens (bos_token/eos_token) and `now`
// for strftime_now(). Throws keel::Error (a tmpl::TemplateError) when the template refuses.
std::string chat_prompt_text(const tmpl::Template& chat_template, const json& special_tokens, const json& messages,
                             const json& tools, const std::tm& now);

// Response bodies. `logprobs`: the generated tokens' (all of them, or a chunk's), reported when
// the request asked (else "logprobs": null).
json completion_response(const ApiRequest& r, const std::string& id, int64_t created, const std::string& model,
                         const std::string& text, const GenerationResult& result,
                         std::span<const TokenLogprobs> logprobs = {});
// text_offset (completions): where the chunk's first token starts in the generated text; advanced.
json stream_chunk(const ApiRequest& r, const std::string& id, int64_t created, const std::string& model,
                  const std::optional<std::string>& text, const std::optional<FinishReason>& finish, bool first,
                  std::span<const TokenLogprobs> logprobs = {}, int64_t* text_offset = nullptr);

// The "logprobs" object of a choice. Chat: {"content": [{"token", "logprob", "bytes",
// "top_logprobs": [...]}], "refusal": null}. Completions (legacy): {"tokens", "token_logprobs",
// "top_logprobs": [{piece: logprob}], "text_offset"}, offsets in bytes of the generated text from
// `text_offset`, which is advanced past these tokens.
json chat_logprobs(std::span<const TokenLogprobs> tokens);
json completion_logprobs(std::span<const TokenLogprobs> tokens, int64_t& text_offset);
json usage_chunk(const ApiRequest& r, const std::string& id, int64_t created, const std::string& model,
                 const GenerationResult& result);

// Server-sent events: "data: <json>\n\n", the final "data: [DONE]\n\n", and a comment line
// (ignored by SSE clients) carrying prefill progress.
std::string sse_data(const json& payload);
std::string sse_done();
std::string sse_progress(const PrefillProgress& p);

// GET /metrics: the engine's counters in Prometheus' text exposition format (keel_* names).
std::string metrics_text(const EngineStats& s);

}  // namespace keel::server
