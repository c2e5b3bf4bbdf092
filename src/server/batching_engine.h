// An Engine with continuous batching over one multi-sequence runtime::Session (n_seqs =
// --parallel). One scheduler thread owns the session; each of its iterations is ONE
// Session::step carrying the next token of every decoding request plus prefill pieces of the
// requests still in their prompt, round-robin within the call's token budget (step_plan.h), so a
// long prefill delays the others by one chunk per step at most. generate() enqueues the request
// and waits on its own thread for the events the scheduler posts (progress, text, the end),
// invoking the callbacks there: a slow client only slows itself.
//
// KV pages, as vLLM manages its blocks: a request is admitted when the pages its known tokens
// need (the prompt, plus one for its first new token) fit beside what the running requests have
// committed; it then grows a page at a time as it generates, up to the context (finish_reason
// "length"). When the pool cannot hold every running request's next token, the youngest request
// is preempted: its pages go back and it waits at the head of the queue, then recomputes its
// prompt in the same chunks and replays its generated tokens one by one, as decodes, so its
// logits are bit for bit those of an uninterrupted run. The oldest request always fits (the pool
// holds a whole context), so every request ends. Requests that must wait sit in a bounded queue;
// a full queue throws Overloaded (503).
//
// Prefix reuse: a request's full prompt pages enter the prefix cache (prefix_cache.h) as its
// prefill completes them, and the rest of its full pages when it ends (or is preempted, or
// cancelled); a request admitted later attaches the longest cached chain
// its tokens begin with, copy-free, and prefills only the rest. Cached pages that no running
// request holds count as free for admission and are evicted, least recently used first, when a
// step or a reload needs pages. With --prompt-cache-dir, finished requests are also written to
// disk (disk_prompt_cache.h) and a request that starts with more of a file than of the memory
// cache reloads it.
//
// Hybrid models (recurrent state beside the KV pages): a cached prefix is usable only where a
// snapshot of the state ends it (state_snapshots.h). A prefilling request's state is snapshotted
// into the session's planned slots whenever a prefill piece ends on a page boundary (chunk ends,
// and two cuts of its prompt: the last page boundary kFollowUpTokens before its end, where a
// follow-up question to the same context diverges, and its last full page, where a continued
// conversation does); its pages enter the cache
// only up to its latest snapshot. A request then shares the longest cached chain that ends at a
// snapshot, restores it and prefills the rest (batching_snapshots.cpp).
#pragma once
#include <array>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "model/model.h"
#include "runtime/sampler.h"
#include "runtime/session.h"
#include "server/disk_prompt_cache.h"
#include "server/engine.h"
#include "server/prefix_cache.h"
#include "server/state_snapshots.h"
#include "server/step_plan.h"
#include "template/template.h"
#include "tokenizer/tokenizer.h"

namespace keel::server {

struct PrefixCacheOptions {
  bool memory = true;                          // share finished requests' KV pages (--no-prefix-cache: off)
  std::string disk_dir;                        // --prompt-cache-dir ("": none)
  uint64_t disk_max_bytes = uint64_t{4} << 30;  // --prompt-cache-max-mb
};

class BatchingEngine : public Engine {
 public:
  static constexpr int kMaxTopLogprobs = 20;  // OpenAI's limit on top_logprobs

  // options.n_seqs sequences share the session's page pool; queue_capacity requests may wait.
  // chat_template: the template source (none: chat requests are refused with a clear error);
  // special_tokens: bos_token/eos_token as the template should see them.
  BatchingEngine(std::shared_ptr<const model::Model> model, tokenizer::Tokenizer tokenizer,
                 const runtime::SessionOptions& options, std::optional<std::string> chat_template,
                 nlohmann::ordered_json special_tokens, std::string model_id, int queue_capacity = 64,
                 const PrefixCacheOptions& cache = {});
  ~BatchingEngine() override;  // stop()s
  // Stops the scheduler: requests running or waiting end with an error ("shutting down"), later
  // ones are refused. Idempotent; for a graceful exit on a signal.
  void stop();

  const ModelInfo& info() const override { return info_; }
  std::vector<int32_t> tokenize(const std::string& text) const override;
  std::vector<int32_t> chat_prompt(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools) const override;
  GenerationResult generate(const GenerationRequest& request, const GenerationCallbacks& callbacks) override;
  std::shared_ptr<QueuePlace> take_place() override;
  EngineStats stats() const override;
  // Asks the scheduler to evict every cached page no request holds (for tests and operators);
  // done at its next iteration (stats().kv_pages_cached shows it).
  void clear_prefix_cache();

  struct Job;    // one request, shared by its HTTP thread and the scheduler
  struct Place;  // a counted place in the queue

 private:
  void scheduler_loop();
  // All under mutex_:
  void drop_cancelled();                 // requests whose client went away end, their pages back
  void admit_waiting();                  // queue head → a sequence, while its pages fit
  int64_t pages_committed() const;       // by the running requests for their known tokens
  void preempt_while_overcommitted();    // youngest first, back to the queue
  // A newly admitted request's sequence starts with `file`'s prefix or the cached pages in
  // hit_pages_, whichever is longer (file.tokens 0: none).
  void reuse_prefix(Job& job, const DiskPromptCache::Match& file);
  bool make_free_pages(int64_t n);       // evicts cached pages until n are free; false if it cannot
  // Fills hit_pages_ with the cached chain `job` may reuse (hybrids: up to its last snapshot).
  void find_cached_prefix(const Job& job);
  // ---- hybrid models (batching_snapshots.cpp) ----
  // Snapshots sequence `seq`'s state, which holds exactly `tokens` (whole pages): their pages
  // enter the cache, the last one carrying the snapshot. False when none could be tied to it.
  bool snapshot_prefix(int32_t seq, std::span<const int32_t> tokens);
  void trim_to_snapshot(std::vector<int32_t>& chain);  // drops the pages after its last snapshot
  // Where a prefill at `fed` of an n_prompt-token prompt stops for a snapshot (RunningSeq::cut).
  int64_t snapshot_cut(int64_t n_prompt, int64_t fed) const;
  int32_t snapshot_of(int32_t page);     // its slot (used now), for a chain trim_to_snapshot left
  void forget_page(int32_t page);        // a page the cache evicted: its snapshot and reference go
  void prune_unsnapshotted();            // evicts cached leaves a hybrid cannot resume from
  bool page_in_use(int32_t page) const { return session_.page_refs(page) > 1; }
  void cache_pages(Job& job);            // offers its full pages to the prefix cache; counts job.shared_pages
  void spill(Job& job, const float* last_logits);  // writes it to the disk cache
  void note_pages();                     // the page counts stats() reports
  // Sequence removed (its pages offered to the caches; last_logits, of its last fed token, lets
  // the disk cache save it), end posted.
  void finish(Job& job, FinishReason reason, const float* last_logits = nullptr);
  void after_logits(Job& job, const float* logits);  // sample, emit text, maybe finish
  TokenLogprobs logprobs_of(const float* logits, int32_t id, int n_top);
  void post_text(Job& job, std::string text);
  void run_step(std::unique_lock<std::mutex>& lock);  // one forward call, mutex_ unlocked around it

  std::shared_ptr<const model::Model> model_;
  tokenizer::Tokenizer tokenizer_;
  std::optional<tmpl::Template> template_;
  nlohmann::ordered_json special_tokens_;
  ModelInfo info_;
  runtime::Session session_;             // the scheduler thread's alone once it runs
  const int64_t chunk_;
  const int64_t max_step_tokens_;        // the plan's tokens per forward call
  const int32_t page_tokens_;
  const int queue_capacity_;

  mutable std::mutex mutex_;             // guards everything below and every Job's shared fields
  std::condition_variable work_;         // the scheduler waits here for requests
  bool stopping_ = false;
  int64_t places_taken_ = 0;             // queue places held (requests waiting, or about to)
  std::deque<std::shared_ptr<Job>> waiting_;   // arrival order (preempted requests come back in it)
  std::vector<std::shared_ptr<Job>> running_;  // arrival order: the oldest is never preempted
  uint64_t next_arrival_ = 0;
  uint64_t prefill_turn_ = 0;            // where the prefill round-robin starts (step_plan.h)
  std::vector<RunningSeq> step_view_;    // [running_] the scheduler's scratch for plan_step
  std::vector<StepPiece> pieces_;        // this step's pieces
  std::vector<runtime::SeqInput> inputs_;  // [pieces_]
  std::vector<runtime::SamplerScratch> sampler_scratch_;  // [n_seqs] used by the request holding the sequence
  std::array<runtime::TokenLogprob, kMaxTopLogprobs> top_logprobs_{};
  EngineStats stats_;                    // counters; running/queued/pages filled in by stats()
  struct StepSample {
    double seconds;
    int64_t prefill_tokens, decode_tokens;
  };
  std::deque<StepSample> recent_steps_;    // the last kRecentSteps forward calls
  std::deque<StepSample> recent_prefills_; // the last kRecentSteps of them that carried a prefill chunk
  int64_t pages_used_ = 0;               // snapshot after each step
  std::optional<PrefixCache> prefix_cache_;      // none: off (option, or a hybrid model)
  std::optional<DiskPromptCache> disk_cache_;    // none: no --prompt-cache-dir
  std::optional<StateSnapshots> snapshots_;      // a hybrid model's, with the prefix cache
  std::vector<int32_t> hit_pages_;       // admission's scratch: the cached pages a request can reuse
  std::vector<int32_t> chain_;           // snapshot_prefix's scratch
  bool clear_cache_requested_ = false;
  std::thread scheduler_;                // last: started when everything above exists
};

}  // namespace keel::server
