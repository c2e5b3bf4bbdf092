// Quantized tiny-qwen35 (Q8_0, Q4_K, Q5_K, Q6_K weights) goes through cpu::matmul unchanged and
// gives the logits of its exactly dequantized (F32) twin, in the GEMV (chunk 1, recurrent GDN)
// and GEMM (chunk 64, chunked GDN) paths alike.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "gguf/gguf.h"
#include "fixture_ref.h"
#include "model/model.h"
#include "runtime/session.h"
#include "test_paths.h"
#include "tools_lib/requantize.h"

using namespace keel;

namespace {

std::string temp_gguf(const std::string& tag) { return keel::test::temp_dir() + "keel_qwen35_" + tag + ".gguf"; }

void requantize(const std::string& in_path, const std::string& out_path, model::FileType type) {
  gguf::File in = gguf::File::open(in_path);
  tools::RequantizePlan plan = tools::plan_requantize(in, type);
  tools::WriteOptions options;
  options.n_threads = 2;
  options.progress = false;
  tools::write_model(out_path, plan.metadata, plan.jobs, options);
}

// Raw logits of every position of prompt A.
std::vector<float> prompt_a_logits(const std::string& path, int64_t chunk) {
  const auto prompt = test::read_json(test::shared("fixtures/tiny-qwen35.ref.json"))["prompt_a"].get<std::vector<int32_t>>();
  runtime::SessionOptions opt;
  opt.exact = true;  // f32 activations: the exact-math oracle
  opt.n_ctx = 64;
  opt.chunk = chunk;
  opt.max_logit_rows = chunk;
  opt.kv_type = runtime::KvType::f32;
  opt.page_tokens = 16;
  opt.n_threads = 2;
  auto model = model::Model::load(path);
  runtime::Session session(model, opt);
  const int64_t n_vocab = model->hparams().n_vocab;
  std::vector<float> out;
  session.evaluate(prompt, [&](int64_t, const float* logits) { out.insert(out.end(), logits, logits + n_vocab); });
  return out;
}

}  // namespace

class Qwen35Quantized : public testing::TestWithParam<model::FileType> {};

TEST_P(Qwen35Quantized, EqualsDequantizedModel) {
  const std::string tag(model::file_type_name(GetParam()));
  const std::string quantized = temp_gguf(tag), dequantized = temp_gguf(tag + "_f32");
  requantize(test::shared("fixtures/tiny-qwen35.gguf"), quantized, GetParam());
  requantize(quantized, dequantized, model::FileType::f32);  // exact dequantization
  {
    gguf::File q = gguf::File::open(quantized);
    EXPECT_NE(q.require_tensor("blk.0.attn_qkv.weight").type, quant::Type::F32);
    EXPECT_NE(q.require_tensor("blk.0.ssm_out.weight").type, quant::Type::F32);
    EXPECT_EQ(q.require_tensor("blk.0.ssm_conv1d.weight").type, quant::Type::F32);
  }
  for (int64_t chunk : {int64_t{1}, int64_t{64}}) {
    const std::vector<float> got = prompt_a_logits(quantized, chunk), want = prompt_a_logits(dequantized, chunk);
    ASSERT_EQ(got.size(), want.size());
    double max_diff = 0.0;
    for (size_t i = 0; i < got.size(); ++i) max_diff = std::max(max_diff, std::abs(double{got[i]} - want[i]));
    EXPECT_LE(max_diff, 1e-3) << tag << " chunk " << chunk;
  }
  std::remove(quantized.c_str());
  std::remove(dequantized.c_str());
}

INSTANTIATE_TEST_SUITE_P(Qwen35Types, Qwen35Quantized,
                         // q4_k_m mixes Q4_K and Q6_K tensors
                         testing::Values(model::FileType::q8_0, model::FileType::q4_k_m, model::FileType::q5_k),
                         [](const testing::TestParamInfo<model::FileType>& info) {
                           return std::string(model::file_type_name(info.param));
                         });
