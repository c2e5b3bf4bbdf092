// The seam between the HTTP layer and whatever generates tokens. The server only needs this
// interface: the BatchingEngine (continuous batching over one multi-sequence runtime::Session)
// and the single-sequence engine (one request at a time) implement it.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace keel::server {

struct SamplingParams {
  float temperature = 1.0f;        // OpenAI's default; <= 0: greedy
  float top_p = 1.0f;
  int top_k = 0;                   // 0: off
  float min_p = 0.0f;
  float repetition_penalty = 1.0f; // llama.cpp's repeat_penalty over the last repeat_last_n tokens
  int repeat_last_n = 64;
  float presence_penalty = 0.0f;   // OpenAI's, over the generated tokens (runtime/sampler.h)
  float frequency_penalty = 0.0f;
  std::optional<uint64_t> seed;    // none: a fresh seed per request
};

// A place in an engine's bounded request queue, taken before any response is sent (so a full
// queue can still answer 503); generate() consumes it, and dropping it unused gives it back.
class QueuePlace {
 public:
  virtual ~QueuePlace() = default;
};

// The engine's queue is full: HTTP 503 with Retry-After.
class Overloaded : public std::runtime_error {
 public:
  Overloaded(const std::string& message, int retry_after_seconds)
      : std::runtime_error(message), retry_after_seconds(retry_after_seconds) {}
  int retry_after_seconds;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;     // token ids, chat template already applied
  int64_t max_tokens = -1;         // -1: until end of generation or the context is full
  SamplingParams sampling;
  std::vector<std::string> stop;   // generation ends before the first occurrence of any of these
  bool logprobs = false;           // report each generated token's log-probability
  int top_logprobs = 0;            // and this many most likely alternatives (0..20)
  std::shared_ptr<QueuePlace> place;  // from Engine::take_place, or null (generate takes one)
};

struct PrefillProgress {
  int64_t done = 0, total = 0;     // prompt tokens
  double seconds = 0;              // since the prefill started
};

enum class FinishReason { stop, length, cancelled };
const char* finish_reason_name(FinishReason r);  // "stop", "length", "cancelled"

struct GenerationResult {
  FinishReason finish = FinishReason::stop;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

// A token as logprobs report it: its id, its bytes and its log-probability under the model.
struct TokenChoice {
  int32_t id = 0;
  std::string piece;
  float logprob = 0;
};
struct TokenLogprobs {
  TokenChoice token;                // the generated token
  std::vector<TokenChoice> top;     // the most likely tokens at its position, most likely first
};

// Called on the generating thread. Returning false cancels the request at the next chunk
// boundary (prefill) or token (decode): a client that went away.
struct GenerationCallbacks {
  std::function<bool(const PrefillProgress&)> on_progress;
  std::function<bool(const std::string& text)> on_text;  // generated text, in order, stop strings removed
  // With request.logprobs: the tokens behind the text of the next on_text call (which may then
  // carry "" when their text was held back or cut by a stop string), every generated token once.
  std::function<bool(std::span<const TokenLogprobs>)> on_logprobs;
};

struct ModelInfo {
  std::string id;               // what /v1/models lists and responses name
  int64_t n_ctx = 0;            // tokens one request may use (prompt + generation)
  bool has_chat_template = false;
};

// Counters for GET /metrics.
struct EngineStats {
  int64_t requests_total = 0;           // accepted into the queue
  int64_t requests_running = 0;         // holding a sequence
  int64_t requests_queued = 0;          // waiting for a sequence or pages
  int64_t queue_capacity = 0;
  int64_t requests_rejected = 0;        // answered 503 (queue full)
  int64_t requests_preempted = 0;       // sent back to the queue when the KV pool ran short
  int64_t prompt_tokens_total = 0;      // prefilled
  int64_t generated_tokens_total = 0;
  double prefill_tokens_per_second = 0; // over the recent forward calls that carried a prefill chunk
  double decode_tokens_per_second = 0;  // over the recent forward calls
  int64_t kv_pages_used = 0, kv_pages_total = 0;  // used: held by running requests
  int64_t sequences = 0;                // --parallel
  // Prefix reuse (server/prefix_cache.h, server/disk_prompt_cache.h). An admission (or a
  // preempted request's return) is a hit of the cache it reuses tokens from, else a miss.
  bool prefix_cache_enabled = false;    // in memory; off with --no-prefix-cache (and a hybrid without snapshots)
  int64_t kv_pages_cached = 0;          // pages the prefix cache holds (those no request holds are free to evict)
  int64_t prefix_cache_hits = 0, prefix_cache_misses = 0;
  int64_t prefix_cache_reused_tokens = 0;   // prompt tokens not prefilled thanks to cached pages
  int64_t prefix_cache_evicted_pages = 0;
  // Recurrent-state snapshots (hybrid models, server/state_snapshots.h): the points a cached
  // prefix can resume from.
  int64_t state_snapshots_total = 0;    // slots planned (--state-snapshots)
  int64_t state_snapshots_cached = 0;   // slots holding a snapshot
  int64_t state_snapshot_bytes = 0;     // one snapshot (one sequence's recurrent state)
  int64_t state_snapshots_taken = 0, state_snapshots_evicted = 0;  // evicted: its slot was needed
  bool disk_cache_enabled = false;      // --prompt-cache-dir
  int64_t disk_cache_hits = 0, disk_cache_reused_tokens = 0;
  int64_t disk_cache_writes = 0, disk_cache_errors = 0;  // errors: files that would not write or load (skipped)
  int64_t disk_cache_files = 0, disk_cache_bytes = 0;
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual const ModelInfo& info() const = 0;
  // Plain text to token ids (BOS as the model wants it), for /v1/completions.
  virtual std::vector<int32_t> tokenize(const std::string& text) const = 0;
  // Messages (and tools, may be null) through the chat template with the generation prompt,
  // tokenized with special tokens recognised. Throws keel::Error when the template refuses.
  virtual std::vector<int32_t> chat_prompt(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools) const = 0;
  // Runs one request to the end on the calling thread; may wait for earlier requests first.
  virtual GenerationResult generate(const GenerationRequest& request, const GenerationCallbacks& callbacks) = 0;
  // A queue place for a request about to be generated; throws Overloaded when the queue is full.
  virtual std::shared_ptr<QueuePlace> take_place() { return nullptr; }
  virtual EngineStats stats() const { return {}; }
};

}  // namespace keel::server
