#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>

namespace keel::runtime {

int32_t argmax(const float* logits, int32_t n) {
  int32_t best = 0;
  for (int32_t i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  return best;
}

Sampler::Sampler(const SamplerOptions& options, int32_t n_vocab)
    : o_(options), n_vocab_(n_vocab), candidates_(static_cast<size_t>(n_vocab)),
      adjusted_(static_cast<size_t>(n_vocab)), rng_(options.seed) {}

int32_t Sampler::sample(const float* logits, const std::vector<int32_t>& history) {
  std::copy(logits, logits + n_vocab_, adjusted_.begin());
  if (o_.repeat_penalty != 1.0f && o_.repeat_last_n != 0) {
    const size_t window = o_.repeat_last_n < 0 ? history.size() : static_cast<size_t>(o_.repeat_last_n);
    const size_t from = history.size() > window ? history.size() - window : 0;
    // Penalise each distinct recent token once (as llama.cpp does).
    for (size_t i = from; i < history.size(); ++i) {
      const int32_t id = history[i];
      if (id < 0 || id >= n_vocab_) continue;
      if (std::find(history.begin() + static_cast<long>(from), history.begin() + static_cast<long>(i), id) !=
          history.begin() + static_cast<long>(i))
        continue;
      float& l = adjusted_[static_cast<size_t>(id)];
      l = l > 0 ? l / o_.repeat_penalty : l * o_.repeat_penalty;
    }
  }
  if (o_.temperature <= 0.0f) return argmax(adjusted_.data(), n_vocab_);

  size_t n = static_cast<size_t>(n_vocab_);
  for (size_t i = 0; i < n; ++i) candidates_[i] = {static_cast<int32_t>(i), adjusted_[i], 0.0f};
  auto by_logit = [](const Candidate& a, const Candidate& b) { return a.logit > b.logit || (a.logit == b.logit && a.id < b.id); };
  if (o_.top_k > 0 && static_cast<size_t>(o_.top_k) < n) {
    std::partial_sort(candidates_.begin(), candidates_.begin() + o_.top_k, candidates_.begin() + static_cast<long>(n), by_logit);
    n = static_cast<size_t>(o_.top_k);
  } else {
    std::sort(candidates_.begin(), candidates_.begin() + static_cast<long>(n), by_logit);
  }
  auto softmax = [&](float temp) {
    const float mx = candidates_[0].logit;
    double sum = 0;
    for (size_t i = 0; i < n; ++i) sum += candidates_[i].p = std::exp((candidates_[i].logit - mx) / temp);
    for (size_t i = 0; i < n; ++i) candidates_[i].p = static_cast<float>(candidates_[i].p / sum);
  };
  softmax(1.0f);
  if (o_.top_p < 1.0f) {
    double cum = 0;
    size_t keep = n;
    for (size_t i = 0; i < n; ++i) {
      cum += candidates_[i].p;
      if (cum >= o_.top_p) {
        keep = i + 1;
        break;
      }
    }
    n = std::max<size_t>(1, keep);
  }
  if (o_.min_p > 0.0f) {
    const float threshold = candidates_[0].p * o_.min_p;
    size_t keep = 1;
    while (keep < n && candidates_[keep].p >= threshold) ++keep;
    n = keep;
  }
  softmax(o_.temperature);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  double r = uniform(rng_), cum = 0;
  for (size_t i = 0; i < n; ++i) {
    cum += candidates_[i].p;
    if (r < cum) return candidates_[i].id;
  }
  return candidates_[n - 1].id;
}

}  // namespace keel::runtime
