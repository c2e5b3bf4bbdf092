#include "server/single_engine.h"

#include <chrono>

#include "keel/error.h"
#include "runtime/sampler.h"
#include "template/chat.h"

namespace keel::server {

SingleSequenceEngine::SingleSequenceEngine(std::shared_ptr<const model::Model> model, tokenizer::Tokenizer tokenizer,
                                           const runtime::SessionOptions& options, std::optional<std::string> chat_template,
                                           nlohmann::ordered_json special_tokens, std::string model_id)
    : model_(std::move(model)),
      tokenizer_(std::move(tokenizer)),
      special_tokens_(std::move(special_tokens)),
      session_(model_, options) {
  if (chat_template) template_.emplace(*chat_template);
  info_.id = std::move(model_id);
  info_.n_ctx = session_.n_ctx();
  info_.has_chat_template = template_.has_value();
}

std::vector<int32_t> SingleSequenceEngine::tokenize(const std::string& text) const {
  return tokenizer_.encode(text, tokenizer_.add_bos_by_default(), /*parse_special=*/false);
}

std::vector<int32_t> SingleSequenceEngine::chat_prompt(const nlohmann::ordered_json& messages,
                                                       const nlohmann::ordered_json& tools) const {
  if (!template_)
    throw Error("the model has no chat template (tokenizer.chat_template); start the server with --chat-template FILE");
  nlohmann::ordered_json chat_case = {{"messages", messages}, {"add_generation_prompt", true}};
  if (!tools.is_null()) chat_case["tools"] = tools;
  tmpl::RenderOptions options;
  options.now = tmpl::today_local();
  const std::string text = template_->render(tmpl::chat_context(chat_case, special_tokens_, nullptr), options);
  return tokenizer_.encode(text, /*add_bos=*/false, /*parse_special=*/true);
}

GenerationResult SingleSequenceEngine::generate(const GenerationRequest& request, const GenerationCallbacks& callbacks) {
  std::lock_guard<std::mutex> lock(mutex_);
  GenerationResult result;
  result.prompt_tokens = static_cast<int64_t>(request.prompt.size());
  session_.reset();

  runtime::SamplerOptions so;
  so.temperature = request.sampling.temperature;
  so.top_k = request.sampling.top_k;
  so.top_p = request.sampling.top_p;
  so.min_p = request.sampling.min_p;
  so.repeat_penalty = request.sampling.repetition_penalty;
  so.seed = request.sampling.seed ? *request.sampling.seed
                                  : static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  runtime::Sampler sampler(so, static_cast<int32_t>(model_->hparams().n_vocab));

  const float* logits = nullptr;
  try {
    logits = session_.prefill(request.prompt, [&](const runtime::ChunkProgress& p) {
      return !callbacks.on_progress || callbacks.on_progress(PrefillProgress{p.done, p.total, p.seconds});
    });
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::cancelled) throw;
    session_.reset();
    result.finish = FinishReason::cancelled;
    return result;
  }

  std::vector<int32_t> history = request.prompt;
  tokenizer::StreamDecoder decoder(tokenizer_);
  StopScanner stops(request.stop);
  auto emit = [&](const std::string& text) { return text.empty() || !callbacks.on_text || callbacks.on_text(text); };
  const int64_t room = session_.n_ctx() - session_.n_past();
  const int64_t limit = request.max_tokens < 0 ? room : std::min(request.max_tokens, room);
  result.finish = FinishReason::length;
  for (int64_t i = 0; i < limit; ++i) {
    const int32_t id = sampler.sample(logits, history);
    if (tokenizer_.is_end_of_generation(id)) {
      result.finish = FinishReason::stop;
      break;
    }
    history.push_back(id);
    ++result.completion_tokens;
    if (!emit(stops.push(decoder.push(id)))) {
      result.finish = FinishReason::cancelled;
      break;
    }
    if (stops.stopped()) {
      result.finish = FinishReason::stop;
      break;
    }
    if (i + 1 < limit) logits = session_.decode(id);
  }
  if (result.finish != FinishReason::cancelled && !stops.stopped()) {
    std::string tail = stops.push(decoder.flush());
    if (!stops.stopped()) tail += stops.flush();
    if (stops.stopped()) result.finish = FinishReason::stop;
    if (!emit(tail)) result.finish = FinishReason::cancelled;
  }
  session_.reset();
  return result;
}

std::string StopScanner::push(const std::string& text) {
  if (stopped_) return "";
  pending_ += text;
  size_t first = std::string::npos;
  for (const auto& s : stops_) first = std::min(first, pending_.find(s));
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, first);
    pending_.clear();
    return out;
  }
  // Keep the longest tail of pending_ that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const auto& s : stops_)
    for (size_t n = std::min(s.size() - 1, pending_.size()); n > keep; --n)
      if (pending_.compare(pending_.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
  std::string out = pending_.substr(0, pending_.size() - keep);
  pending_.erase(0, pending_.size() - keep);
  return out;
}

std::string StopScanner::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace keel::server
