// Token sampling: greedy, or repetition penalty -> top-k -> top-p -> min-p -> temperature ->
// seeded draw (llama.cpp's default chain and defaults). Buffers are sized once at construction.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace keel::runtime {

struct SamplerOptions {
  float temperature = 0.8f;   // <= 0: greedy (argmax, lowest id on ties)
  int top_k = 40;             // <= 0: off
  float top_p = 0.95f;        // >= 1: off
  float min_p = 0.05f;        // <= 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int repeat_last_n = 64;     // tokens of history the penalty looks at
  uint64_t seed = 0;
};

class Sampler {
 public:
  Sampler(const SamplerOptions& options, int32_t n_vocab);
  // Picks the next token from logits [n_vocab] given the tokens so far (prompt + generated).
  int32_t sample(const float* logits, const std::vector<int32_t>& history);

 private:
  struct Candidate {
    int32_t id;
    float logit;
    float p;
  };
  SamplerOptions o_;
  int32_t n_vocab_;
  std::vector<Candidate> candidates_;
  std::vector<float> adjusted_;
  std::mt19937_64 rng_;
};

int32_t argmax(const float* logits, int32_t n);

}  // namespace keel::runtime
