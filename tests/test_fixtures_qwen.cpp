// tiny-qwen2 / tiny-qwen3 (and quantized variants) against the Hugging Face float64 references:
// every stored row of prompt A, prompt B around chunk boundaries and the 32 greedy decode rows,
// for several prefill chunk sizes.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <stdexcept>
#include <string>

#include "fixture_ref.h"
#include "model/model.h"
#include "runtime/sampler.h"
#include "runtime/session.h"

using namespace keel;

namespace {

struct Case {
  std::string model;       // fixture name
  std::string rows_file;   // reference rows (raw logits)
  std::string greedy_file;
  bool hf_dequant;         // quantized variants: compare with the exact-dequantized reference
  runtime::KvType kv;
  double tolerance;
  bool exact = true;       // f32 activations (the exact-math oracle); false: the fast 8-bit path
};

struct Result {
  test::RowComparison a, b, greedy;
  std::vector<int32_t> greedy_ids;
};

Result run_fixture(const Case& c, int64_t chunk) {
  test::Fixture fx = test::load_fixture(c.model, c.hf_dequant);
  auto ref = test::read_rows(c.rows_file, fx.n_vocab);
  auto greedy_ref = test::read_rows(c.greedy_file, fx.n_vocab);
  auto model = model::Model::load(test::shared("fixtures/" + c.model + ".gguf"));
  runtime::SessionOptions opt;
  opt.exact = c.exact;  // true: f32 activations, the exact-math oracle
  opt.n_ctx = 1536;
  opt.chunk = chunk;
  opt.max_logit_rows = chunk;
  opt.kv_type = c.kv;
  opt.page_tokens = 64;
  opt.n_threads = 2;
  runtime::Session s(model, opt);
  Result r;
  s.evaluate(fx.prompt_a, [&](int64_t i, const float* logits) { test::compare_row(logits, ref.at(static_cast<size_t>(i)), r.a); });
  s.reset();
  s.evaluate(fx.prompt_b, [&](int64_t i, const float* logits) {
    for (size_t k = 0; k < fx.positions_b.size(); ++k)
      if (fx.positions_b[k] == i) test::compare_row(logits, ref.at(48 + k), r.b);
  });
  s.reset();
  const float* logits = s.prefill(fx.prompt_a);
  for (size_t step = 0; step < fx.greedy.size(); ++step) {
    test::compare_row(logits, greedy_ref.at(step), r.greedy);
    r.greedy_ids.push_back(runtime::argmax(logits, fx.n_vocab));
    if (step + 1 < fx.greedy.size()) logits = s.decode(fx.greedy[step]);  // teacher-forced: rows stay comparable
  }
  return r;
}

void expect_matches(const Case& c, int64_t chunk) {
  SCOPED_TRACE(c.model + " chunk " + std::to_string(chunk));
  Result r = run_fixture(c, chunk);
  test::Fixture fx = test::load_fixture(c.model, c.hf_dequant);
  EXPECT_LT(r.a.max_abs_diff, c.tolerance) << "prompt A";
  EXPECT_LT(r.b.max_abs_diff, c.tolerance) << "prompt B";
  EXPECT_LT(r.greedy.max_abs_diff, c.tolerance) << "greedy rows";
  EXPECT_EQ(r.a.top1_mismatches + r.b.top1_mismatches + r.greedy.top1_mismatches, 0);
  EXPECT_EQ(r.greedy_ids, fx.greedy);
  std::printf("[fixture] %s kv=%s chunk=%lld max|dlogp| A %.2e B %.2e greedy %.2e\n", c.model.c_str(),
              std::string(runtime::kv_type_name(c.kv)).c_str(), static_cast<long long>(chunk), r.a.max_abs_diff,
              r.b.max_abs_diff, r.greedy.max_abs_diff);
}

Case f32_case(const std::string& name) {
  return {name, name + ".logits.f32", name + ".greedy.logits.f32", false, runtime::KvType::f32, 1e-3};
}

Case dequant_case(const std::string& name) {
  return {name, name + ".hf_dequant.logits.f32", name + ".hf_dequant.greedy.logits.f32", true, runtime::KvType::f32, 1e-3};
}

}  // namespace

class QwenFixture : public testing::TestWithParam<std::tuple<std::string, int64_t>> {};

TEST_P(QwenFixture, MatchesHuggingFaceFloat64) {
  auto [name, chunk] = GetParam();
  expect_matches(f32_case(name), chunk == 0 ? 1536 : chunk);
}

INSTANTIATE_TEST_SUITE_P(Chunks, QwenFixture,
                         testing::Combine(testing::Values("tiny-qwen2", "tiny-qwen3"),
                                          testing::Values(int64_t{1}, int64_t{7}, int64_t{64}, int64_t{0})));

class QuantFixture : public testing::TestWithParam<std::tuple<std::string, int64_t>> {};

// Weights dequantized exactly, activations f32: the goal is the hf_dequant reference within 1e-3.
TEST_P(QuantFixture, MatchesExactDequantizedReference) {
  auto [name, chunk] = GetParam();
  expect_matches(dequant_case(name), chunk == 0 ? 1536 : chunk);
}

INSTANTIATE_TEST_SUITE_P(Types, QuantFixture,
                         testing::Combine(testing::Values("tiny-qwen3-q8_0", "tiny-qwen3-q4_0", "tiny-qwen3-q4_k",
                                                          "tiny-qwen3-q5_k", "tiny-qwen3-q6_k"),
                                          testing::Values(int64_t{7}, int64_t{0})));

// f16 KV: rounding K and V to binary16 (relative error 2^-11 per element) perturbs the scores and
// outputs of every layer. The bound is taken from the oracle: llama.cpp's own F16-KV run on the
// same model and prompt A differs from HF float64 by `agreement.hf_f64_vs_llama_cpp_fa_off_kv_f16`
// (5.5e-3 for qwen3, 1.4e-2 for qwen2). keel rounds at the same places (K after RoPE, V), so it
// must stay within twice that (different summation order may double the worst row), and within
// the fixtures README's "f16 costs up to ~2e-2" overall.
TEST(QwenFixtureKvF16, WithinTheOracleMeasuredF16Band) {
  for (std::string name : {"tiny-qwen2", "tiny-qwen3"}) {
    test::Fixture fx = test::load_fixture(name);
    const double oracle = fx.ref["agreement"]["hf_f64_vs_llama_cpp_fa_off_kv_f16"]["A"]["max_abs_dlogprob"].get<double>();
    Case c = f32_case(name);
    c.kv = runtime::KvType::f16;
    c.tolerance = 2.0 * oracle;
    Result r = run_fixture(c, 64);
    EXPECT_LT(r.a.max_abs_diff, c.tolerance) << name;
    EXPECT_LT(r.greedy.max_abs_diff, 2e-2) << name;
    std::printf("[fixture] %s kv=f16 A %.2e (bound %.2e) B %.2e greedy %.2e\n", name.c_str(), r.a.max_abs_diff,
                c.tolerance, r.b.max_abs_diff, r.greedy.max_abs_diff);
  }
}

// Fast mode (8-bit activations, as llama.cpp computes every quantized matmul) against llama.cpp's
// own log-probabilities: keel must be at least as close to llama.cpp as llama.cpp is to the
// exact-dequantized float64 reference (the fixture's measured band,
// agreement.hf_f64_vs_llama_cpp_fa_off): the worst |Δ log-prob| over the prefill rows (prompts A
// and B) within llama.cpp's worst there, no more top-1 disagreements on A and B than llama.cpp
// has with the exact reference. Per prompt the two can trade
// places: single 8-bit rounding flips on float noise move every later row (fixtures README), so
// per-prompt maxima are printed, not held. The greedy rows (one-token decode calls) are printed
// too: keel rounds decode activations like prefill's, yet on q4_0 its decode rows stay as far
// from llama.cpp's as exact mode's (2.2e-2 vs 2.17e-2), so they are not held to the band (nor
// are the greedy tokens: on q8_0, q5_k and q6_k a near-tie flips one of the 32).
// Prefill in chunks of 64 (the whole prompt at once measured the same; left out to keep CI quick).
class QuantFixtureFast : public testing::TestWithParam<std::tuple<std::string, int64_t>> {};

TEST_P(QuantFixtureFast, AsCloseToLlamaCppAsTheExactReferenceIs) {
  auto [name, chunk] = GetParam();
  test::Fixture fx = test::load_fixture(name);
  const auto& band = fx.ref["agreement"]["hf_f64_vs_llama_cpp_fa_off"];
  Case c{name, name + ".logits.f32", name + ".greedy.logits.f32", false, runtime::KvType::f32, 0.0, false};
  Result r = run_fixture(c, chunk == 0 ? 1536 : chunk);
  const double band_a = band["A"]["max_abs_dlogprob"].get<double>();
  const double band_b = band["B"]["max_abs_dlogprob"].get<double>();
  EXPECT_LE(std::max(r.a.max_abs_diff, r.b.max_abs_diff), std::max(band_a, band_b)) << name;
  const int band_top1 = band["A"]["rows"].get<int>() - band["A"]["top1_agree"].get<int>() +
                        band["B"]["rows"].get<int>() - band["B"]["top1_agree"].get<int>();
  EXPECT_LE(r.a.top1_mismatches + r.b.top1_mismatches, band_top1) << name;
  std::printf("[fixture fast] %s chunk=%lld vs llama.cpp: A %.3e B %.3e greedy %.3e (band A %.3e B %.3e)\n",
              name.c_str(), static_cast<long long>(chunk), r.a.max_abs_diff, r.b.max_abs_diff, r.greedy.max_abs_diff,
              band_a, band_b);
}

INSTANTIATE_TEST_SUITE_P(Types, QuantFixtureFast,
                         testing::Combine(testing::Values("tiny-qwen3-q8_0", "tiny-qwen3-q4_0", "tiny-qwen3-q4_k",
                                                          "tiny-qwen3-q5_k", "tiny-qwen3-q6_k"),
                                          testing::Values(int64_t{64})));

// A reference that is missing or not whole rows stops the test with the file's name, rather than
// a JSON parse error or rows read past the end of an empty table.
TEST(FixtureRef, MissingOrTruncatedReferencesNameTheFile) {
  const std::string missing = test::temp_dir() + "no_such_fixture.ref.json";
  try {
    test::read_json(missing);
    ADD_FAILURE() << "read_json read a missing file";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  const std::string rows = test::temp_dir() + "fixture_rows.f32";
  const auto rows_of = [&](size_t n_floats) {  // a file of n_floats zeros, read as rows of 8
    std::ofstream(rows, std::ios::binary) << std::string(n_floats * sizeof(float), '\0');
    return test::read_rows_at(rows, 8);
  };
  for (size_t n_floats : {size_t{0}, size_t{7}, size_t{8 + 3}})  // empty, a partial row, one row and a part
    EXPECT_THROW(rows_of(n_floats), std::runtime_error) << n_floats << " floats";
  EXPECT_EQ(rows_of(16).size(), 2u);
  EXPECT_THROW(test::read_rows_at(test::temp_dir() + "no_such_rows.f32", 8), std::runtime_error);
}
