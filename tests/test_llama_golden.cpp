// stories260K: keel's greedy continuation equals llama.cpp's (golden file) token for token.
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "model/model.h"
#include "runtime/sampler.h"
#include "runtime/session.h"
#include "test_paths.h"

using namespace keel;

namespace {

nlohmann::json golden() {
  std::ifstream in(test::shared("golden/stories260K.greedy.json"));
  return nlohmann::json::parse(in);
}

std::vector<int32_t> greedy(runtime::Session& s, const std::vector<int32_t>& prompt, int n) {
  std::vector<int32_t> out;
  const float* logits = s.prefill(prompt);
  const int32_t n_vocab = static_cast<int32_t>(s.model().hparams().n_vocab);
  for (int i = 0; i < n; ++i) {
    int32_t id = runtime::argmax(logits, n_vocab);
    out.push_back(id);
    if (i + 1 < n) logits = s.decode(id);
  }
  return out;
}

}  // namespace

class LlamaGolden : public testing::TestWithParam<std::tuple<runtime::KvType, int64_t>> {};

TEST_P(LlamaGolden, GreedyIdsEqualLlamaCpp) {
  auto [kv_type, chunk] = GetParam();
  auto model = model::Model::load(test::shared("models/stories260K.gguf"));
  runtime::SessionOptions opt;
  opt.exact = true;  // f32 activations: the exact-math oracle
  opt.n_ctx = 256;
  opt.chunk = chunk;
  opt.kv_type = kv_type;
  opt.page_tokens = 16;  // several pages even for short prompts
  opt.n_threads = 2;
  runtime::Session session(model, opt);
  for (const auto& item : golden()) {
    session.reset();
    auto prompt = item["prompt_ids"].get<std::vector<int32_t>>();
    auto want = item["greedy_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(greedy(session, prompt, static_cast<int>(want.size())), want) << item["prompt"];
  }
}

INSTANTIATE_TEST_SUITE_P(KvAndChunk, LlamaGolden,
                         testing::Combine(testing::Values(runtime::KvType::f32, runtime::KvType::f16),
                                          testing::Values(int64_t{1}, int64_t{3}, int64_t{512})));
