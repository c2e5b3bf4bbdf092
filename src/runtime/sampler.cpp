#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace keel::runtime {

namespace {

// The largest value of x[0, n) (n a multiple of 16), NaNs passed over: four vectors of running
// maxima, so the loop carries no dependence through a load (GCC vector extensions, SSE2 / NEON).
float block_max(const float* x, int32_t n) {
  using v4 = float __attribute__((vector_size(16)));
  const v4 lowest = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
  v4 m[4] = {lowest, lowest, lowest, lowest};
  for (int32_t i = 0; i < n; i += 16)
    for (int j = 0; j < 4; ++j) {
      v4 a;
      std::memcpy(&a, x + i + 4 * j, sizeof a);
      m[j] = a > m[j] ? a : m[j];
    }
  float best = -INFINITY;
  for (const v4& v : m)
    for (int k = 0; k < 4; ++k) best = v[k] > best ? v[k] : best;
  return best;
}

}  // namespace

// The first index of the largest value, as the one-pass loop `if (x[i] > x[best]) best = i` finds it
// (which returns 0 when x[0] is NaN), block by block: the first block whose maximum beats the
// earlier ones', then the first index in it that equals that maximum. The one-pass loop carries
// its dependence through the load of x[best]: 184 us for Qwen3.5's 248,320 logits on a Zen 5
// core, against 15.5 us this way, each greedy token of a decode. With the host block page-locked
// (CudaBackend::allocate_host_block), Qwen3.5-27B Q5_K_M's `keel run` at depth 173,000 on an
// H100 decoded at 83.3 tok/s against 75.6 (one run each, one call): 1.2 ms a token less, more
// than the 0.2 ms timed here; that host's split between the two was not measured.
int32_t argmax(const float* logits, int32_t n) {
  if (n <= 0 || std::isnan(logits[0])) return 0;
  constexpr int32_t kBlock = 1024;
  float best = -INFINITY;
  int32_t from = 0, i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    const float m = block_max(logits + i, kBlock);
    if (m > best) {
      best = m;
      from = i;
    }
  }
  for (int32_t k = i; k < n; ++k)
    if (logits[k] > best) return std::max_element(logits + k, logits + n) - logits;  // the tail holds it
  for (int32_t k = from; k < n; ++k)
    if (logits[k] == best) return k;
  return 0;  // not reached: x[0] is a number, so at most `best`
}

SamplerScratch::SamplerScratch(int32_t n_vocab)
    : adjusted(static_cast<size_t>(n_vocab)), candidates(static_cast<size_t>(n_vocab)), counts(static_cast<size_t>(n_vocab), 0) {}

Sampler::Sampler(const SamplerOptions& options) : o_(options), rng_(options.seed) {}

void Sampler::apply_penalties(const float* logits, std::span<const int32_t> history, size_t n_prompt,
                              SamplerScratch& scratch) const {
  const int32_t n_vocab = scratch.n_vocab();
  std::copy(logits, logits + n_vocab, scratch.adjusted.begin());
  auto valid = [n_vocab](int32_t id) { return id >= 0 && id < n_vocab; };
  std::vector<int32_t>& counts = scratch.counts;  // all zero on entry and on return

  if (o_.repeat_penalty != 1.0f && o_.repeat_last_n != 0) {
    const size_t window = o_.repeat_last_n < 0 ? history.size() : static_cast<size_t>(o_.repeat_last_n);
    const auto recent = history.last(std::min(window, history.size()));
    for (int32_t id : recent) {
      if (!valid(id) || counts[static_cast<size_t>(id)]++ > 0) continue;  // each distinct token once
      float& l = scratch.adjusted[static_cast<size_t>(id)];
      l = l > 0 ? l / o_.repeat_penalty : l * o_.repeat_penalty;
    }
    for (int32_t id : recent)
      if (valid(id)) counts[static_cast<size_t>(id)] = 0;
  }

  if ((o_.presence_penalty != 0.0f || o_.frequency_penalty != 0.0f) && n_prompt < history.size()) {
    const auto generated = history.subspan(n_prompt);
    for (int32_t id : generated)
      if (valid(id)) ++counts[static_cast<size_t>(id)];
    for (int32_t id : generated) {
      if (!valid(id)) continue;
      int32_t& c = counts[static_cast<size_t>(id)];
      if (c == 0) continue;  // done already
      scratch.adjusted[static_cast<size_t>(id)] -= o_.presence_penalty + static_cast<float>(c) * o_.frequency_penalty;
      c = 0;
    }
  }
}

bool Sampler::penalises(std::span<const int32_t> history, size_t n_prompt) const {
  return (o_.repeat_penalty != 1.0f && o_.repeat_last_n != 0 && !history.empty()) ||
         ((o_.presence_penalty != 0.0f || o_.frequency_penalty != 0.0f) && n_prompt < history.size());
}

int32_t Sampler::sample(const float* logits, std::span<const int32_t> history, size_t n_prompt, SamplerScratch& scratch) {
  const int32_t n_vocab = scratch.n_vocab();
  // Greedy without penalties reads the logits where they are (no copy of the row).
  if (o_.temperature <= 0.0f && !penalises(history, n_prompt)) return argmax(logits, n_vocab);
  apply_penalties(logits, history, n_prompt, scratch);
  if (o_.temperature <= 0.0f) return argmax(scratch.adjusted.data(), n_vocab);

  auto& candidates = scratch.candidates;
  size_t n = static_cast<size_t>(n_vocab);
  for (size_t i = 0; i < n; ++i) candidates[i] = {static_cast<int32_t>(i), scratch.adjusted[i], 0.0f};
  auto by_logit = [](const SamplerScratch::Candidate& a, const SamplerScratch::Candidate& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  };
  if (o_.top_k > 0 && static_cast<size_t>(o_.top_k) < n) {
    std::partial_sort(candidates.begin(), candidates.begin() + o_.top_k, candidates.begin() + static_cast<long>(n), by_logit);
    n = static_cast<size_t>(o_.top_k);
  } else {
    std::sort(candidates.begin(), candidates.begin() + static_cast<long>(n), by_logit);
  }
  auto softmax = [&](float temp) {
    const float mx = candidates[0].logit;
    double sum = 0;
    for (size_t i = 0; i < n; ++i) sum += candidates[i].p = std::exp((candidates[i].logit - mx) / temp);
    for (size_t i = 0; i < n; ++i) candidates[i].p = static_cast<float>(candidates[i].p / sum);
  };
  softmax(1.0f);
  if (o_.top_p < 1.0f) {
    double cum = 0;
    size_t keep = n;
    for (size_t i = 0; i < n; ++i) {
      cum += candidates[i].p;
      if (cum >= o_.top_p) {
        keep = i + 1;
        break;
      }
    }
    n = std::max<size_t>(1, keep);
  }
  if (o_.min_p > 0.0f) {
    const float threshold = candidates[0].p * o_.min_p;
    size_t keep = 1;
    while (keep < n && candidates[keep].p >= threshold) ++keep;
    n = keep;
  }
  softmax(o_.temperature);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  double r = uniform(rng_), cum = 0;
  for (size_t i = 0; i < n; ++i) {
    cum += candidates[i].p;
    if (r < cum) return candidates[i].id;
  }
  return candidates[n - 1].id;
}

float token_logprobs(const float* logits, int32_t n_vocab, int32_t chosen, std::span<TokenLogprob> top) {
  float mx = logits[0];
  for (int32_t i = 1; i < n_vocab; ++i) mx = std::max(mx, logits[i]);
  double sum = 0;
  for (int32_t i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  const double log_z = mx + std::log(sum);

  // The k best by insertion into a sorted array: k is small, and most logits fall below the last.
  const size_t k = std::min(top.size(), static_cast<size_t>(n_vocab));
  size_t filled = 0;
  for (int32_t i = 0; i < n_vocab && k > 0; ++i) {
    const float l = logits[i];
    if (filled == k && !(l > top[k - 1].logprob)) continue;  // ties keep the lower id already in
    size_t at = filled < k ? filled++ : k - 1;
    while (at > 0 && l > top[at - 1].logprob) {
      top[at] = top[at - 1];
      --at;
    }
    top[at] = TokenLogprob{i, l};  // the raw logit for now
  }
  for (size_t j = 0; j < k; ++j) top[j].logprob = static_cast<float>(top[j].logprob - log_z);
  for (size_t j = k; j < top.size(); ++j) top[j] = TokenLogprob{-1, -INFINITY};
  return static_cast<float>(logits[chosen] - log_z);
}

}  // namespace keel::runtime
