// The sampler (runtime/sampler.h) against hand-computed values: the repeat penalty over its
// window, OpenAI's presence and frequency penalties over the generated tokens only, greedy after
// penalties, truncation (top-k, top-p, min-p), seeded draws, and log-probabilities; argmax
// against the one-pass loop it replaced.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "runtime/sampler.h"

using namespace keel::runtime;

namespace {

SamplerOptions greedy() {
  SamplerOptions o;
  o.temperature = 0;
  o.top_k = 0;
  o.top_p = 1;
  o.min_p = 0;
  return o;
}

std::vector<float> penalised(const SamplerOptions& o, const std::vector<float>& logits, const std::vector<int32_t>& history,
                             size_t n_prompt) {
  SamplerScratch scratch(static_cast<int32_t>(logits.size()));
  Sampler(o).apply_penalties(logits.data(), history, n_prompt, scratch);
  for (int32_t c : scratch.counts) EXPECT_EQ(c, 0);  // left clean for the next call
  return scratch.adjusted;
}

}  // namespace

TEST(Sampler, RepeatPenaltyDividesPositiveAndMultipliesNegativeLogitsOnce) {
  SamplerOptions o = greedy();
  o.repeat_penalty = 2.0f;
  const std::vector<float> logits = {2.0f, -1.0f, 0.5f, 1.0f, 3.0f};
  // Prompt {0, 1}, generated {3, 3, 2}: tokens 0..3 are penalised once each, 4 is not.
  EXPECT_EQ(penalised(o, logits, {0, 1, 3, 3, 2}, 2), (std::vector<float>{1.0f, -2.0f, 0.25f, 0.5f, 3.0f}));
  // Only the last 2 tokens (3, 2) with repeat_last_n = 2.
  o.repeat_last_n = 2;
  EXPECT_EQ(penalised(o, logits, {0, 1, 3, 3, 2}, 2), (std::vector<float>{2.0f, -1.0f, 0.25f, 0.5f, 3.0f}));
  o.repeat_last_n = 0;  // off
  EXPECT_EQ(penalised(o, logits, {0, 1, 3, 3, 2}, 2), logits);
}

TEST(Sampler, PresenceAndFrequencyPenaltiesCountGeneratedTokensOnly) {
  SamplerOptions o = greedy();
  o.presence_penalty = 0.25f;
  o.frequency_penalty = 0.5f;
  const std::vector<float> logits = {2.0f, -1.0f, 0.5f, 1.0f, 3.0f};
  // Prompt {0, 1, 4} is not counted; generated {3, 3, 2}: 3 loses 0.25 + 2 * 0.5, 2 loses 0.25 + 0.5.
  EXPECT_EQ(penalised(o, logits, {0, 1, 4, 3, 3, 2}, 3), (std::vector<float>{2.0f, -1.0f, -0.25f, -0.25f, 3.0f}));
  // Negative values encourage repetition (OpenAI allows -2..2).
  o.presence_penalty = -1.0f;
  o.frequency_penalty = 0.0f;
  EXPECT_EQ(penalised(o, logits, {4, 1}, 1), (std::vector<float>{2.0f, 0.0f, 0.5f, 1.0f, 3.0f}));
  // Both penalties together with the repeat penalty: repeat first, then presence/frequency.
  o = greedy();
  o.repeat_penalty = 2.0f;
  o.presence_penalty = 0.25f;
  o.frequency_penalty = 0.5f;
  EXPECT_EQ(penalised(o, logits, {0, 1, 3, 3, 2}, 2), (std::vector<float>{1.0f, -2.0f, -0.5f, -0.75f, 3.0f}));
}

TEST(Sampler, GreedyPicksTheArgmaxAfterPenalties) {
  SamplerOptions o = greedy();
  SamplerScratch scratch(2);
  const std::vector<float> logits = {1.0f, 0.9f};
  EXPECT_EQ(Sampler(o).sample(logits.data(), std::vector<int32_t>{1}, 1, scratch), 0);
  o.presence_penalty = 0.2f;  // token 0 was generated: 0.8 < 0.9
  EXPECT_EQ(Sampler(o).sample(logits.data(), std::vector<int32_t>{1, 0}, 1, scratch), 1);
  EXPECT_EQ(Sampler(o).sample(logits.data(), std::vector<int32_t>{0}, 1, scratch), 0);  // 0 only in the prompt
  const std::vector<float> tie = {0.5f, 0.5f};
  EXPECT_EQ(Sampler(greedy()).sample(tie.data(), std::vector<int32_t>{}, 0, scratch), 0);  // lowest id on ties
}

// The one-pass argmax: the first index of the largest value (0 when x[0] is NaN).
int32_t argmax_one_pass(const std::vector<float>& x) {
  int32_t best = 0;
  for (int32_t i = 1; i < static_cast<int32_t>(x.size()); ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

TEST(Sampler, ArgmaxIsTheOnePassLoopsOnTiesNansAndInfinities) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::mt19937 rng(7);
  for (int32_t n : {1, 2, 15, 16, 17, 1023, 1024, 1025, 2047, 2048, 3001, 151936, 248320}) {
    for (int kind = 0; kind < 8; ++kind) {
      std::vector<float> x(static_cast<size_t>(n));
      // Few distinct values (ties everywhere) or a spread; then NaNs and infinities sprinkled in.
      std::uniform_int_distribution<int> small(-3, 3);
      std::normal_distribution<float> spread(0.0f, 4.0f);
      for (float& v : x) v = kind % 2 ? static_cast<float>(small(rng)) : spread(rng);
      std::uniform_int_distribution<int32_t> at(0, n - 1);
      if (kind == 2) for (int k = 0; k < 1 + n / 100; ++k) x[at(rng)] = nan;
      if (kind == 3) x[at(rng)] = inf, x[at(rng)] = inf;
      if (kind == 4) for (float& v : x) v = -inf;
      if (kind == 5) x[0] = nan;
      if (kind == 6) x.back() = 1e30f;  // the largest in the tail past the last whole block
      if (kind == 7) for (float& v : x) v = v > 0 ? nan : -inf;
      EXPECT_EQ(argmax(x.data(), n), argmax_one_pass(x)) << "n " << n << ", kind " << kind;
    }
  }
}

TEST(Sampler, GreedyWithoutPenaltiesReadsTheLogitsInPlace) {
  // With no penalty in effect the row is not copied: scratch.adjusted keeps what it held.
  SamplerScratch scratch(3);
  scratch.adjusted = {7.0f, 7.0f, 7.0f};
  const std::vector<float> logits = {0.1f, 0.3f, 0.2f};
  SamplerOptions o = greedy();
  o.repeat_penalty = 2.0f;
  EXPECT_EQ(Sampler(o).sample(logits.data(), std::vector<int32_t>{}, 0, scratch), 1);  // empty history: no penalty
  EXPECT_EQ(scratch.adjusted, (std::vector<float>{7.0f, 7.0f, 7.0f}));
  EXPECT_EQ(Sampler(o).sample(logits.data(), std::vector<int32_t>{1}, 1, scratch), 2);  // 0.3 / 2 < 0.2
  EXPECT_EQ(scratch.adjusted[1], 0.3f / 2.0f);
}

TEST(Sampler, TruncationLeavesOnlyTheExpectedTokens) {
  // p = softmax(log 1, log 2, log 3, log 4) = 0.1, 0.2, 0.3, 0.4.
  const std::vector<float> logits = {0.0f, std::log(2.0f), std::log(3.0f), std::log(4.0f)};
  SamplerScratch scratch(4);
  auto draws = [&](SamplerOptions o) {
    std::vector<int> seen(4, 0);
    Sampler s(o);
    for (int i = 0; i < 400; ++i) ++seen[static_cast<size_t>(s.sample(logits.data(), std::vector<int32_t>{}, 0, scratch))];
    return seen;
  };
  SamplerOptions o;
  o.temperature = 1.0f;
  o.top_k = 0, o.top_p = 1.0f, o.min_p = 0.0f;
  o.top_k = 1;
  EXPECT_EQ(draws(o), (std::vector<int>{0, 0, 0, 400}));
  o.top_k = 0;
  o.top_p = 0.7f;  // 0.4 + 0.3 reaches 0.7: tokens 3 and 2
  auto seen = draws(o);
  EXPECT_EQ(seen[0] + seen[1], 0);
  EXPECT_GT(seen[2], 0);
  EXPECT_GT(seen[3], 0);
  o.top_p = 1.0f;
  o.min_p = 0.6f;  // keep p >= 0.6 * 0.4 = 0.24: tokens 3 and 2
  seen = draws(o);
  EXPECT_EQ(seen[0] + seen[1], 0);
  EXPECT_GT(seen[2], 0);
  o.min_p = 0.0f;  // everything, in about the right proportions (400 draws: 40/80/120/160)
  seen = draws(o);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(seen[i], 40.0 * double(i + 1), 45.0) << i;
}

TEST(Sampler, TheSameSeedDrawsTheSameTokens) {
  std::vector<float> logits(50, 0.0f);  // flat: every draw is the seed's alone
  SamplerScratch scratch(50);
  SamplerOptions o;
  o.temperature = 1.0f;
  o.top_k = 0, o.top_p = 1.0f, o.min_p = 0.0f;
  auto run = [&](uint64_t seed) {
    o.seed = seed;
    Sampler s(o);
    std::vector<int32_t> out;
    for (int i = 0; i < 20; ++i) out.push_back(s.sample(logits.data(), std::vector<int32_t>{}, 0, scratch));
    return out;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
}

TEST(Sampler, LogprobsAreTheModelsLogSoftmax) {
  // p = 0.1, 0.2, 0.3, 0.4 (logits shifted by 5: softmax does not care).
  const std::vector<float> logits = {5.0f, 5.0f + std::log(2.0f), 5.0f + std::log(3.0f), 5.0f + std::log(4.0f)};
  std::vector<TokenLogprob> top(2);
  EXPECT_NEAR(token_logprobs(logits.data(), 4, 2, top), std::log(0.3), 1e-6);
  EXPECT_EQ(top[0].id, 3);
  EXPECT_NEAR(top[0].logprob, std::log(0.4), 1e-6);
  EXPECT_EQ(top[1].id, 2);
  EXPECT_NEAR(top[1].logprob, std::log(0.3), 1e-6);

  // Ties: the lower id first; more alternatives than the vocabulary: the rest marked empty.
  const std::vector<float> tie = {1.0f, 3.0f, 3.0f};
  std::vector<TokenLogprob> all(4);
  const double log_z = 3.0 + std::log(2.0 + std::exp(-2.0));
  EXPECT_NEAR(token_logprobs(tie.data(), 3, 0, all), 1.0 - log_z, 1e-6);
  EXPECT_EQ(all[0].id, 1);
  EXPECT_EQ(all[1].id, 2);
  EXPECT_EQ(all[2].id, 0);
  EXPECT_EQ(all[3].id, -1);
  EXPECT_NEAR(all[0].logprob, 3.0 - log_z, 1e-6);

  // No alternatives asked: only the chosen token's; a huge vocabulary-like spread stays finite.
  std::vector<float> wide(1000);
  for (size_t i = 0; i < wide.size(); ++i) wide[i] = static_cast<float>(i) * 0.1f;
  EXPECT_NEAR(token_logprobs(wide.data(), 1000, 999, {}), -std::log(1.0 / (1.0 - std::exp(-0.1))), 1e-4);
}
