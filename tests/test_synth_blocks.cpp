// `keel synth` draws quantized blocks directly (tools_lib/synth_random.h): the dequantized
// weights must have the intended mean, std and a bell shape; files must not depend on the thread
// count; and small synthesized models must load and give finite, non-degenerate logits.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "keel/error.h"
#include "model/model.h"
#include "quant/dequant.h"
#include "runtime/session.h"
#include "test_paths.h"
#include "tools_lib/synth.h"
#include "tools_lib/synth_random.h"

using namespace keel;

namespace {

struct Moments {
  double mean = 0, std = 0, within_one_std = 0, max_abs = 0;
};

Moments moments(const std::vector<float>& w) {
  Moments m;
  double s = 0, s2 = 0;
  for (float v : w) {
    s += v;
    s2 += double{v} * v;
  }
  m.mean = s / w.size();
  m.std = std::sqrt(s2 / w.size() - m.mean * m.mean);
  for (float v : w) {
    m.within_one_std += std::fabs(v - m.mean) < m.std;
    m.max_abs = std::max(m.max_abs, double{std::fabs(v)});
  }
  m.within_one_std /= w.size();
  return m;
}

// Rows [0, n_rows) of `n` weights drawn for tensor 7 of seed 11, dequantized.
std::vector<float> draw_and_dequantize(quant::Type type, float std, int64_t n, int n_rows) {
  const tools::QuantRowDrawer drawer(type, std);
  std::vector<uint8_t> row(quant::row_bytes(type, n));
  std::vector<float> out(n * n_rows);
  for (int r = 0; r < n_rows; ++r) {
    tools::RowRng rng(11, 7, r);
    drawer.draw(rng, row.data(), n);
    quant::dequantize_row(type, row.data(), out.data() + r * n, n);
  }
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

tools::WriteOptions threads(int n) {
  tools::WriteOptions o;
  o.n_threads = n;
  o.progress = false;
  return o;
}

const char* kTinyDense = "n_embd=256,n_ff=512,n_head=4,n_head_kv=2,head_dim=64,n_vocab=512";
const char* kTinyHybrid = "n_embd=256,n_ff=512,n_head=2,n_head_kv=1,head_dim=128,n_rot=32,n_vocab=512,"
                          "ssm_k_heads=2,ssm_v_heads=4,ssm_head_dim=64";

tools::SynthOptions tiny(const std::string& preset, const std::string& type) {
  tools::SynthOptions opt;
  opt.preset = preset;
  opt.type = type;
  opt.seed = 5;
  opt.layers = 4;
  opt.dims = preset.rfind("qwen35", 0) == 0 ? kTinyHybrid : kTinyDense;
  return opt;
}

}  // namespace

// Every drawable type, at the std of a 4096-wide and of a 27648-wide matrix (the smallest K-quant
// d there is an f16 subnormal): mean 0, the std asked for within 1.5%, about 68% of the weights
// within one std (a normal's 68.3%; uniform levels would give 58%), tails past 2.3 std.
TEST(SynthBlocks, DequantizedWeightsHaveTheIntendedStd) {
  for (const quant::Type type :
       {quant::Type::Q8_0, quant::Type::Q4_0, quant::Type::Q4_K, quant::Type::Q5_K, quant::Type::Q6_K}) {
    for (const int n_in : {4096, 27648}) {
      const float std = 1.0f / std::sqrt(static_cast<float>(n_in));
      const Moments m = moments(draw_and_dequantize(type, std, 4096, 64));
      const std::string what = std::string(quant::type_name(type)) + " n_in " + std::to_string(n_in);
      EXPECT_NEAR(m.mean / std, 0.0, 0.02) << what;
      EXPECT_NEAR(m.std / std, 1.0, 0.015) << what;
      EXPECT_NEAR(m.within_one_std, 0.683, 0.04) << what;
      EXPECT_GT(m.max_abs / std, 2.3) << what;
      EXPECT_LT(m.max_abs / std, 6.0) << what;
    }
  }
}

// A row is a function of (seed, tensor, row) alone; other rows and seeds differ.
TEST(SynthBlocks, RowsDependOnSeedTensorAndRowOnly) {
  const tools::QuantRowDrawer drawer(quant::Type::Q5_K, 0.02f);
  auto row = [&](uint64_t seed, uint64_t tensor, uint64_t r) {
    std::vector<uint8_t> out(quant::row_bytes(quant::Type::Q5_K, 512));
    tools::RowRng rng(seed, tensor, r);
    drawer.draw(rng, out.data(), 512);
    return out;
  };
  EXPECT_EQ(row(1, 2, 3), row(1, 2, 3));
  EXPECT_NE(row(1, 2, 3), row(1, 2, 4));
  EXPECT_NE(row(1, 2, 3), row(1, 3, 3));
  EXPECT_NE(row(1, 2, 3), row(2, 2, 3));
  EXPECT_THROW(tools::QuantRowDrawer drawer_f16(quant::Type::F16, 0.02f), Error);
}

// One thread or four: the same bytes (rows are seeded by their index, not by who drew them).
TEST(SynthBlocks, SameFileForAnyThreadCount) {
  for (const char* type : {"q5_k_m", "f16"}) {
    const tools::SynthPlan plan = tools::plan_synth(tiny("qwen35-0.8b", type));
    const std::string a = keel::test::temp_dir() + "keel_synth_t1.gguf", b = keel::test::temp_dir() + "keel_synth_t4.gguf";
    tools::write_model(a, plan.metadata, plan.jobs, threads(1));
    tools::write_model(b, plan.metadata, plan.jobs, threads(4));
    const std::string bytes_a = read_file(a);
    EXPECT_GT(bytes_a.size(), 1000000u) << type;
    EXPECT_TRUE(bytes_a == read_file(b)) << type;
    std::filesystem::remove(a);
    std::filesystem::remove(b);
  }
}

// Synthesized q8_0, q4_k_m and q5_k_m models, dense and hybrid: every weight dequantizes to a
// finite value, the model loads, and prefill and decode give finite logits with a spread that is
// neither zero (dead weights) nor exploding.
TEST(SynthBlocks, SmallModelsLoadAndRun) {
  for (const char* preset : {"qwen3-0.6b", "qwen35-0.8b"}) {
    for (const char* type : {"q8_0", "q4_k_m", "q5_k_m"}) {
      const std::string what = std::string(preset) + " " + type;
      const tools::SynthPlan plan = tools::plan_synth(tiny(preset, type));
      const std::string path = keel::test::temp_dir() + "keel_synth_run.gguf";
      tools::write_model(path, plan.metadata, plan.jobs, threads(2));
      {
        const gguf::File f = gguf::File::open(path);
        for (const gguf::TensorInfo& t : f.tensors()) {
          std::vector<float> row(t.ne[0]);
          const uint64_t rb = quant::row_bytes(t.type, static_cast<int64_t>(t.ne[0]));
          bool finite = true;
          for (uint64_t r = 0; r < t.n_rows() && finite; ++r) {
            quant::dequantize_row(t.type, t.data + r * rb, row.data(), static_cast<int64_t>(t.ne[0]));
            for (float v : row) finite = finite && std::isfinite(v);
          }
          EXPECT_TRUE(finite) << what << " " << t.name;
        }
      }
      runtime::SessionOptions so;
      so.n_ctx = 64;
      so.chunk = 16;
      so.page_tokens = 16;
      so.n_threads = 2;
      const auto model = model::Model::load(path);
      runtime::Session session(model, so);
      const int64_t n_vocab = model->hparams().n_vocab;
      const std::vector<int32_t> prompt = {1, 17, 300, 42, 99, 5, 260, 7};
      const float* first = session.prefill(prompt);
      std::vector<std::vector<float>> copies = {{first, first + n_vocab}};
      const float* next = session.decode(11);
      copies.emplace_back(next, next + n_vocab);
      for (const auto& logits : copies) {
        const Moments m = moments(logits);
        EXPECT_TRUE(std::isfinite(m.mean) && std::isfinite(m.std)) << what;
        EXPECT_GT(m.std, 1e-3) << what;
        EXPECT_LT(m.std, 100.0) << what;
      }
      EXPECT_NE(copies[0], copies[1]) << what;
      std::filesystem::remove(path);
    }
  }
}
