// The server's request path on any body, as keel serve runs it for /v1/chat/completions and
// /v1/completions (the same bytes are tried as both): parse_request's validation; for a chat, the
// prompt text a real chat template (../shared/chat-templates/Qwen3.5-4B.jinja) renders for its
// messages and tools; the request's stop strings over that text; and every body the server sends
// back (the error object, the response, stream chunks), serialised as the server does. A refusal is
// an ApiError (400) or, for the prompt, a keel::Error; anything else (another exception, a crash, a
// sanitizer report, a hang) is a defect. Checks: what parse_request accepted is within the ranges
// it promises.
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>

#include "fuzz_util.h"
#include "keel/error.h"
#include "server/api.h"
#include "server/stop_scanner.h"
#include "template/chat.h"
#include "template/template.h"

namespace {

using keel::server::ApiError;
using keel::server::ApiRequest;
using keel::server::json;

const keel::tmpl::Template& chat_template() {
  static const keel::tmpl::Template t = [] {
    std::ifstream in(keel::fuzz::shared("chat-templates/Qwen3.5-4B.jinja"), std::ios::binary);
    if (!in) __builtin_trap();
    return keel::tmpl::Template(std::string(std::istreambuf_iterator<char>(in), {}));
  }();
  return t;
}

// send_error in http_server.cpp: error_body(...).dump() with dump's default (throwing) handler.
void send_error(int status, const std::string& message, const std::string& param = "") {
  (void)keel::server::error_body(status, message, param).dump();
}

void check_accepted(const ApiRequest& r) {
  const auto& s = r.sampling;
  const bool ok = r.stop.size() <= 4 && r.max_tokens >= -1 && s.temperature >= 0 && s.temperature <= 2 &&
                  s.top_p >= 0 && s.top_p <= 1 && s.min_p >= 0 && s.min_p <= 1 && s.top_k >= 0 &&
                  (!r.chat || (r.messages.is_array() && !r.messages.empty())) && r.top_logprobs >= 0 &&
                  r.top_logprobs <= (r.chat ? 20 : 5) && (r.logprobs || r.top_logprobs == 0);
  if (!ok) __builtin_trap();
  for (const std::string& stop : r.stop)
    if (stop.empty()) __builtin_trap();
}

// What the server does with the generated text: stop strings, then the response bodies.
void respond(const ApiRequest& r, const std::string& generated) {
  keel::server::StopScanner scanner(r.stop);
  std::string emitted;
  for (size_t at = 0; at < generated.size() && !scanner.stopped(); at += 7) emitted += scanner.push(generated.substr(at, 7));
  if (!scanner.stopped()) emitted += scanner.flush();
  if (emitted.size() > generated.size()) __builtin_trap();
  keel::server::GenerationResult result;
  result.prompt_tokens = 3;
  result.completion_tokens = 2;
  result.finish = scanner.stopped() ? keel::server::FinishReason::stop : keel::server::FinishReason::length;
  const auto replace = json::error_handler_t::replace;
  (void)keel::server::completion_response(r, "id-1", 0, "model", emitted, result).dump(-1, ' ', false, replace);
  (void)keel::server::sse_data(keel::server::stream_chunk(r, "id-1", 0, "model", emitted, std::nullopt, true));
  (void)keel::server::sse_data(keel::server::stream_chunk(r, "id-1", 0, "model", std::nullopt, result.finish, false));
  if (r.include_usage) (void)keel::server::sse_data(keel::server::usage_chunk(r, "id-1", 0, "model", result));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const json special_tokens = {{"bos_token", "<s>"}, {"eos_token", "<|im_end|>"}};
  static const std::tm now = keel::tmpl::parse_date("2025-01-31");
  const std::string body(reinterpret_cast<const char*>(data), size);
  for (const bool chat : {true, false}) {
    ApiRequest r;
    try {
      r = keel::server::parse_request(body, chat);
    } catch (const ApiError& e) {
      if (e.status != 400) __builtin_trap();
      send_error(e.status, e.what(), e.param);
      continue;
    }
    check_accepted(r);
    std::string text = r.prompt;
    if (chat) {
      try {
        text = keel::server::chat_prompt_text(chat_template(), special_tokens, r.messages, r.tools, now);
      } catch (const keel::Error& e) {
        send_error(400, std::string("cannot build the prompt: ") + e.what(), "messages");
        continue;
      }
    }
    respond(r, text);
  }
  return 0;
}
