#include "server/api.h"

#include <cmath>
#include <cstdio>

#include "server/request_json.h"
#include "template/chat.h"

namespace keel::server {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::stop: return "stop";
    case FinishReason::length: return "length";
    case FinishReason::cancelled: return "cancelled";
  }
  return "stop";
}

json error_body(int status, const std::string& message, const std::string& param, const std::string& type,
                const std::string& code) {
  std::string t = type;
  if (t.empty()) {
    t = status == 401 ? "authentication_error"
        : status == 404 ? "not_found_error"
        : status == 429 || status == 503 ? "server_busy_error"
        : status >= 500 ? "server_error"
                        : "invalid_request_error";
  }
  json e = {{"message", message}, {"type", t}, {"param", param.empty() ? json(nullptr) : json(param)},
           {"code", code.empty() ? json(nullptr) : json(code)}};
  return json{{"error", e}};
}

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& what) {
  throw ApiError(400, "'" + param + "': " + what, param);
}

// Optional field readers: absent or null leaves the default; a wrong type is a 400.
std::optional<double> number(const json& body, const char* key, double lo, double hi) {
  if (!body.contains(key) || body[key].is_null()) return std::nullopt;
  const json& v = body[key];
  if (!v.is_number()) bad(key, "expected a number, got " + std::string(v.type_name()));
  double d = v.get<double>();
  if (!(d >= lo && d <= hi)) bad(key, "must be between " + json(lo).dump() + " and " + json(hi).dump());
  return d;
}

// Integers beyond int64 (a random 64-bit seed, 1e300) are clamped to its ends before the range
// check; a float is an integer when it has no fraction (5.0), and is checked before it is converted.
std::optional<int64_t> integer(const json& body, const char* key, int64_t lo, int64_t hi) {
  if (!body.contains(key) || body[key].is_null()) return std::nullopt;
  const json& v = body[key];
  int64_t i = 0;
  if (v.is_number_unsigned()) {
    i = v.get<uint64_t>() > uint64_t(INT64_MAX) ? INT64_MAX : int64_t(v.get<uint64_t>());
  } else if (v.is_number_integer()) {
    i = v.get<int64_t>();
  } else if (v.is_number_float() && v.get<double>() == std::floor(v.get<double>())) {
    const double d = v.get<double>();  // [-2^63, 2^63) holds exactly the doubles that convert
    i = d >= 9223372036854775808.0 ? INT64_MAX : d < -9223372036854775808.0 ? INT64_MIN : int64_t(d);
  } else {
    bad(key, "expected an integer, got " + (v.is_number() ? v.dump() : std::string(v.type_name())));
  }
  if (i < lo || i > hi) bad(key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  return i;
}

std::optional<bool> boolean(const json& body, const char* key) {
  if (!body.contains(key) || body[key].is_null()) return std::nullopt;
  if (!body[key].is_boolean()) bad(key, "expected a boolean, got " + std::string(body[key].type_name()));
  return body[key].get<bool>();
}

void check_messages(const json& messages) {
  if (!messages.is_array()) bad("messages", "expected an array of messages");
  if (messages.empty()) bad("messages", "must hold at least one message");
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    const std::string p = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) bad(p, "expected an object");
    if (!m.contains("role") || !m["role"].is_string()) bad(p + ".role", "expected a string");
    if (m.contains("content") && !m["content"].is_null() && !m["content"].is_string() && !m["content"].is_array())
      bad(p + ".content", "expected a string, an array of content parts or null");
    if (m.contains("content") && m["content"].is_array())
      for (const json& part : m["content"])
        if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
          bad(p + ".content", "each content part needs a \"type\"");
  }
}

}  // namespace

ApiRequest parse_request(const std::string& body_text, bool chat) {
  json body = parse_request_json(body_text);
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
  ApiRequest r;
  r.chat = chat;
  if (body.contains("model") && !body["model"].is_null()) {
    if (!body["model"].is_string()) bad("model", "expected a string");
    r.model = body["model"].get<std::string>();
  }
  if (chat) {
    if (!body.contains("messages")) bad("messages", "is required");
    check_messages(body["messages"]);
    r.messages = body["messages"];
    if (body.contains("tools") && !body["tools"].is_null()) {
      if (!body["tools"].is_array()) bad("tools", "expected an array");
      r.tools = body["tools"];
    }
  } else {
    if (!body.contains("prompt")) bad("prompt", "is required");
    const json& p = body["prompt"];
    if (p.is_string()) r.prompt = p.get<std::string>();
    else if (p.is_array() && p.size() == 1 && p[0].is_string()) r.prompt = p[0].get<std::string>();
    else bad("prompt", "expected a string (or an array holding one string)");
  }
  if (auto n = integer(body, "n", 1, 1)) (void)n;
  auto max_tokens = integer(body, chat && body.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens", 0,
                            int64_t(1) << 40);
  if (max_tokens) r.max_tokens = *max_tokens;
  if (auto v = number(body, "temperature", 0, 2)) r.sampling.temperature = float(*v);
  if (auto v = number(body, "top_p", 0, 1)) r.sampling.top_p = float(*v);
  if (auto v = integer(body, "top_k", 0, 1 << 30)) r.sampling.top_k = int(*v);
  if (auto v = number(body, "min_p", 0, 1)) r.sampling.min_p = float(*v);
  // repetition_penalty (vLLM, HF) or repeat_penalty (llama-server): the same penalty.
  for (const char* key : {"repetition_penalty", "repeat_penalty"})
    if (auto v = number(body, key, 0, 10)) {
      if (*v <= 0) bad(key, "must be above 0");
      r.sampling.repetition_penalty = float(*v);
    }
  if (auto v = integer(body, "repeat_last_n", -1, 1 << 30)) r.sampling.repeat_last_n = int(*v);
  if (auto v = number(body, "presence_penalty", -2, 2)) r.sampling.presence_penalty = float(*v);
  if (auto v = number(body, "frequency_penalty", -2, 2)) r.sampling.frequency_penalty = float(*v);
  if (auto v = integer(body, "seed", INT64_MIN, INT64_MAX)) r.sampling.seed = uint64_t(*v);
  if (body.contains("stop") && !body["stop"].is_null()) {
    const json& s = body["stop"];
    if (s.is_string()) {
      r.stop.push_back(s.get<std::string>());
    } else if (s.is_array() && s.size() <= 4) {
      for (const json& x : s) {
        if (!x.is_string()) bad("stop", "expected a string or an array of up to 4 strings");
        r.stop.push_back(x.get<std::string>());
      }
    } else {
      bad("stop", "expected a string or an array of up to 4 strings");
    }
    for (const auto& x : r.stop)
      if (x.empty()) bad("stop", "stop strings must not be empty");
  }
  r.stream = boolean(body, "stream").value_or(false);
  if (body.contains("stream_options") && !body["stream_options"].is_null()) {
    const json& so = body["stream_options"];
    if (!so.is_object()) bad("stream_options", "expected an object");
    if (!r.stream) bad("stream_options", "only allowed when stream is true");
    if (so.contains("include_usage") && !so["include_usage"].is_null()) {
      if (!so["include_usage"].is_boolean()) bad("stream_options.include_usage", "expected a boolean");
      r.include_usage = so["include_usage"].get<bool>();
    }
  }
  if (chat) {
    r.logprobs = boolean(body, "logprobs").value_or(false);
    if (auto v = integer(body, "top_logprobs", 0, 20)) {
      if (!r.logprobs) bad("top_logprobs", "needs \"logprobs\": true");
      r.top_logprobs = int(*v);
    }
  } else if (auto v = integer(body, "logprobs", 0, 5)) {  // legacy: how many alternatives
    r.logprobs = true;
    r.top_logprobs = int(*v);
  }
  return r;
}

namespace {

// OpenAI reports an impossible token as -9999 rather than -inf (not JSON).
double finite_logprob(float lp) { return std::isfinite(lp) ? double(lp) : -9999.0; }

json bytes_of(const std::string& piece) {
  json b = json::array();
  for (unsigned char c : piece) b.push_back(int(c));
  return b;
}

json token_entry(const TokenChoice& t) {
  return json{{"token", t.piece}, {"logprob", finite_logprob(t.logprob)}, {"bytes", bytes_of(t.piece)}};
}

}  // namespace

json chat_logprobs(std::span<const TokenLogprobs> tokens) {
  json content = json::array();
  for (const TokenLogprobs& t : tokens) {
    json entry = token_entry(t.token);
    json top = json::array();
    for (const TokenChoice& c : t.top) top.push_back(token_entry(c));
    entry["top_logprobs"] = std::move(top);
    content.push_back(std::move(entry));
  }
  return json{{"content", std::move(content)}, {"refusal", nullptr}};
}

json completion_logprobs(std::span<const TokenLogprobs> tokens, int64_t& text_offset) {
  json pieces = json::array(), logprobs = json::array(), tops = json::array(), offsets = json::array();
  for (const TokenLogprobs& t : tokens) {
    pieces.push_back(t.token.piece);
    logprobs.push_back(finite_logprob(t.token.logprob));
    json top = json::object();
    for (const TokenChoice& c : t.top)
      if (!top.contains(c.piece)) top[c.piece] = finite_logprob(c.logprob);
    tops.push_back(std::move(top));
    offsets.push_back(text_offset);
    text_offset += static_cast<int64_t>(t.token.piece.size());
  }
  return json{{"tokens", std::move(pieces)}, {"token_logprobs", std::move(logprobs)}, {"top_logprobs", std::move(tops)},
              {"text_offset", std::move(offsets)}};
}

std::string chat_prompt_text(const tmpl::Template& chat_template, const json& special_tokens, const json& messages,
                             const json& tools, const std::tm& now) {
  json chat_case = {{"messages", messages}, {"add_generation_prompt", true}};
  if (!tools.is_null()) chat_case["tools"] = tools;
  tmpl::RenderOptions options;
  options.now = now;
  return chat_template.render(tmpl::chat_context(chat_case, special_tokens, nullptr), options);
}

json completion_response(const ApiRequest& r, const std::string& id, int64_t created, const std::string& model,
                         const std::string& text, const GenerationResult& result,
                         std::span<const TokenLogprobs> logprobs) {
  json lp = nullptr;
  int64_t offset = 0;
  if (r.logprobs) lp = r.chat ? chat_logprobs(logprobs) : completion_logprobs(logprobs, offset);
  json choice;
  if (r.chat) {
    choice = {{"index", 0}, {"message", {{"role", "assistant"}, {"content", text}}}, {"logprobs", lp},
              {"finish_reason", finish_reason_name(result.finish)}};
  } else {
    choice = {{"index", 0}, {"text", text}, {"logprobs", lp}, {"finish_reason", finish_reason_name(result.finish)}};
  }
  return json{{"id", id},
              {"object", r.chat ? "chat.completion" : "text_completion"},
              {"created", created},
              {"model", model},
              {"choices", json::array({choice})},
              {"usage",
               {{"prompt_tokens", result.prompt_tokens},
                {"completion_tokens", result.completion_tokens},
                {"total_tokens", result.prompt_tokens + result.completion_tokens}}}};
}

json stream_chunk(const ApiRequest& r, const std::string& id, int64_t created, const std::string& model,
                  const std::optional<std::string>& text, const std::optional<FinishReason>& finish, bool first,
                  std::span<const TokenLogprobs> logprobs, int64_t* text_offset) {
  json choice = {{"index", 0}};
  if (r.chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (text) delta["content"] = *text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text.value_or("");
  }
  int64_t unused_offset = 0;
  choice["logprobs"] = !r.logprobs || logprobs.empty() ? json(nullptr)
                       : r.chat                       ? chat_logprobs(logprobs)
                                                      : completion_logprobs(logprobs, text_offset ? *text_offset : unused_offset);
  choice["finish_reason"] = finish ? json(finish_reason_name(*finish)) : json(nullptr);
  json chunk = {{"id", id},
                {"object", r.chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", model},
                {"choices", json::array({choice})}};
  if (r.include_usage) chunk["usage"] = nullptr;
  return chunk;
}

json usage_chunk(const ApiRequest& r, const std::string& id, int64_t created, const std::string& model,
                 const GenerationResult& result) {
  return json{{"id", id},
              {"object", r.chat ? "chat.completion.chunk" : "text_completion"},
              {"created", created},
              {"model", model},
              {"choices", json::array()},
              {"usage",
               {{"prompt_tokens", result.prompt_tokens},
                {"completion_tokens", result.completion_tokens},
                {"total_tokens", result.prompt_tokens + result.completion_tokens}}}};
}

std::string sse_data(const json& payload) {
  return "data: " + payload.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

std::string sse_done() { return "data: [DONE]\n\n"; }

std::string sse_progress(const PrefillProgress& p) {
  char buf[160];
  std::snprintf(buf, sizeof buf, ": prefill {\"done\": %lld, \"total\": %lld, \"elapsed_s\": %.3f}\n\n",
                static_cast<long long>(p.done), static_cast<long long>(p.total), p.seconds);
  return buf;
}

std::string metrics_text(const EngineStats& s) {
  std::string out;
  auto metric = [&out](const char* name, const char* type, const char* help, double value) {
    char line[96];
    std::snprintf(line, sizeof line, "%.17g", value);
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " + line + "\n";
  };
  auto count = [](int64_t v) { return static_cast<double>(v); };
  metric("keel_requests_total", "counter", "Requests accepted into the queue.", count(s.requests_total));
  metric("keel_requests_rejected_total", "counter", "Requests answered 503 because the queue was full.",
         count(s.requests_rejected));
  metric("keel_requests_preempted_total", "counter",
         "Requests sent back to the queue because the KV pool could not hold every running request's next token.",
         count(s.requests_preempted));
  metric("keel_requests_running", "gauge", "Requests holding a sequence.", count(s.requests_running));
  metric("keel_requests_queued", "gauge", "Requests waiting for a sequence or KV pages.", count(s.requests_queued));
  metric("keel_queue_capacity", "gauge", "Requests that may wait (--queue).", count(s.queue_capacity));
  metric("keel_sequences", "gauge", "Sequences decoded together (--parallel).", count(s.sequences));
  metric("keel_prompt_tokens_total", "counter", "Prompt tokens prefilled.", count(s.prompt_tokens_total));
  metric("keel_generated_tokens_total", "counter", "Tokens generated.", count(s.generated_tokens_total));
  metric("keel_prefill_tokens_per_second", "gauge", "Prefill speed over the recent forward calls carrying a chunk.",
         s.prefill_tokens_per_second);
  metric("keel_decode_tokens_per_second", "gauge", "Decode speed (all requests) over the recent forward calls.",
         s.decode_tokens_per_second);
  metric("keel_kv_pages_used", "gauge", "KV cache pages held by sequences.", count(s.kv_pages_used));
  metric("keel_kv_pages_total", "gauge", "KV cache pages planned at start.", count(s.kv_pages_total));
  metric("keel_kv_pages_cached", "gauge", "KV cache pages kept by the prefix cache (evicted when the pool needs them).",
         count(s.kv_pages_cached));
  metric("keel_prefix_cache_enabled", "gauge",
         "1 when finished requests' KV pages are shared with later ones (0: off, or a hybrid model without snapshots).",
         s.prefix_cache_enabled ? 1 : 0);
  metric("keel_prefix_cache_hits_total", "counter", "Admissions that reused KV pages of the in-memory prefix cache.",
         count(s.prefix_cache_hits));
  metric("keel_prefix_cache_misses_total", "counter", "Admissions that reused no prefix (memory or disk).",
         count(s.prefix_cache_misses));
  metric("keel_prefix_cache_reused_tokens_total", "counter", "Prompt tokens taken from the in-memory prefix cache.",
         count(s.prefix_cache_reused_tokens));
  metric("keel_prefix_cache_evicted_pages_total", "counter", "Cached KV pages evicted (least recently used first).",
         count(s.prefix_cache_evicted_pages));
  metric("keel_state_snapshots_total", "gauge",
         "Recurrent-state snapshot slots planned for the prefix cache of a hybrid model (--state-snapshots).",
         count(s.state_snapshots_total));
  metric("keel_state_snapshots_cached", "gauge", "Snapshot slots holding the state at the end of a cached prefix.",
         count(s.state_snapshots_cached));
  metric("keel_state_snapshot_bytes", "gauge", "Bytes of one snapshot (one sequence's recurrent state).",
         count(s.state_snapshot_bytes));
  metric("keel_state_snapshots_taken_total", "counter", "Recurrent-state snapshots taken at page boundaries of prompts.",
         count(s.state_snapshots_taken));
  metric("keel_state_snapshots_evicted_total", "counter",
         "Snapshots replaced because every slot was taken (least recently used first).", count(s.state_snapshots_evicted));
  metric("keel_disk_cache_enabled", "gauge", "1 with --prompt-cache-dir.", s.disk_cache_enabled ? 1 : 0);
  metric("keel_disk_cache_hits_total", "counter", "Admissions that reloaded a prefix from --prompt-cache-dir.",
         count(s.disk_cache_hits));
  metric("keel_disk_cache_reused_tokens_total", "counter", "Prompt tokens reloaded from --prompt-cache-dir.",
         count(s.disk_cache_reused_tokens));
  metric("keel_disk_cache_writes_total", "counter", "Prefixes written to --prompt-cache-dir.", count(s.disk_cache_writes));
  metric("keel_disk_cache_errors_total", "counter", "Cache files that failed to write or load (skipped, logged).",
         count(s.disk_cache_errors));
  metric("keel_disk_cache_files", "gauge", "Files in --prompt-cache-dir.", count(s.disk_cache_files));
  metric("keel_disk_cache_bytes", "gauge", "Bytes in --prompt-cache-dir.", count(s.disk_cache_bytes));
  return out;
}

}  // namespace keel::server
