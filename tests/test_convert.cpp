#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gguf/gguf.h"
#include "keel/error.h"
#include "test_paths.h"
#include "tools_lib/convert.h"

using namespace keel;

namespace {

std::string temp_path(const std::string& tag) { return testing::TempDir() + "keel_convert_" + tag; }

tools::WriteOptions quiet() {
  tools::WriteOptions o;
  o.n_threads = 2;
  o.progress = false;
  return o;
}

bool temp_files_left(const std::string& path) {
  const std::filesystem::path p(path);
  for (const auto& e : std::filesystem::directory_iterator(p.parent_path()))
    if (e.path().filename().string().rfind(p.filename().string() + ".tmp.", 0) == 0) return true;
  return false;
}

int32_t ulp_distance(float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  return std::abs(ia - ib);
}

// Converts hf/NAME with the fixture's vocabulary and compares with fixtures/NAME.gguf.
void expect_reproduces_fixture(const std::string& name) {
  tools::ConvertOptions opt;
  opt.dir = test::shared("fixtures/hf/" + name);
  opt.type = "f32";
  opt.vocab_from = test::shared("fixtures/" + name + ".gguf");
  const std::string out = temp_path(name + ".gguf");
  tools::ConvertPlan plan = tools::plan_convert(opt);
  tools::write_model(out, plan.metadata, plan.jobs, quiet());
  gguf::File ours = gguf::File::open(out);
  gguf::File ref = gguf::File::open(opt.vocab_from);

  for (const auto& [key, value] : ref.metadata()) {
    if (key == "general.size_label") continue;  // informational, the converter's estimate
    const gguf::Value* v = ours.find(key);
    ASSERT_NE(v, nullptr) << name << ": missing key " << key;
    EXPECT_EQ(v->type, value.type) << name << ": " << key;
    EXPECT_EQ(v->to_display(1 << 20), value.to_display(1 << 20)) << name << ": " << key;
  }
  ASSERT_EQ(ours.tensors().size(), ref.tensors().size()) << name;
  for (const gguf::TensorInfo& r : ref.tensors()) {
    const gguf::TensorInfo* t = ours.find_tensor(r.name);
    ASSERT_NE(t, nullptr) << name << ": missing tensor " << r.name;
    EXPECT_EQ(t->shape_string(), r.shape_string()) << r.name;
    ASSERT_EQ(t->type, r.type) << r.name;
    ASSERT_EQ(t->n_bytes, r.n_bytes) << r.name;
    const bool is_ssm_a = r.name.size() > 5 && r.name.compare(r.name.size() - 5, 5, "ssm_a") == 0;
    if (!is_ssm_a) {
      EXPECT_EQ(std::memcmp(t->data, r.data, r.n_bytes), 0) << name << ": values differ in " << r.name;
      continue;
    }
    const auto* a = reinterpret_cast<const float*>(t->data);
    const auto* b = reinterpret_cast<const float*>(r.data);
    for (uint64_t i = 0; i < r.n_elements(); ++i) EXPECT_LE(ulp_distance(a[i], b[i]), 1) << r.name << "[" << i << "]";
  }
  std::filesystem::remove(out);
}

// ---- a tiny synthetic safetensors folder ----

// A tensor to write: shape and a view of its F32 values (owned elsewhere: no copies, so the test
// process stays small for the RSS tests that fork from it).
struct StView {
  std::vector<uint64_t> shape;
  const float* data;
  size_t n;
};

void write_safetensors(const std::string& path, const std::map<std::string, StView>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t off = 0;
  for (const auto& [name, t] : tensors) {
    header[name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {off, off + t.n * 4}}};
    off += t.n * 4;
  }
  const std::string h = header.dump();
  std::ofstream out(path, std::ios::binary);
  const uint64_t len = h.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  for (const auto& [name, t] : tensors)
    out.write(reinterpret_cast<const char*>(t.data), static_cast<std::streamsize>(t.n * 4));
}

StView view_of(const tools::StTensor& t) {
  return {t.shape, reinterpret_cast<const float*>(t.data), static_cast<size_t>(t.n_elements())};
}

// A 1-layer llama: hidden 64, 2 heads of 32 (1 KV head), FFN 64, vocab 512 (stories260K's).
std::string make_tiny_llama(const std::string& dir) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json") << R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
    "intermediate_size": 64, "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 1,
    "vocab_size": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 256,
    "tie_word_embeddings": true})";
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  std::vector<std::vector<float>> store;
  store.reserve(16);
  auto rand = [&](std::vector<uint64_t> shape) {
    uint64_t n = 1;
    for (auto d : shape) n *= d;
    store.emplace_back(n);
    for (auto& x : store.back()) x = nd(rng);
    return StView{shape, store.back().data(), store.back().size()};
  };
  write_safetensors(dir + "/model.safetensors",
                    {{"model.embed_tokens.weight", rand({512, 64})},
                     {"model.norm.weight", rand({64})},
                     {"model.layers.0.input_layernorm.weight", rand({64})},
                     {"model.layers.0.post_attention_layernorm.weight", rand({64})},
                     {"model.layers.0.self_attn.q_proj.weight", rand({64, 64})},
                     {"model.layers.0.self_attn.k_proj.weight", rand({32, 64})},
                     {"model.layers.0.self_attn.v_proj.weight", rand({32, 64})},
                     {"model.layers.0.self_attn.o_proj.weight", rand({64, 64})},
                     {"model.layers.0.mlp.gate_proj.weight", rand({64, 64})},
                     {"model.layers.0.mlp.up_proj.weight", rand({64, 64})},
                     {"model.layers.0.mlp.down_proj.weight", rand({64, 64})}});
  return dir;
}

}  // namespace

TEST(Convert, ReproducesTinyQwen2) { expect_reproduces_fixture("tiny-qwen2"); }
TEST(Convert, ReproducesTinyQwen3) { expect_reproduces_fixture("tiny-qwen3"); }
TEST(Convert, ReproducesTinyQwen35) { expect_reproduces_fixture("tiny-qwen35"); }

// Llama: Q and K rows are permuted per head (HF row half·d/2 + i → GGUF row 2i + half).
TEST(Convert, LlamaPermutesQueryAndKeyRows) {
  const std::string dir = make_tiny_llama(temp_path("llama_dir"));
  tools::ConvertOptions opt;
  opt.dir = dir;
  opt.vocab_from = test::shared("models/stories260K.gguf");
  tools::ConvertPlan plan = tools::plan_convert(opt);
  const std::string out = temp_path("llama.gguf");
  tools::write_model(out, plan.metadata, plan.jobs, quiet());
  gguf::File f = gguf::File::open(out);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.find_tensor("output.weight"), nullptr);  // tied
  EXPECT_EQ(f.get_int("llama.rope.dimension_count"), 32);
  EXPECT_EQ(f.get_int("llama.vocab_size"), 512);
  tools::SafetensorsFolder st = tools::SafetensorsFolder::open(dir);
  for (const char* which : {"q", "k"}) {
    const tools::StTensor* src = st.find(std::string("model.layers.0.self_attn.") + which + "_proj.weight");
    const gguf::TensorInfo& dst = f.require_tensor(std::string("blk.0.attn_") + which + ".weight");
    const auto* a = reinterpret_cast<const float*>(src->data);
    const auto* b = reinterpret_cast<const float*>(dst.data);
    const uint64_t d = 32;
    for (uint64_t r = 0; r < dst.ne[1]; ++r) {
      const uint64_t h = r / d, rr = r % d, src_row = h * d + (rr % 2) * (d / 2) + rr / 2;
      ASSERT_EQ(std::memcmp(b + r * 64, a + src_row * 64, 64 * 4), 0) << which << " row " << r;
    }
  }
  // V is not permuted.
  EXPECT_EQ(std::memcmp(f.require_tensor("blk.0.attn_v.weight").data,
                        st.find("model.layers.0.self_attn.v_proj.weight")->data, 32 * 64 * 4), 0);
  std::filesystem::remove(out);
  std::filesystem::remove_all(dir);
}

// Qwen3.5's multimodal layout: text weights under model.language_model.*, vision skipped.
TEST(Convert, AcceptsQwen35ConditionalGenerationLayout) {
  const std::string src = test::shared("fixtures/hf/tiny-qwen35");
  const std::string dir = temp_path("q35mm");
  std::filesystem::create_directories(dir);
  nlohmann::json cfg;
  {
    std::ifstream in(src + "/config.json");
    nlohmann::json text = nlohmann::json::parse(in);
    text.erase("architectures");
    cfg = {{"architectures", {"Qwen3_5ForConditionalGeneration"}}, {"model_type", "qwen3_5"},
           {"text_config", text}, {"vision_config", {{"depth", 1}}}, {"tie_word_embeddings", false}};
  }
  std::ofstream(dir + "/config.json") << cfg.dump(1);
  // Rename the tensors and add a vision tensor, rewriting the safetensors file.
  tools::SafetensorsFolder st = tools::SafetensorsFolder::open(src);
  std::map<std::string, StView> tensors;
  for (const tools::StTensor* t : st.tensors()) {
    std::string name = t->name;
    if (name.rfind("model.", 0) == 0) name = "model.language_model." + name.substr(6);
    tensors[name] = view_of(*t);
  }
  const std::vector<float> ones(16, 1.0f);
  tensors["model.visual.patch_embed.proj.weight"] = {{4, 4}, ones.data(), ones.size()};
  tensors["mtp.fc.weight"] = {{4, 4}, ones.data(), ones.size()};
  write_safetensors(dir + "/model.safetensors", tensors);

  tools::ConvertOptions opt;
  opt.dir = dir;
  opt.type = "f32";
  opt.vocab_from = test::shared("fixtures/tiny-qwen35.gguf");
  tools::ConvertPlan plan = tools::plan_convert(opt);
  ASSERT_FALSE(plan.notes.empty());
  const std::string out = temp_path("q35mm.gguf");
  tools::write_model(out, plan.metadata, plan.jobs, quiet());
  gguf::File ours = gguf::File::open(out);
  gguf::File ref = gguf::File::open(opt.vocab_from);
  ASSERT_EQ(ours.tensors().size(), ref.tensors().size());
  const gguf::TensorInfo& a = ours.require_tensor("blk.0.attn_qkv.weight");
  EXPECT_EQ(std::memcmp(a.data, ref.require_tensor("blk.0.attn_qkv.weight").data, a.n_bytes), 0);
  std::filesystem::remove(out);
  std::filesystem::remove_all(dir);
}

// Quantizing on the way: q8_0 matrices, F32 norms and GDN tensors.
TEST(Convert, QuantizesOnTheWay) {
  tools::ConvertOptions opt;
  opt.dir = test::shared("fixtures/hf/tiny-qwen35");
  opt.type = "q8_0";
  opt.vocab_from = test::shared("fixtures/tiny-qwen35.gguf");
  tools::ConvertPlan plan = tools::plan_convert(opt);
  for (const auto& job : plan.jobs) {
    const std::string& n = job.record.name;
    const bool is_ssm_a = n.size() > 5 && n.compare(n.size() - 5, 5, "ssm_a") == 0;
    if (n.find("norm") != std::string::npos || is_ssm_a ||
        n.find("ssm_dt") != std::string::npos || n.find("conv1d") != std::string::npos)
      EXPECT_EQ(job.record.type, quant::Type::F32) << n;
    else
      EXPECT_EQ(job.record.type, quant::Type::Q8_0) << n;
  }
}

TEST(Convert, CorruptInputsAreClearErrorsAndWriteNothing) {
  const std::string src = test::shared("fixtures/hf/tiny-qwen3");
  const std::string dir = temp_path("corrupt");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(src + "/config.json", dir + "/config.json");
  const std::string st_path = dir + "/model.safetensors";
  const uint64_t full_size = std::filesystem::file_size(src + "/model.safetensors");
  // Variants of the real file, made on disk (no copy of it in this process's memory).
  auto put = [&](uint64_t keep_bytes, int patch_at = -1) {
    std::filesystem::copy_file(src + "/model.safetensors", st_path, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::resize_file(st_path, keep_bytes);
    if (patch_at >= 0) {
      std::fstream f(st_path, std::ios::binary | std::ios::in | std::ios::out);
      f.seekp(patch_at);
      f.put('#');
    }
  };
  tools::ConvertOptions opt;
  opt.dir = dir;
  opt.vocab_from = test::shared("fixtures/tiny-qwen3.gguf");
  auto plan_error = [&](uint64_t keep_bytes, int patch_at = -1) {
    put(keep_bytes, patch_at);
    try {
      tools::plan_convert(opt);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(plan_error(full_size / 2).find("truncated"), std::string::npos);
  EXPECT_NE(plan_error(full_size, 8).find("not valid JSON"), std::string::npos);  // the header's opening brace
  EXPECT_NE(plan_error(2).find("truncated"), std::string::npos);
  std::ofstream(dir + "/config.json", std::ios::trunc) << "{\"architectures\": [\"GPT2LMHeadModel\"]}";
  EXPECT_NE(plan_error(full_size).find("GPT2LMHeadModel"), std::string::npos);
  std::filesystem::copy_file(src + "/config.json", dir + "/config.json", std::filesystem::copy_options::overwrite_existing);

  // Through the CLI: exit code 1, the file named, no output and no temp file left.
  put(full_size / 2);
  const std::string out = temp_path("corrupt.gguf");
  const std::string cmd = test::keel_binary() + " convert " + dir + " -o " + out + " --vocab-from " +
                          opt.vocab_from + " 2>" + temp_path("corrupt.err");
  EXPECT_EQ(WEXITSTATUS(std::system(cmd.c_str())), 1);
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_FALSE(temp_files_left(out));
  std::ifstream err(temp_path("corrupt.err"));
  const std::string msg{std::istreambuf_iterator<char>(err), {}};
  EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
  std::filesystem::remove_all(dir);
}

// A sharded checkpoint (two files and model.safetensors.index.json) converts like the single file.
TEST(Convert, ReadsShardedCheckpoints) {
  const std::string src = test::shared("fixtures/hf/tiny-qwen3");
  const std::string dir = temp_path("sharded");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(src + "/config.json", dir + "/config.json");
  tools::SafetensorsFolder st = tools::SafetensorsFolder::open(src);
  std::map<std::string, StView> shard[2];
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  int i = 0;
  for (const tools::StTensor* t : st.tensors()) {
    const int k = i++ % 2;
    shard[k][t->name] = view_of(*t);
    index["weight_map"][t->name] = "model-0000" + std::to_string(k + 1) + "-of-00002.safetensors";
  }
  write_safetensors(dir + "/model-00001-of-00002.safetensors", shard[0]);
  write_safetensors(dir + "/model-00002-of-00002.safetensors", shard[1]);
  std::ofstream(dir + "/model.safetensors.index.json") << index.dump();

  tools::ConvertOptions opt;
  opt.dir = dir;
  opt.type = "f32";
  opt.vocab_from = test::shared("fixtures/tiny-qwen3.gguf");
  tools::ConvertPlan plan = tools::plan_convert(opt);
  const std::string out = temp_path("sharded.gguf");
  tools::write_model(out, plan.metadata, plan.jobs, quiet());
  gguf::File ours = gguf::File::open(out);
  gguf::File ref = gguf::File::open(opt.vocab_from);
  for (const gguf::TensorInfo& r : ref.tensors())
    EXPECT_EQ(std::memcmp(ours.require_tensor(r.name).data, r.data, r.n_bytes), 0) << r.name;
  std::filesystem::remove(out);

  // The index names a shard that is gone: a clear error.
  std::filesystem::remove(dir + "/model-00002-of-00002.safetensors");
  try {
    tools::plan_convert(opt);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model-00002-of-00002.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

// Llama-3.1's "llama3" rope scaling becomes the rope_freqs.weight tensor (gguf_arch.md §3.3).
TEST(Convert, LlamaRopeScalingBecomesRopeFreqs) {
  const std::string dir = make_tiny_llama(temp_path("llama3_dir"));
  {
    std::ifstream in(dir + "/config.json");
    nlohmann::json cfg = nlohmann::json::parse(in);
    cfg["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
    std::ofstream(dir + "/config.json", std::ios::trunc) << cfg.dump();
  }
  tools::ConvertOptions opt;
  opt.dir = dir;
  opt.vocab_from = test::shared("models/stories260K.gguf");
  tools::ConvertPlan plan = tools::plan_convert(opt);
  const std::string out = temp_path("llama3.gguf");
  tools::write_model(out, plan.metadata, plan.jobs, quiet());
  gguf::File f = gguf::File::open(out);
  const gguf::TensorInfo& rf = f.require_tensor("rope_freqs.weight");
  ASSERT_EQ(rf.ne[0], 16u);  // n_rot / 2
  const auto* v = reinterpret_cast<const float*>(rf.data);
  EXPECT_FLOAT_EQ(v[0], 1.0f);   // short wavelengths: unchanged
  EXPECT_FLOAT_EQ(v[15], 8.0f);  // long wavelengths: divided by the factor
  for (int i = 1; i < 16; ++i) EXPECT_GE(v[i], v[i - 1]);
  std::filesystem::remove(out);
  std::filesystem::remove_all(dir);
}
