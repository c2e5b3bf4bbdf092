// Token sampling: penalties -> greedy, or penalties -> top-k -> top-p -> min-p -> temperature ->
// seeded draw (llama.cpp's chain and defaults), and the log-probabilities the OpenAI API reports.
//
// Penalties, applied to the logits before anything else (greedy included):
//   - repeat_penalty (llama.cpp's --repeat-penalty, HF's repetition_penalty): each distinct token
//     among the last repeat_last_n of the history (prompt and generated) has a positive logit
//     divided by it, a negative one multiplied by it;
//   - presence_penalty and frequency_penalty (OpenAI's): a token generated c > 0 times so far loses
//     presence_penalty + c * frequency_penalty. They count the generated tokens only, as OpenAI
//     ("how often the token was sampled") and vLLM do.
#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace keel::runtime {

struct SamplerOptions {
  float temperature = 0.8f;   // <= 0: greedy (argmax, lowest id on ties)
  int top_k = 40;             // <= 0: off
  float top_p = 0.95f;        // >= 1: off
  float min_p = 0.05f;        // <= 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int repeat_last_n = 64;     // tokens of history the repeat penalty looks at (-1: all)
  float presence_penalty = 0.0f;   // 0: off
  float frequency_penalty = 0.0f;  // 0: off
  uint64_t seed = 0;
};

// The vocabulary-sized buffers of one sampling call, sized once: a server keeps one per sequence
// slot, whichever request holds the slot.
class SamplerScratch {
 public:
  explicit SamplerScratch(int32_t n_vocab);
  int32_t n_vocab() const { return static_cast<int32_t>(adjusted.size()); }

  struct Candidate {
    int32_t id;
    float logit;
    float p;
  };
  std::vector<float> adjusted;          // [n_vocab] the logits after the penalties
  std::vector<Candidate> candidates;    // [n_vocab]
  std::vector<int32_t> counts;          // [n_vocab] all zero between calls
};

// One request's sampling state: its options and its random stream.
class Sampler {
 public:
  explicit Sampler(const SamplerOptions& options);
  const SamplerOptions& options() const { return o_; }

  // Picks the next token from logits [n_vocab]. history: the tokens so far, the prompt's first
  // (n_prompt of them), then the generated ones.
  int32_t sample(const float* logits, std::span<const int32_t> history, size_t n_prompt, SamplerScratch& scratch);

  // The penalised logits, into scratch.adjusted (exposed for tests).
  void apply_penalties(const float* logits, std::span<const int32_t> history, size_t n_prompt,
                       SamplerScratch& scratch) const;

 private:
  // Whether apply_penalties changes any logit for this history.
  bool penalises(std::span<const int32_t> history, size_t n_prompt) const;

  SamplerOptions o_;
  std::mt19937_64 rng_;
};

// The index of the largest logit, the lowest on ties (NaNs are never chosen, unless logits[0] is one:
// then 0).
int32_t argmax(const float* logits, int32_t n);

// A token and its log-probability under the model: log softmax of the raw logits, before any
// penalty, temperature or truncation (what vLLM and llama-server report as logprobs).
struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0;
};

// Returns log p(chosen) and fills `top` with the top.size() most likely tokens, most likely first
// (ties: the lower id first). Allocates nothing; top.size() is small (OpenAI allows 20).
float token_logprobs(const float* logits, int32_t n_vocab, int32_t chosen, std::span<TokenLogprob> top);

}  // namespace keel::runtime
