// An Engine with continuous batching over one multi-sequence runtime::Session (n_seqs =
// --parallel). One scheduler thread owns the session; each of its iterations is ONE
// Session::step carrying the next token of every decoding request plus at most one prefill chunk
// (of the oldest request still prefilling), so a long prefill delays the others by one chunk per
// step at most. generate() enqueues the request and waits on its own thread for the events the
// scheduler posts (progress, text, the end), invoking the callbacks there: a slow client only
// slows itself. Admission reserves KV pages for prompt + max_tokens (the whole context when
// max_tokens is unset) so a running request never runs out of pages; requests that must wait sit
// in a bounded FIFO queue, and a full queue throws Overloaded (503).
#pragma once
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "model/model.h"
#include "runtime/session.h"
#include "server/engine.h"
#include "template/template.h"
#include "tokenizer/tokenizer.h"

namespace keel::server {

class BatchingEngine : public Engine {
 public:
  // options.n_seqs sequences share the session's page pool; queue_capacity requests may wait.
  // chat_template: the template source (none: chat requests are refused with a clear error);
  // special_tokens: bos_token/eos_token as the template should see them.
  BatchingEngine(std::shared_ptr<const model::Model> model, tokenizer::Tokenizer tokenizer,
                 const runtime::SessionOptions& options, std::optional<std::string> chat_template,
                 nlohmann::ordered_json special_tokens, std::string model_id, int queue_capacity = 64);
  ~BatchingEngine() override;  // stops the scheduler; waiting requests end with an error

  const ModelInfo& info() const override { return info_; }
  std::vector<int32_t> tokenize(const std::string& text) const override;
  std::vector<int32_t> chat_prompt(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools) const override;
  GenerationResult generate(const GenerationRequest& request, const GenerationCallbacks& callbacks) override;
  std::shared_ptr<QueuePlace> take_place() override;
  EngineStats stats() const override;

  struct Job;    // one request, shared by its HTTP thread and the scheduler
  struct Place;  // a counted place in the queue

 private:
  void scheduler_loop();
  void admit_waiting();                  // under mutex_: queue head → a sequence, while pages allow
  void finish(Job& job, FinishReason reason);  // under mutex_: sequence removed, pages unreserved, end posted
  void after_logits(Job& job, const float* logits);  // sample, emit text, maybe finish
  void post_text(Job& job, std::string text);
  int32_t pages_for(int64_t tokens) const;
  void release_place(Place& place);      // under mutex_

  std::shared_ptr<const model::Model> model_;
  tokenizer::Tokenizer tokenizer_;
  std::optional<tmpl::Template> template_;
  nlohmann::ordered_json special_tokens_;
  ModelInfo info_;
  runtime::Session session_;             // the scheduler thread's alone once it runs
  const int64_t chunk_;
  const int32_t page_tokens_;
  const int queue_capacity_;

  mutable std::mutex mutex_;             // guards everything below and every Job's shared fields
  std::condition_variable work_;         // the scheduler waits here for requests
  bool stopping_ = false;
  int64_t places_taken_ = 0;             // queue places held (requests waiting, or about to)
  std::deque<std::shared_ptr<Job>> waiting_;
  std::vector<std::shared_ptr<Job>> running_;  // admission order: the oldest prefill goes first
  int64_t pages_reserved_ = 0;           // by running requests, for their whole prompt + generation
  EngineStats stats_;                    // counters; running/queued/pages filled in by stats()
  struct StepSample {
    double seconds;
    int64_t prefill_tokens, decode_tokens;
  };
  std::deque<StepSample> recent_steps_;    // the last kRecentSteps forward calls
  std::deque<StepSample> recent_prefills_; // the last kRecentSteps of them that carried a prefill chunk
  int64_t pages_used_ = 0;               // snapshot after each step
  std::thread scheduler_;                // last: started when everything above exists
};

}  // namespace keel::server
