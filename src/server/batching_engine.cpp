#include "server/batching_engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>

#include "keel/error.h"
#include "plan/device.h"
#include "runtime/sampler.h"
#include "server/api.h"
#include "server/step_plan.h"
#include "server/stop_scanner.h"
#include "template/chat.h"

namespace keel::server {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kRecentSteps = 64;        // the window of the tok/s figures
constexpr size_t kMaxPendingEvents = 32;   // a request whose client lags this far pauses (keeps its pages)

void log_line(const std::string& text) { std::fprintf(stderr, "keel serve: prompt cache: %s\n", text.c_str()); }

}  // namespace

struct BatchingEngine::Place : QueuePlace {
  explicit Place(BatchingEngine& e) : engine(e) {}
  ~Place() override {
    if (held.exchange(false)) {
      std::lock_guard<std::mutex> lock(engine.mutex_);
      --engine.places_taken_;
    }
  }
  BatchingEngine& engine;
  std::atomic<bool> held{true};  // counts in places_taken_ until admitted or dropped
};

struct BatchingEngine::Job {
  struct Event {
    enum Kind { on_progress, on_text, on_end, on_error };
    explicit Event(Kind k, std::string t = {}) : kind(k), text(std::move(t)) {}
    Kind kind;
    PrefillProgress progress{};
    std::string text;              // text, or the error's message
    std::vector<TokenLogprobs> logprobs;  // on_text: the tokens behind the text (request.logprobs)
    GenerationResult result{};
  };
  GenerationRequest request;       // its place moved to `place`
  std::shared_ptr<QueuePlace> place;
  uint64_t arrival = 0;            // age, kept across preemptions
  int64_t n_prompt = 0;
  int64_t limit = 0;               // tokens it may generate (max_tokens within the context)

  // The scheduler's own.
  int32_t seq = -1;                // while running
  std::vector<int32_t> tokens;     // prompt, then the sampled tokens (the penalties' history too)
  int64_t fed = 0;                 // tokens[0..fed) are in the sequence's KV cache
  int64_t shared_pages = 0;        // pages of its row the prefix cache holds too (counted once, there)
  int64_t snapshot_end = 0;        // hybrids: tokens[0..snapshot_end) end at a state snapshot, so
                                   // its pages are worth caching up to there only
  int64_t prompt_reported = 0;     // prompt tokens already reported as progress (not again on a replay)
  std::optional<runtime::Sampler> sampler;
  std::vector<TokenLogprobs> logprobs;  // of tokens whose text is not posted yet
  std::optional<tokenizer::StreamDecoder> decoder;
  std::optional<StopScanner> stops;
  Clock::time_point prefill_start;
  int64_t completion_tokens = 0;

  // Shared with the request's thread, under mutex_.
  std::deque<Event> events;
  std::condition_variable ready;
  bool cancelled = false;          // the client went away: the scheduler drops it
  bool finished = false;           // its end was posted; leaves running_
};

BatchingEngine::BatchingEngine(std::shared_ptr<const model::Model> model, tokenizer::Tokenizer tokenizer,
                               const runtime::SessionOptions& options, std::optional<std::string> chat_template,
                               nlohmann::ordered_json special_tokens, std::string model_id, int queue_capacity,
                               const PrefixCacheOptions& cache)
    : model_(std::move(model)),
      tokenizer_(std::move(tokenizer)),
      special_tokens_(std::move(special_tokens)),
      session_(model_, options),
      chunk_(session_.layout().shape.chunk),
      max_step_tokens_(session_.layout().shape.max_tokens),
      page_tokens_(static_cast<int32_t>(session_.layout().shape.kv.page_tokens)),
      queue_capacity_(std::max(queue_capacity, 0)) {
  if (chat_template) template_.emplace(*chat_template);
  info_.id = std::move(model_id);
  info_.n_ctx = session_.n_ctx();
  info_.has_chat_template = template_.has_value();
  session_.remove_sequence(0);  // every request gets its own from add_sequence
  stats_.queue_capacity = queue_capacity_;
  stats_.kv_pages_total = session_.pages_total();
  stats_.sequences = session_.layout().shape.n_seqs;
  for (int i = 0; i < session_.layout().shape.n_seqs; ++i)
    sampler_scratch_.emplace_back(static_cast<int32_t>(model_->hparams().n_vocab));
  if (cache.memory && session_.has_recurrent_state() && session_.snapshot_slots() == 0)
    log_line("no KV page sharing in memory for this hybrid model: no recurrent-state snapshots are planned "
             "(--state-snapshots 0, or auto found no memory for one)" +
             std::string(cache.disk_dir.empty() ? "" : "; whole prefixes reload from --prompt-cache-dir"));
  else if (cache.memory)
    prefix_cache_.emplace(session_.pages_total(), page_tokens_);
  if (prefix_cache_ && session_.has_recurrent_state()) {
    snapshots_.emplace(session_.snapshot_slots(), session_.pages_total());
    const uint64_t bytes = session_.snapshot_bytes();
    log_line(std::to_string(session_.snapshot_slots()) + " recurrent-state snapshots of " + plan::format_bytes(bytes) +
             " each, " + plan::format_bytes(bytes * static_cast<uint64_t>(session_.snapshot_slots())) +
             " planned beside the state slots (--state-snapshots)");
  }
  if (!cache.disk_dir.empty()) disk_cache_.emplace(cache.disk_dir, cache.disk_max_bytes);
  hit_pages_.reserve(static_cast<size_t>(session_.pages_total()));
  chain_.reserve(static_cast<size_t>(session_.pages_total()));
  stats_.prefix_cache_enabled = prefix_cache_.has_value();
  stats_.disk_cache_enabled = disk_cache_.has_value();
  stats_.state_snapshots_total = snapshots_ ? snapshots_->capacity() : 0;
  stats_.state_snapshot_bytes = snapshots_ ? static_cast<int64_t>(session_.snapshot_bytes()) : 0;
  note_pages();
  scheduler_ = std::thread([this] { scheduler_loop(); });
}

BatchingEngine::~BatchingEngine() { stop(); }

void BatchingEngine::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  if (scheduler_.joinable()) scheduler_.join();
}

std::vector<int32_t> BatchingEngine::tokenize(const std::string& text) const {
  return tokenizer_.encode(text, tokenizer_.add_bos_by_default(), /*parse_special=*/false);
}

std::vector<int32_t> BatchingEngine::chat_prompt(const nlohmann::ordered_json& messages,
                                                 const nlohmann::ordered_json& tools) const {
  if (!template_)
    throw Error("the model has no chat template (tokenizer.chat_template); start the server with --chat-template FILE");
  const std::string text = chat_prompt_text(*template_, special_tokens_, messages, tools, tmpl::today_local());
  return tokenizer_.encode(text, /*add_bos=*/false, /*parse_special=*/true);
}

std::shared_ptr<QueuePlace> BatchingEngine::take_place() {
  std::lock_guard<std::mutex> lock(mutex_);
  // Free sequences take requests at once; beyond them queue_capacity_ may wait.
  const int64_t free_seqs = stats_.sequences - static_cast<int64_t>(running_.size());
  if (places_taken_ >= queue_capacity_ + free_seqs) {
    ++stats_.requests_rejected;
    throw Overloaded("the server is busy: " + std::to_string(places_taken_) + " requests are waiting (--queue " +
                         std::to_string(queue_capacity_) + "); retry shortly",
                     1);
  }
  ++places_taken_;
  return std::make_shared<Place>(*this);
}

EngineStats BatchingEngine::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  EngineStats s = stats_;
  s.requests_running = static_cast<int64_t>(running_.size());
  s.requests_queued = static_cast<int64_t>(waiting_.size());
  s.kv_pages_used = pages_used_;  // (kv_pages_cached is kept in stats_ by note_pages)
  double prefill_s = 0, all_s = 0;
  int64_t prefill_n = 0, decode_n = 0;
  for (const StepSample& st : recent_steps_) all_s += st.seconds, decode_n += st.decode_tokens;
  for (const StepSample& st : recent_prefills_) prefill_s += st.seconds, prefill_n += st.prefill_tokens;
  s.prefill_tokens_per_second = prefill_s > 0 ? static_cast<double>(prefill_n) / prefill_s : 0;
  s.decode_tokens_per_second = all_s > 0 ? static_cast<double>(decode_n) / all_s : 0;
  return s;
}

GenerationResult BatchingEngine::generate(const GenerationRequest& request, const GenerationCallbacks& callbacks) {
  auto job = std::make_shared<Job>();
  job->place = request.place ? request.place : take_place();
  job->request = request;
  job->request.place.reset();
  const auto prompt_tokens = static_cast<int64_t>(request.prompt.size());
  if (prompt_tokens == 0) throw Error("cannot generate from an empty prompt");
  if (request.top_logprobs < 0 || request.top_logprobs > kMaxTopLogprobs)
    throw Error("top_logprobs must be 0.." + std::to_string(kMaxTopLogprobs));
  if (prompt_tokens > info_.n_ctx)
    throw Error("the prompt has " + std::to_string(prompt_tokens) + " tokens but the context holds " +
                std::to_string(info_.n_ctx));
  // Generation is bounded by the context: without max_tokens, until it is full ("length").
  const int64_t room = info_.n_ctx - prompt_tokens;
  job->limit = request.max_tokens < 0 ? room : std::min(request.max_tokens, room);
  job->n_prompt = prompt_tokens;

  runtime::SamplerOptions so;
  so.temperature = request.sampling.temperature;
  so.top_k = request.sampling.top_k;
  so.top_p = request.sampling.top_p;
  so.min_p = request.sampling.min_p;
  so.repeat_penalty = request.sampling.repetition_penalty;
  so.repeat_last_n = request.sampling.repeat_last_n;
  so.presence_penalty = request.sampling.presence_penalty;
  so.frequency_penalty = request.sampling.frequency_penalty;
  so.seed = request.sampling.seed ? *request.sampling.seed
                                  : static_cast<uint64_t>(Clock::now().time_since_epoch().count());
  job->sampler.emplace(so);
  job->tokens.reserve(static_cast<size_t>(prompt_tokens + job->limit));
  job->tokens = request.prompt;
  job->decoder.emplace(tokenizer_);
  job->stops.emplace(request.stop);

  std::unique_lock<std::mutex> lock(mutex_);
  if (stopping_) throw Error("the server is shutting down");
  job->arrival = next_arrival_++;
  waiting_.push_back(job);
  ++stats_.requests_total;
  work_.notify_one();

  int64_t completion_tokens = 0;
  for (;;) {
    job->ready.wait(lock, [&] { return !job->events.empty(); });
    std::deque<Job::Event> events;
    events.swap(job->events);
    work_.notify_one();  // a paused request may go on
    lock.unlock();
    for (const Job::Event& ev : events) {
      bool ok = true;
      switch (ev.kind) {
        case Job::Event::on_progress: ok = !callbacks.on_progress || callbacks.on_progress(ev.progress); break;
        case Job::Event::on_text:
          completion_tokens = ev.result.completion_tokens;
          if (!ev.logprobs.empty() && callbacks.on_logprobs) ok = callbacks.on_logprobs(ev.logprobs);
          if (ok && (!ev.text.empty() || !ev.logprobs.empty()) && callbacks.on_text) ok = callbacks.on_text(ev.text);
          break;
        case Job::Event::on_end: return ev.result;
        case Job::Event::on_error: throw Error(ev.text);
      }
      if (!ok) {
        lock.lock();
        job->cancelled = true;
        work_.notify_one();
        return GenerationResult{FinishReason::cancelled, prompt_tokens, completion_tokens};
      }
    }
    lock.lock();
  }
}

void BatchingEngine::clear_prefix_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  clear_cache_requested_ = true;
  work_.notify_one();
}

int64_t BatchingEngine::pages_committed() const {
  // Each request's own pages for its known tokens, and once each the cached pages they share
  // (a page listed by more than one holder is a cached page some request holds).
  int64_t pages = session_.pages_shared();
  for (const auto& job : running_)
    if (!job->finished) pages += pages_for(static_cast<int64_t>(job->tokens.size()), page_tokens_) - job->shared_pages;
  return pages;
}

void BatchingEngine::note_pages() {
  const int64_t cached = prefix_cache_ ? prefix_cache_->size() : 0;
  const int64_t cached_unheld = cached - session_.pages_shared();
  pages_used_ = session_.pages_total() - session_.pages_free() - cached_unheld;
  stats_.kv_pages_cached = cached;
  stats_.state_snapshots_cached = snapshots_ ? snapshots_->size() : 0;
  if (disk_cache_) {
    stats_.disk_cache_files = static_cast<int64_t>(disk_cache_->files());
    stats_.disk_cache_bytes = static_cast<int64_t>(disk_cache_->bytes());
  }
}

bool BatchingEngine::make_free_pages(int64_t n) {
  while (session_.pages_free() < n && prefix_cache_) {
    const int32_t page = prefix_cache_->evict([this](int32_t p) { return page_in_use(p); });
    if (page < 0) break;
    forget_page(page);
    prune_unsnapshotted();  // the pages up to the previous snapshot are worth nothing now
  }
  return session_.pages_free() >= n;
}

void BatchingEngine::find_cached_prefix(const Job& job) {
  // At most all but the last known token: its logits are needed, and its KV lands in a page of its own.
  hit_pages_.clear();
  if (!prefix_cache_) return;
  prefix_cache_->lookup(job.tokens, (static_cast<int64_t>(job.tokens.size()) - 1) / page_tokens_, hit_pages_);
  if (snapshots_) trim_to_snapshot(hit_pages_);
}

void BatchingEngine::cache_pages(Job& job) {
  if (!prefix_cache_ || job.seq < 0) return;
  const std::span<const int32_t> row = session_.pages_of(job.seq);
  const int64_t end = snapshots_ ? job.snapshot_end : job.fed;
  prefix_cache_->insert(std::span<const int32_t>(job.tokens).first(static_cast<size_t>(end)), row,
                        [this](int32_t page) { session_.retain_page(page); });
  job.shared_pages = std::count_if(row.begin(), row.end(), [this](int32_t page) { return prefix_cache_->holds(page); });
}

void BatchingEngine::spill(Job& job, const float* last_logits) {
  // Whole prefixes only, at the end of a request: the one moment its full state (a hybrid's
  // recurrent state, the last logits) exists. Shorter than a page, or already on disk: skipped.
  const auto tokens = std::span<const int32_t>(job.tokens).first(static_cast<size_t>(job.fed));
  if (!disk_cache_ || !last_logits || job.fed < page_tokens_ || disk_cache_->covers(tokens)) return;
  try {
    disk_cache_->save(session_, job.seq, tokens, last_logits);
    ++stats_.disk_cache_writes;
  } catch (const Error& e) {
    ++stats_.disk_cache_errors;
    log_line(std::string("not saved: ") + e.what());
  }
}

void BatchingEngine::reuse_prefix(Job& job, const DiskPromptCache::Match& file) {
  const auto known = static_cast<int64_t>(job.tokens.size());
  int64_t from_disk = 0;
  if (file.tokens > 0) {
    make_free_pages(pages_for(file.tokens, page_tokens_));
    try {
      // At most known - 1 tokens: the last known token is computed again for its logits.
      const auto r = session_.load_state(job.seq, file.path,
                                         std::span<const int32_t>(job.tokens).first(static_cast<size_t>(known - 1)));
      from_disk = r.n_reused;
      if (from_disk == 0) {  // another model's, or page size: not asked again
        log_line(r.note);
        disk_cache_->forget(file.path, /*delete_file=*/false);
      }
    } catch (const Error& e) {  // corrupt or truncated: the sequence is empty, the file goes
      ++stats_.disk_cache_errors;
      log_line(std::string("skipped: ") + e.what());
      disk_cache_->forget(file.path, /*delete_file=*/true);
    }
    if (from_disk == 0) find_cached_prefix(job);  // back to memory (its pages may have been evicted for the load)
  }
  if (from_disk > 0) {
    job.fed = from_disk;
    ++stats_.disk_cache_hits;
    stats_.disk_cache_reused_tokens += from_disk;
  } else if (!hit_pages_.empty()) {
    session_.share_pages(job.seq, hit_pages_, snapshots_ ? snapshot_of(hit_pages_.back()) : -1);
    job.shared_pages = static_cast<int64_t>(hit_pages_.size());
    job.fed = job.shared_pages * page_tokens_;
    job.snapshot_end = job.fed;
    ++stats_.prefix_cache_hits;
    stats_.prefix_cache_reused_tokens += job.fed;
  } else if (prefix_cache_ || disk_cache_) {
    ++stats_.prefix_cache_misses;
  }
  // Reused prompt tokens are not prefilled: no progress for them, and not counted as prefilled.
  job.prompt_reported = std::max(job.prompt_reported, std::min(job.fed, job.n_prompt));
}

void BatchingEngine::drop_cancelled() {
  for (auto& job : running_)
    if (job->cancelled && !job->finished) finish(*job, FinishReason::cancelled);
  std::erase_if(running_, [](const std::shared_ptr<Job>& j) { return j->finished; });
  // A preempted request waits in the queue after it has streamed text: its client may leave there.
  for (auto& job : waiting_)
    if (job->cancelled && !job->finished) finish(*job, FinishReason::cancelled);
  std::erase_if(waiting_, [](const std::shared_ptr<Job>& j) { return j->finished; });
}

void BatchingEngine::admit_waiting() {
  int64_t committed = pages_committed();
  while (!waiting_.empty() && static_cast<int64_t>(running_.size()) < stats_.sequences) {
    Job& job = *waiting_.front();
    const int64_t known = static_cast<int64_t>(job.tokens.size());
    // The prefix it can reuse, leaving at least its last known token to compute: cached full
    // pages, copy-free, or a file when that restores at least a page more (a file is read whole
    // into pages of its own).
    find_cached_prefix(job);
    DiskPromptCache::Match file;
    if (disk_cache_) {
      file = disk_cache_->best(job.tokens, known - 1);
      if (file.tokens < static_cast<int64_t>(hit_pages_.size() + 1) * page_tokens_) file = {};
    }
    // What its known tokens need now, plus room for the first token it samples; cached pages it
    // shares count only if no running request holds them already.
    int64_t need = pages_for(std::min(known + 1, info_.n_ctx), page_tokens_);
    if (file.tokens == 0)
      for (int32_t page : hit_pages_) need -= session_.page_refs(page) > 1 ? 1 : 0;
    if (committed + need > session_.pages_total()) break;  // FIFO: the head waits for pages
    job.seq = session_.add_sequence();
    job.fed = 0;
    job.shared_pages = 0;
    job.snapshot_end = 0;
    if (job.prompt_reported == 0) job.prefill_start = Clock::now();
    reuse_prefix(job, file);
    if (auto* place = dynamic_cast<Place*>(job.place.get()); place && place->held.exchange(false)) --places_taken_;
    // running_ stays in arrival order: a preempted request comes back among younger ones.
    auto at = std::upper_bound(running_.begin(), running_.end(), job.arrival,
                               [](uint64_t arrival, const std::shared_ptr<Job>& j) { return arrival < j->arrival; });
    running_.insert(at, std::move(waiting_.front()));
    waiting_.pop_front();
    committed = pages_committed();
  }
  note_pages();
}

void BatchingEngine::preempt_while_overcommitted() {
  int64_t committed = pages_committed();
  while (committed > session_.pages_total()) {
    // The youngest request that holds a sequence; the oldest alone always fits (a whole context).
    auto victim = std::find_if(running_.rbegin(), running_.rend(), [](const std::shared_ptr<Job>& j) { return !j->finished; });
    if (victim == running_.rend() || std::next(victim) == running_.rend()) break;
    Job& job = **victim;
    cache_pages(job);  // its own return (or another request) may find them still there
    session_.remove_sequence(job.seq);
    prune_unsnapshotted();
    job.seq = -1;
    job.fed = 0;
    job.shared_pages = 0;
    job.snapshot_end = 0;
    ++stats_.requests_preempted;
    auto at = std::upper_bound(waiting_.begin(), waiting_.end(), job.arrival,
                               [](uint64_t arrival, const std::shared_ptr<Job>& j) { return arrival < j->arrival; });
    waiting_.insert(at, std::move(*victim));
    running_.erase(std::next(victim).base());
    committed = pages_committed();
  }
  note_pages();
}

void BatchingEngine::post_text(Job& job, std::string text) {
  if (text.empty() && job.logprobs.empty()) return;
  Job::Event ev{Job::Event::on_text};
  ev.text = std::move(text);
  ev.logprobs.swap(job.logprobs);
  ev.result.completion_tokens = job.completion_tokens;
  job.events.push_back(std::move(ev));
  job.ready.notify_one();
}

void BatchingEngine::finish(Job& job, FinishReason reason, const float* last_logits) {
  if (job.seq >= 0) {
    spill(job, last_logits);
    cache_pages(job);
    session_.remove_sequence(job.seq);
    prune_unsnapshotted();
    note_pages();
    job.seq = -1;
  }
  if (auto* place = dynamic_cast<Place*>(job.place.get()); place && place->held.exchange(false)) --places_taken_;
  job.finished = true;
  Job::Event ev{Job::Event::on_end};
  ev.result = GenerationResult{reason, job.n_prompt, job.completion_tokens};
  job.events.push_back(std::move(ev));
  job.ready.notify_one();
}

TokenLogprobs BatchingEngine::logprobs_of(const float* logits, int32_t id, int n_top) {
  const auto n_vocab = static_cast<int32_t>(model_->hparams().n_vocab);
  const std::span<runtime::TokenLogprob> top(top_logprobs_.data(), static_cast<size_t>(std::min(n_top, n_vocab)));
  TokenLogprobs out;
  out.token = TokenChoice{id, tokenizer_.token_to_piece(id), runtime::token_logprobs(logits, n_vocab, id, top)};
  for (const runtime::TokenLogprob& t : top) out.top.push_back(TokenChoice{t.id, tokenizer_.token_to_piece(t.id), t.logprob});
  return out;
}

void BatchingEngine::after_logits(Job& job, const float* logits) {
  // The text held back at the end (an incomplete UTF-8 sequence, a possible stop string's start).
  auto finish_with_tail = [&](FinishReason reason) {
    std::string tail = job.stops->push(job.decoder->flush());
    if (!job.stops->stopped()) tail += job.stops->flush();
    if (job.stops->stopped()) reason = FinishReason::stop;
    post_text(job, std::move(tail));
    finish(job, reason, logits);
  };
  if (job.completion_tokens >= job.limit) return finish_with_tail(FinishReason::length);
  const int32_t id = job.sampler->sample(logits, job.tokens, static_cast<size_t>(job.n_prompt),
                                         sampler_scratch_[static_cast<size_t>(job.seq)]);
  if (tokenizer_.is_end_of_generation(id)) return finish_with_tail(FinishReason::stop);
  if (job.request.logprobs) job.logprobs.push_back(logprobs_of(logits, id, job.request.top_logprobs));
  job.tokens.push_back(id);
  ++job.completion_tokens;
  ++stats_.generated_tokens_total;
  std::string text = job.stops->push(job.decoder->push(id));
  if (!text.empty() || job.stops->stopped()) post_text(job, std::move(text));
  if (job.stops->stopped()) return finish(job, FinishReason::stop, logits);
  if (job.completion_tokens >= job.limit) return finish_with_tail(FinishReason::length);
}

void BatchingEngine::run_step(std::unique_lock<std::mutex>& lock) {
  // This step's pieces; a request whose client has not taken its events yet sits it out.
  step_view_.clear();
  for (const auto& job : running_)
    step_view_.push_back(RunningSeq{job->arrival, job->n_prompt, static_cast<int64_t>(job->tokens.size()), job->fed,
                                    job->events.size() >= kMaxPendingEvents, snapshot_cut(job->n_prompt, job->fed)});
  plan_step(step_view_, StepBudget{chunk_, max_step_tokens_}, prefill_turn_, pieces_);
  if (pieces_.empty()) {
    work_.wait(lock);
    return;
  }
  inputs_.clear();
  int64_t prefill_n = 0, decode_n = 0, pages_needed = 0;
  for (const StepPiece& p : pieces_) {
    Job& job = *running_[p.index];
    inputs_.push_back(runtime::SeqInput{
        job.seq, std::span<const int32_t>(job.tokens).subspan(static_cast<size_t>(p.first), static_cast<size_t>(p.n)),
        p.logits});
    (p.prefill ? prefill_n : decode_n) += p.n;
    pages_needed += pages_for(p.first + p.n, page_tokens_) - pages_for(p.first, page_tokens_);
  }
  make_free_pages(pages_needed);  // cached pages nobody holds make way (the admission counted on them)

  lock.unlock();
  const auto t0 = Clock::now();
  std::span<const float* const> rows;
  std::string failure;
  try {
    rows = session_.step(inputs_);
  } catch (const std::exception& e) {
    failure = e.what();
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  lock.lock();

  if (!failure.empty()) {  // should not happen (the pages were committed): fail this step's requests
    for (const StepPiece& p : pieces_) {
      Job& job = *running_[p.index];
      job.events.push_back(Job::Event(Job::Event::on_error, failure));
      job.ready.notify_one();
      finish(job, FinishReason::stop);
    }
    return;
  }
  note_pages();
  recent_steps_.push_back(StepSample{seconds, prefill_n, decode_n});
  if (recent_steps_.size() > kRecentSteps) recent_steps_.pop_front();
  if (prefill_n > 0) recent_prefills_.push_back(recent_steps_.back());
  if (recent_prefills_.size() > kRecentSteps) recent_prefills_.pop_front();

  size_t row = 0;
  for (const StepPiece& p : pieces_) {
    Job& job = *running_[p.index];  // running_ does not change until the step is done
    job.fed += p.n;
    if (p.prefill && snapshots_ && job.fed % page_tokens_ == 0 &&
        snapshot_prefix(job.seq, std::span<const int32_t>(job.tokens).first(static_cast<size_t>(job.fed))))
      job.snapshot_end = job.fed;
    if (p.prefill) cache_pages(job);  // its prompt's full pages serve requests admitted from now on
    if (p.prefill && job.fed > job.prompt_reported) {  // first time through this part of the prompt
      stats_.prompt_tokens_total += job.fed - job.prompt_reported;
      job.prompt_reported = job.fed;
      Job::Event ev{Job::Event::on_progress};
      ev.progress = PrefillProgress{job.fed, job.n_prompt,
                                    std::chrono::duration<double>(Clock::now() - job.prefill_start).count()};
      job.events.push_back(ev);
      job.ready.notify_one();
    }
    if (p.logits) after_logits(job, rows[row++]);
  }
  preempt_while_overcommitted();
}

void BatchingEngine::scheduler_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    drop_cancelled();
    if (stopping_) break;
    if (clear_cache_requested_) {
      clear_cache_requested_ = false;
      while (prefix_cache_ && make_free_pages(session_.pages_free() + 1)) {
      }
      note_pages();
    }
    admit_waiting();
    run_step(lock);
  }
  // Shutting down: whoever still waits gets an error.
  auto shut_out = [](Job& job) {
    if (job.finished) return;
    job.events.push_back(Job::Event(Job::Event::on_error, "the server is shutting down"));
    job.ready.notify_one();
  };
  for (auto& job : running_) shut_out(*job);
  for (auto& job : waiting_) shut_out(*job);
}

}  // namespace keel::server
