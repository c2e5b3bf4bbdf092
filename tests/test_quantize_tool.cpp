#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "keel/error.h"
#include "model/family.h"
#include "model/recipe.h"
#include "quant/dequant.h"
#include "test_paths.h"
#include "tools_lib/requantize.h"

using namespace keel;

namespace {

std::string out_path(const std::string& tag) { return keel::test::temp_dir() + "keel_quantize_" + tag + ".gguf"; }

bool temp_files_left(const std::string& path) {
  const std::filesystem::path p(path);
  for (const auto& e : std::filesystem::directory_iterator(p.parent_path()))
    if (e.path().filename().string().rfind(p.filename().string() + ".tmp.", 0) == 0) return true;
  return false;
}

tools::WriteOptions quiet() {
  tools::WriteOptions o;
  o.n_threads = 2;
  o.progress = false;
  return o;
}

double rel_rmse(const gguf::TensorInfo& a, const gguf::TensorInfo& b) {
  std::vector<float> x(a.ne[0]), y(a.ne[0]);
  double e = 0, s = 0;
  for (uint64_t r = 0; r < a.n_rows(); ++r) {
    quant::dequantize_row(a.type, a.data + r * quant::row_bytes(a.type, a.ne[0]), x.data(), a.ne[0]);
    quant::dequantize_row(b.type, b.data + r * quant::row_bytes(b.type, b.ne[0]), y.data(), b.ne[0]);
    for (size_t i = 0; i < x.size(); ++i) {
      e += (x[i] - y[i]) * (x[i] - y[i]);
      s += x[i] * x[i];
    }
  }
  return std::sqrt(e / s);
}

}  // namespace

// Q5_K_M of tiny-qwen3: every tensor gets the recipe's type (the same types llama-quantize
// chose for this file), metadata is carried over, values are close to the F32 original.
TEST(QuantizeTool, Q5KMFollowsTheRecipe) {
  gguf::File in = gguf::File::open(test::shared("fixtures/tiny-qwen3.gguf"));
  const std::string path = out_path("q5km");
  tools::RequantizePlan plan = tools::plan_requantize(in, model::FileType::q5_k_m);
  EXPECT_TRUE(plan.notes.empty());
  tools::write_model(path, plan.metadata, plan.jobs, quiet());
  gguf::File out = gguf::File::open(path);
  EXPECT_EQ(out.get_int("general.file_type"), 17);
  EXPECT_EQ(out.get_string("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(out.get_array("tokenizer.ggml.tokens")->items.size(), 512u);
  ASSERT_EQ(out.tensors().size(), in.tensors().size());
  int q6 = 0;
  for (const gguf::TensorInfo& t : out.tensors()) {
    const gguf::TensorInfo& src = in.require_tensor(t.name);
    if (t.n_dims == 1) {
      EXPECT_EQ(t.type, quant::Type::F32) << t.name;
      EXPECT_EQ(std::memcmp(t.data, src.data, t.n_bytes), 0) << t.name;
      continue;
    }
    q6 += t.type == quant::Type::Q6_K;
    EXPECT_TRUE(t.type == quant::Type::Q5_K || t.type == quant::Type::Q6_K) << t.name;
    EXPECT_LT(rel_rmse(src, t), t.type == quant::Type::Q6_K ? 0.02 : 0.04) << t.name;
  }
  // output + attn_v and ffn_down of layers 0 and 3 (use_more_bits over 4 layers: i < 0 || i >= 3 || ...)
  EXPECT_EQ(out.require_tensor("output.weight").type, quant::Type::Q6_K);
  EXPECT_EQ(out.require_tensor("token_embd.weight").type, quant::Type::Q5_K);
  EXPECT_EQ(q6, 1 + 2 * 2);
  EXPECT_EQ(out.require_tensor("blk.3.ffn_down.weight").type, quant::Type::Q6_K);
  EXPECT_EQ(out.require_tensor("blk.1.attn_v.weight").type, quant::Type::Q5_K);
  std::filesystem::remove(path);
}

// Requantizing a quantized file says so; a same-type tensor is copied byte for byte.
TEST(QuantizeTool, RequantizesAQuantizedFile) {
  gguf::File in = gguf::File::open(test::shared("fixtures/tiny-qwen3-q4_k.gguf"));
  tools::RequantizePlan plan = tools::plan_requantize(in, model::FileType::q8_0);
  ASSERT_FALSE(plan.notes.empty());
  EXPECT_NE(plan.notes[0].find("requantized"), std::string::npos);
  const std::string path = out_path("requant");
  tools::write_model(path, plan.metadata, plan.jobs, quiet());
  gguf::File out = gguf::File::open(path);
  const gguf::TensorInfo& t = out.require_tensor("blk.0.ffn_up.weight");
  EXPECT_EQ(t.type, quant::Type::Q8_0);
  EXPECT_LT(rel_rmse(in.require_tensor(t.name), t), 0.01);
  std::filesystem::remove(path);

  tools::RequantizePlan same = tools::plan_requantize(in, model::FileType::q4_k);
  for (const auto& job : same.jobs)
    if (job.record.name == "blk.0.ffn_up.weight") {
      EXPECT_NE(job.raw, nullptr);
    }
}

TEST(QuantizeTool, RefusesUnknownTypesAndArchitectures) {
  EXPECT_THROW(tools::parse_quantize_type("q3_k"), Error);
  try {
    tools::parse_quantize_type("iq2");
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::usage);
    EXPECT_NE(std::string(e.what()).find("q5_k_m"), std::string::npos);
  }
  gguf::File v1 = gguf::File::open(test::shared("vocab/ggml-vocab-gpt-2.gguf"));  // no weights, arch gpt2
  try {
    tools::plan_requantize(v1, model::FileType::q8_0);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not supported"), std::string::npos) << e.what();
  }
}

// The CLI: a truncated input is an error naming the file, and no output (or temp file) appears.
TEST(QuantizeTool, CliTruncatedInputWritesNothing) {
  std::ifstream src(test::shared("fixtures/tiny-qwen3.gguf"), std::ios::binary);
  std::vector<char> bytes{std::istreambuf_iterator<char>(src), {}};
  bytes.resize(bytes.size() / 2);
  const std::string bad = out_path("truncated_in");
  std::ofstream(bad, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  const std::string out = out_path("truncated_out");
  std::filesystem::remove(out);
  const std::string cmd = test::keel_binary() + " quantize " + bad + " " + out + " q8_0 2>/dev/null";
  const int rc = std::system(cmd.c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 1);
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_FALSE(temp_files_left(out));
  std::filesystem::remove(bad);
}
