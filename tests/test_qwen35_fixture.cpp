// tiny-qwen35 (shared/fixtures): keel's log-softmax equals Hugging Face float64 within 1e-3 at every
// stored row, for several prefill chunk sizes (carrying KV and recurrent state across chunks), and
// the greedy continuation with single-token decode equals HF's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "model/model.h"
#include "runtime/sampler.h"
#include "fixture_ref.h"
#include "runtime/session.h"
#include "test_paths.h"

using namespace keel;

namespace {

constexpr int64_t kVocab = 512;
constexpr double kTolerance = 1e-3;

std::string fixture(const std::string& name) { return test::shared("fixtures/tiny-qwen35" + name); }

nlohmann::json reference() { return test::read_json(fixture(".ref.json")); }

std::vector<float> read_rows(const std::string& path, int64_t n_rows) {
  std::vector<float> out(static_cast<size_t>(n_rows * kVocab));
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(out.size() * sizeof(float)));
  EXPECT_TRUE(in.good()) << path;
  return out;
}

std::vector<double> log_softmax(const float* logits) {
  double mx = *std::max_element(logits, logits + kVocab), sum = 0.0;
  for (int64_t i = 0; i < kVocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  const double lse = mx + std::log(sum);
  std::vector<double> out(kVocab);
  for (int64_t i = 0; i < kVocab; ++i) out[i] = logits[i] - lse;
  return out;
}

int64_t argmax(const float* x) { return std::max_element(x, x + kVocab) - x; }

struct RowCheck {
  double max_diff = 0.0;
  int top1_mismatches = 0;
};

// Compares one computed row with reference row `ref_row` of `ref`; near-tie rows skip top-1.
void check_row(const float* got, const std::vector<float>& ref, int64_t ref_row, bool near_tie, RowCheck& c,
               const std::string& what) {
  const float* want = ref.data() + ref_row * kVocab;
  std::vector<double> a = log_softmax(got), b = log_softmax(want);
  double diff = 0.0;
  for (int64_t i = 0; i < kVocab; ++i) diff = std::max(diff, std::abs(a[i] - b[i]));
  c.max_diff = std::max(c.max_diff, diff);
  EXPECT_LE(diff, kTolerance) << what << " row " << ref_row;
  if (!near_tie && argmax(got) != argmax(want)) {
    ++c.top1_mismatches;
    ADD_FAILURE() << what << " row " << ref_row << ": top-1 " << argmax(got) << ", want " << argmax(want);
  }
}

std::shared_ptr<const model::Model> tiny_qwen35() {
  static auto model = model::Model::load(fixture(".gguf"));
  return model;
}

runtime::SessionOptions options(int64_t chunk) {
  runtime::SessionOptions opt;
  opt.exact = true;  // f32 activations: the exact-math oracle
  opt.n_ctx = 1536;
  opt.chunk = chunk;
  opt.max_logit_rows = chunk;
  opt.kv_type = runtime::KvType::f32;
  opt.page_tokens = 64;  // several pages, boundaries inside prefill chunks
  opt.n_threads = chunk == 1 ? 1 : 2;  // 1548 one-token calls: pool hand-offs would dominate
  return opt;
}

}  // namespace

TEST(Qwen35Family, ReadsHparamsAndLayerPattern) {
  const model::Hparams& hp = tiny_qwen35()->hparams();
  EXPECT_EQ(hp.arch, "qwen35");
  EXPECT_EQ(hp.n_layer, 8u);
  EXPECT_EQ(hp.n_attention_layers(), 2u);
  EXPECT_FALSE(hp.is_recurrent(3));
  EXPECT_FALSE(hp.is_recurrent(7));
  EXPECT_TRUE(hp.is_recurrent(0));
  EXPECT_EQ(hp.head_dim, 128u);
  EXPECT_EQ(hp.n_rot, 32u);
  EXPECT_EQ(hp.ssm_group_count, 2u);
  EXPECT_EQ(hp.ssm_time_step_rank, 4u);
  EXPECT_EQ(hp.ssm_state_size, 64u);
  EXPECT_EQ(hp.ssm_inner_size, 256u);
  EXPECT_EQ(hp.ssm_conv_kernel, 4u);
  EXPECT_FALSE(hp.tied_output);
}

TEST(Qwen35Family, StateBuffersHoldConvAndMatrixStatePerGdnLayer) {
  const model::Hparams& hp = tiny_qwen35()->hparams();
  auto state = tiny_qwen35()->family().state_buffers(hp);
  ASSERT_EQ(state.size(), 2u * 6u);
  uint64_t total = 0;
  for (const auto& b : state) total += b.bytes;
  // per GDN layer: conv (4-1) x 512 floats + matrices 4 x 64 x 64 floats
  EXPECT_EQ(total, 6u * (3u * 512u + 4u * 64u * 64u) * 4u);
}

TEST(Qwen35Family, SessionLayoutHasKvForAttentionLayersOnly) {
  auto model = tiny_qwen35();
  runtime::SessionOptions opt = options(64);
  const runtime::SessionLayout layout =
      runtime::layout_session(model->hparams(), model->family(), runtime::matrices_of(*model), opt);
  EXPECT_EQ(layout.shape.kv.n_layers, 2u);  // layers 3 and 7
  EXPECT_EQ(layout.state_bytes(), 6u * (3u * 512u + 4u * 64u * 64u) * 4u);
  runtime::Session session(model, opt);
  EXPECT_EQ(session.allocated_bytes(), layout.scratch_bytes() + layout.state_bytes() + layout.kv_bytes());
}

class Qwen35Fixture : public testing::TestWithParam<int64_t> {};

// Chunk 0 stands for "whole prompt": one forward call per prompt.
TEST_P(Qwen35Fixture, LogSoftmaxMatchesHfFloat64) {
  const nlohmann::json ref = reference();
  const auto prompt_a = ref["prompt_a"].get<std::vector<int32_t>>();
  const auto prompt_b = ref["prompt_b"].get<std::vector<int32_t>>();
  const auto positions_b = ref["positions"]["prompt_b"].get<std::vector<int64_t>>();
  std::set<int64_t> near_ties;
  for (const auto& t : ref["agreement"]["near_tie_rows_gap_below_2e-3"]["logits_file"]) near_ties.insert(t["row"].get<int64_t>());
  const std::vector<float> want = read_rows(fixture(".logits.f32"), 57);

  const int64_t chunk = GetParam() == 0 ? static_cast<int64_t>(prompt_b.size()) : GetParam();
  runtime::Session session(tiny_qwen35(), options(chunk));
  RowCheck a, b;
  session.evaluate(prompt_a, [&](int64_t i, const float* logits) {
    check_row(logits, want, i, near_ties.count(i) > 0, a, "prompt A");
  });
  session.reset();
  size_t next = 0;
  session.evaluate(prompt_b, [&](int64_t i, const float* logits) {
    if (next < positions_b.size() && positions_b[next] == i) {
      const int64_t row = 48 + static_cast<int64_t>(next++);
      check_row(logits, want, row, near_ties.count(row) > 0, b, "prompt B");
    }
  });
  EXPECT_EQ(next, positions_b.size());
  std::printf("[ qwen35  ] chunk %lld: max |d log-softmax| prompt A %.3g, prompt B %.3g\n",
              static_cast<long long>(chunk), a.max_diff, b.max_diff);
}

INSTANTIATE_TEST_SUITE_P(Qwen35Chunks, Qwen35Fixture, testing::Values(int64_t{1}, int64_t{64}, int64_t{100}, int64_t{0}));

TEST(Qwen35Decode, GreedyMatchesHf) {
  const nlohmann::json ref = reference();
  const auto prompt_a = ref["prompt_a"].get<std::vector<int32_t>>();
  const auto tokens = ref["greedy"]["tokens"].get<std::vector<int32_t>>();
  const std::vector<float> want = read_rows(fixture(".greedy.logits.f32"), 32);
  runtime::SessionOptions opt = options(20);  // prompt A in 3 chunks, then one token at a time
  opt.max_logit_rows = 1;
  runtime::Session session(tiny_qwen35(), opt);
  RowCheck c;
  std::vector<int32_t> got;
  const float* logits = session.prefill(prompt_a);
  for (size_t s = 0; s < tokens.size(); ++s) {
    check_row(logits, want, static_cast<int64_t>(s), false, c, "greedy");
    got.push_back(static_cast<int32_t>(argmax(logits)));
    if (s + 1 < tokens.size()) logits = session.decode(tokens[s]);  // follow HF's trajectory
  }
  EXPECT_EQ(got, tokens);
  std::printf("[ qwen35  ] greedy: max |d log-softmax| %.3g over %zu decode rows\n", c.max_diff, tokens.size());

  // reset() clears the recurrent state: the same prompt gives the same first row again.
  session.reset();
  logits = session.prefill(prompt_a);
  RowCheck again;
  check_row(logits, want, 0, false, again, "after reset");
}
