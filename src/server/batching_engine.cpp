#include "server/batching_engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>

#include "keel/error.h"
#include "runtime/sampler.h"
#include "server/api.h"
#include "server/stop_scanner.h"
#include "template/chat.h"

namespace keel::server {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kRecentSteps = 64;        // the window of the tok/s figures
constexpr size_t kMaxPendingEvents = 32;   // a request whose client lags this far pauses (keeps its pages)

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
    GenerationResult result{};
  };
  GenerationRequest request;       // its place moved to `place`
  std::shared_ptr<QueuePlace> place;
  int64_t limit = 0;               // tokens it may generate (max_tokens within the context)
  int32_t pages = 0;               // reserved for prompt + limit

  // The scheduler's own.
  int32_t seq = -1;
  int64_t prefilled = 0;
  std::optional<int32_t> next_token;  // sampled, fed at the next step
  std::optional<runtime::Sampler> sampler;
  std::vector<int32_t> history;       // prompt + generated, for the penalties
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
                               nlohmann::ordered_json special_tokens, std::string model_id, int queue_capacity)
    : model_(std::move(model)),
      tokenizer_(std::move(tokenizer)),
      special_tokens_(std::move(special_tokens)),
      session_(model_, options),
      chunk_(session_.layout().shape.chunk),
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
  scheduler_ = std::thread([this] { scheduler_loop(); });
}

BatchingEngine::~BatchingEngine() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  scheduler_.join();
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

int32_t BatchingEngine::pages_for(int64_t tokens) const {
  return static_cast<int32_t>((tokens + page_tokens_ - 1) / page_tokens_);
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
  s.kv_pages_used = pages_used_;
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
  if (prompt_tokens > info_.n_ctx)
    throw Error("the prompt has " + std::to_string(prompt_tokens) + " tokens but the context holds " +
                std::to_string(info_.n_ctx));
  const int64_t room = info_.n_ctx - prompt_tokens;
  job->limit = request.max_tokens < 0 ? room : std::min(request.max_tokens, room);
  job->pages = pages_for(prompt_tokens + job->limit);

  runtime::SamplerOptions so;
  so.temperature = request.sampling.temperature;
  so.top_k = request.sampling.top_k;
  so.top_p = request.sampling.top_p;
  so.min_p = request.sampling.min_p;
  so.repeat_penalty = request.sampling.repetition_penalty;
  so.seed = request.sampling.seed ? *request.sampling.seed
                                  : static_cast<uint64_t>(Clock::now().time_since_epoch().count());
  job->sampler.emplace(so, static_cast<int32_t>(model_->hparams().n_vocab));
  job->history = request.prompt;
  job->decoder.emplace(tokenizer_);
  job->stops.emplace(request.stop);

  std::unique_lock<std::mutex> lock(mutex_);
  if (stopping_) throw Error("the server is shutting down");
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
          ok = ev.text.empty() || !callbacks.on_text || callbacks.on_text(ev.text);
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

void BatchingEngine::admit_waiting() {
  while (!waiting_.empty() && static_cast<int64_t>(running_.size()) < stats_.sequences) {
    Job& job = *waiting_.front();
    if (pages_reserved_ + job.pages > session_.pages_total()) break;  // FIFO: the head waits for pages
    job.seq = session_.add_sequence();
    pages_reserved_ += job.pages;
    if (auto* place = dynamic_cast<Place*>(job.place.get()); place && place->held.exchange(false)) --places_taken_;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
}

void BatchingEngine::post_text(Job& job, std::string text) {
  Job::Event ev{Job::Event::on_text};
  ev.text = std::move(text);
  ev.result.completion_tokens = job.completion_tokens;
  job.events.push_back(std::move(ev));
  job.ready.notify_one();
}

void BatchingEngine::finish(Job& job, FinishReason reason) {
  if (job.seq >= 0) {
    session_.remove_sequence(job.seq);
    pages_reserved_ -= job.pages;
    pages_used_ = session_.pages_total() - session_.pages_free();
    job.seq = -1;
  }
  job.finished = true;
  Job::Event ev{Job::Event::on_end};
  ev.result = GenerationResult{reason, static_cast<int64_t>(job.request.prompt.size()), job.completion_tokens};
  job.events.push_back(std::move(ev));
  job.ready.notify_one();
}

void BatchingEngine::after_logits(Job& job, const float* logits) {
  // The text held back at the end (an incomplete UTF-8 sequence, a possible stop string's start).
  auto finish_with_tail = [&](FinishReason reason) {
    std::string tail = job.stops->push(job.decoder->flush());
    if (!job.stops->stopped()) tail += job.stops->flush();
    if (job.stops->stopped()) reason = FinishReason::stop;
    if (!tail.empty()) post_text(job, std::move(tail));
    finish(job, reason);
  };
  if (job.completion_tokens >= job.limit) return finish_with_tail(FinishReason::length);
  const int32_t id = job.sampler->sample(logits, job.history);
  if (tokenizer_.is_end_of_generation(id)) return finish_with_tail(FinishReason::stop);
  job.history.push_back(id);
  ++job.completion_tokens;
  ++stats_.generated_tokens_total;
  std::string text = job.stops->push(job.decoder->push(id));
  if (!text.empty()) post_text(job, std::move(text));
  if (job.stops->stopped()) return finish(job, FinishReason::stop);
  if (job.completion_tokens >= job.limit) return finish_with_tail(FinishReason::length);
  job.next_token = id;
}

void BatchingEngine::scheduler_loop() {
  std::vector<runtime::SeqInput> inputs;
  std::vector<Job*> owners;  // [inputs]
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    for (auto& job : running_)
      if (job->cancelled && !job->finished) finish(*job, FinishReason::cancelled);
    std::erase_if(running_, [](const std::shared_ptr<Job>& j) { return j->finished; });
    if (stopping_) break;
    admit_waiting();

    // This step: the next token of every decoding request, one chunk of the oldest prefill.
    // A request whose client has not taken its events yet sits this step out.
    inputs.clear();
    owners.clear();
    Job* prefill = nullptr;
    for (auto& job : running_) {
      if (job->events.size() >= kMaxPendingEvents) continue;
      if (job->next_token) {
        inputs.push_back(runtime::SeqInput{job->seq, std::span<const int32_t>(&*job->next_token, 1), true});
        owners.push_back(job.get());
      } else if (!prefill) {
        prefill = job.get();
      }
    }
    int64_t prefill_n = 0;
    if (prefill) {
      const auto total = static_cast<int64_t>(prefill->request.prompt.size());
      if (prefill->prefilled == 0) prefill->prefill_start = Clock::now();
      prefill_n = std::min(chunk_, total - prefill->prefilled);
      const bool last = prefill->prefilled + prefill_n == total;
      inputs.push_back(runtime::SeqInput{
          prefill->seq,
          std::span<const int32_t>(prefill->request.prompt).subspan(static_cast<size_t>(prefill->prefilled),
                                                                    static_cast<size_t>(prefill_n)),
          last});
      owners.push_back(prefill);
    }
    if (inputs.empty()) {
      work_.wait(lock);
      continue;
    }

    lock.unlock();
    const auto t0 = Clock::now();
    std::span<const float* const> rows;
    std::string failure;
    try {
      rows = session_.step(inputs);
    } catch (const std::exception& e) {
      failure = e.what();
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    lock.lock();

    if (!failure.empty()) {  // should not happen (admission reserved the pages): fail this step's requests
      for (Job* job : owners) {
        job->events.push_back(Job::Event(Job::Event::on_error, failure));
        job->ready.notify_one();
        finish(*job, FinishReason::stop);
      }
      continue;
    }
    pages_used_ = session_.pages_total() - session_.pages_free();
    recent_steps_.push_back(StepSample{seconds, prefill_n, static_cast<int64_t>(inputs.size()) - (prefill ? 1 : 0)});
    if (recent_steps_.size() > kRecentSteps) recent_steps_.pop_front();
    if (prefill_n > 0) recent_prefills_.push_back(recent_steps_.back());
    if (recent_prefills_.size() > kRecentSteps) recent_prefills_.pop_front();
    stats_.prompt_tokens_total += prefill_n;

    size_t row = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
      Job& job = *owners[i];
      const float* logits = inputs[i].logits ? rows[row++] : nullptr;
      if (&job == prefill) {
        job.prefilled += prefill_n;
        const auto total = static_cast<int64_t>(job.request.prompt.size());
        Job::Event ev{Job::Event::on_progress};
        ev.progress = PrefillProgress{job.prefilled, total,
                                      std::chrono::duration<double>(Clock::now() - job.prefill_start).count()};
        job.events.push_back(ev);
        job.ready.notify_one();
        if (job.prefilled == total) after_logits(job, logits);
      } else {
        job.next_token.reset();
        after_logits(job, logits);
      }
    }
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
