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
#include "model/model.h"
#include "runtime/session.h"
#include "test_paths.h"
#include "tools_lib/convert.h"

using namespace keel;

namespace {

std::string temp_path(const std::string& tag) { return keel::test::temp_dir() + "keel_convert_" + tag; }

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

namespace {

// The folder scripts/qwen35_reference.py writes, at a narrow width: Qwen3.5's real head sizes
// (attention heads of 256 with a quarter rotary; GDN heads of 128, 16 key heads serving 32 value
// heads), config.json as transformers 5.17 saves a Qwen3_5TextConfig, the Qwen3 tokenizer files.
// Holds the tensors' values (`store`) while the folder is in use.
struct RealHeadsQwen35 {
  static constexpr uint64_t kHidden = 64, kFfn = 96, kVocab = 151669, kKeyHeads = 16, kValueHeads = 32, kHeadK = 128;
  std::string dir;
  std::vector<std::vector<float>> store;

  explicit RealHeadsQwen35(const std::string& path) : dir(path) {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    nlohmann::json cfg = {
        {"architectures", {"Qwen3_5ForCausalLM"}}, {"model_type", "qwen3_5_text"}, {"transformers_version", "5.17.0"},
        {"attention_bias", false}, {"attention_dropout", 0.0}, {"bos_token_id", nullptr}, {"eos_token_id", nullptr},
        {"pad_token_id", nullptr}, {"dtype", "float32"}, {"head_dim", 256}, {"hidden_act", "silu"},
        {"hidden_size", kHidden}, {"initializer_range", 0.02}, {"intermediate_size", kFfn},
        {"layer_types", {"linear_attention", "linear_attention", "linear_attention", "full_attention"}},
        {"linear_conv_kernel_dim", 4}, {"linear_key_head_dim", kHeadK}, {"linear_value_head_dim", kHeadK},
        {"linear_num_key_heads", kKeyHeads}, {"linear_num_value_heads", kValueHeads},
        {"max_position_embeddings", 32768}, {"num_attention_heads", 8}, {"num_hidden_layers", 4},
        {"num_key_value_heads", 2}, {"partial_rotary_factor", 0.25}, {"rms_norm_eps", 1e-6},
        {"rope_parameters", {{"mrope_interleaved", true}, {"mrope_section", {11, 11, 10}}, {"partial_rotary_factor", 0.25},
                             {"rope_theta", 10000000.0}, {"rope_type", "default"}}},
        {"tie_word_embeddings", false}, {"use_cache", true}, {"vocab_size", kVocab}};
    std::ofstream(dir + "/config.json") << cfg.dump(2);
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
      std::filesystem::copy_file(test::shared(std::string("tokenizers/qwen3/") + f), dir + "/" + f);

    std::mt19937 rng(35);
    std::map<std::string, StView> t;
    auto put = [&](const std::string& name, std::vector<uint64_t> shape, float mean, float std) {
      uint64_t n = 1;
      for (auto d : shape) n *= d;
      std::normal_distribution<float> nd(mean, std);
      store.emplace_back(n);
      for (auto& x : store.back()) x = nd(rng);
      t[name] = StView{shape, store.back().data(), store.back().size()};
    };
    store.reserve(64);
    const uint64_t e = kHidden, key_dim = kKeyHeads * kHeadK, value_dim = kValueHeads * kHeadK;
    const float w = 1.0f / std::sqrt(static_cast<float>(e));
    put("model.embed_tokens.weight", {kVocab, e}, 0, 1);
    put("lm_head.weight", {kVocab, e}, 0, 3 * w);
    put("model.norm.weight", {e}, 0, 0.1f);
    for (int il = 0; il < 4; ++il) {
      const std::string L = "model.layers." + std::to_string(il) + ".";
      put(L + "input_layernorm.weight", {e}, 0, 0.1f);
      put(L + "post_attention_layernorm.weight", {e}, 0, 0.1f);
      put(L + "mlp.gate_proj.weight", {kFfn, e}, 0, w);
      put(L + "mlp.up_proj.weight", {kFfn, e}, 0, w);
      put(L + "mlp.down_proj.weight", {e, kFfn}, 0, 1.0f / std::sqrt(static_cast<float>(kFfn)));
      if (il == 3) {
        put(L + "self_attn.q_proj.weight", {8 * 256 * 2, e}, 0, w);
        put(L + "self_attn.k_proj.weight", {2 * 256, e}, 0, w);
        put(L + "self_attn.v_proj.weight", {2 * 256, e}, 0, w);
        put(L + "self_attn.o_proj.weight", {e, 8 * 256}, 0, 1.0f / 64);
        put(L + "self_attn.q_norm.weight", {256}, 0, 0.1f);
        put(L + "self_attn.k_norm.weight", {256}, 0, 0.1f);
        continue;
      }
      const std::string A = L + "linear_attn.";
      put(A + "in_proj_qkv.weight", {2 * key_dim + value_dim, e}, 0, w);
      put(A + "in_proj_z.weight", {value_dim, e}, 0, w);
      put(A + "in_proj_b.weight", {kValueHeads, e}, 0, w);
      put(A + "in_proj_a.weight", {kValueHeads, e}, 0, 0.5f * w);
      put(A + "conv1d.weight", {2 * key_dim + value_dim, 1, 4}, 0, 0.3f);
      put(A + "A_log", {kValueHeads}, -0.5f, 0.5f);
      put(A + "dt_bias", {kValueHeads}, -1.0f, 1.0f);
      put(A + "norm.weight", {kHeadK}, 1, 0.1f);
      put(A + "out_proj.weight", {e, value_dim}, 0, 1.0f / 64);
    }
    write_safetensors(dir + "/model.safetensors", t);
  }
  ~RealHeadsQwen35() { std::filesystem::remove_all(dir); }
};

int64_t meta_int(const gguf::File& f, const std::string& key) {
  auto v = f.get_int(key);
  EXPECT_TRUE(v.has_value()) << key;
  return v.value_or(-1);
}

}  // namespace

// The converter at Qwen3.5's real head sizes, from the folder and tokenizer.json the reference
// script writes: the keys keel's qwen35 reads, the v-head reorder 16 -> 32 (GGUF v-head
// j·16 + g is HF v-head g·2 + j), and the GGUF runs (chunked prefill = one-call prefill).
TEST(Convert, Qwen35AtRealHeadSizes) {
  RealHeadsQwen35 src(temp_path("q35real"));
  tools::ConvertOptions opt;
  opt.dir = src.dir;
  opt.type = "f32";
  tools::ConvertPlan plan = tools::plan_convert(opt);
  const std::string out = temp_path("q35real.gguf");
  tools::write_model(out, plan.metadata, plan.jobs, quiet());
  {
    gguf::File f = gguf::File::open(out);
    EXPECT_EQ(f.get_string("general.architecture"), "qwen35");
    EXPECT_EQ(meta_int(f, "qwen35.attention.head_count"), 8);
    EXPECT_EQ(meta_int(f, "qwen35.attention.head_count_kv"), 2);
    EXPECT_EQ(meta_int(f, "qwen35.attention.key_length"), 256);
    EXPECT_EQ(meta_int(f, "qwen35.attention.value_length"), 256);
    EXPECT_EQ(meta_int(f, "qwen35.rope.dimension_count"), 64);
    EXPECT_EQ(meta_int(f, "qwen35.ssm.state_size"), 128);
    EXPECT_EQ(meta_int(f, "qwen35.ssm.group_count"), 16);
    EXPECT_EQ(meta_int(f, "qwen35.ssm.time_step_rank"), 32);
    EXPECT_EQ(meta_int(f, "qwen35.ssm.inner_size"), 4096);
    EXPECT_EQ(meta_int(f, "qwen35.ssm.conv_kernel"), 4);
    std::vector<int64_t> sections;
    if (const gguf::Array* a = f.get_array("qwen35.rope.dimension_sections"))
      for (const gguf::Value& v : a->items) sections.push_back(v.as_int().value_or(-1));
    EXPECT_EQ(sections, (std::vector<int64_t>{11, 11, 10, 0}));
    EXPECT_EQ(f.get_string("tokenizer.ggml.pre"), "qwen2");
    EXPECT_EQ(f.get_array("tokenizer.ggml.tokens")->items.size(), RealHeadsQwen35::kVocab);
    EXPECT_EQ(f.require_tensor("blk.0.attn_qkv.weight").shape_string(), "[64, 8192]");
    EXPECT_EQ(f.require_tensor("blk.0.ssm_conv1d.weight").shape_string(), "[4, 8192]");
    EXPECT_EQ(f.require_tensor("blk.3.attn_q.weight").shape_string(), "[64, 4096]");
    EXPECT_EQ(f.require_tensor("output.weight").shape_string(), "[64, 151669]");

    tools::SafetensorsFolder st = tools::SafetensorsFolder::open(src.dir);
    auto hf = [&](const std::string& n) { return reinterpret_cast<const float*>(st.find("model.layers.1.linear_attn." + n)->data); };
    auto gg = [&](const std::string& n) { return reinterpret_cast<const float*>(f.require_tensor("blk.1." + n).data); };
    const uint64_t e = 64, key_dim = 2048, d = 128;
    for (uint64_t h = 0; h < 32; ++h) {
      const uint64_t from = (h % 16) * 2 + h / 16;
      EXPECT_LE(ulp_distance(gg("ssm_a")[h], -std::exp(hf("A_log")[from])), 1) << h;
      EXPECT_EQ(gg("ssm_dt.bias")[h], hf("dt_bias")[from]) << h;
      EXPECT_EQ(std::memcmp(gg("ssm_beta.weight") + h * e, hf("in_proj_b.weight") + from * e, e * 4), 0) << h;
      EXPECT_EQ(std::memcmp(gg("attn_qkv.weight") + (2 * key_dim + h * d) * e, hf("in_proj_qkv.weight") + (2 * key_dim + from * d) * e,
                            d * e * 4), 0) << h;
      EXPECT_EQ(std::memcmp(gg("attn_gate.weight") + h * d * e, hf("in_proj_z.weight") + from * d * e, d * e * 4), 0) << h;
      for (uint64_t row = 0; row < e; row += 21)  // ssm_out: input columns move
        EXPECT_EQ(std::memcmp(gg("ssm_out.weight") + row * 4096 + h * d, hf("out_proj.weight") + row * 4096 + from * d, d * 4), 0);
    }
    EXPECT_EQ(std::memcmp(gg("attn_qkv.weight"), hf("in_proj_qkv.weight"), 2 * key_dim * e * 4), 0);  // q and k stay
  }

  auto model = model::Model::load(out);
  EXPECT_EQ(model->hparams().n_rot, 64u);
  EXPECT_EQ(model->hparams().n_attention_layers(), 1u);
  std::vector<int32_t> ids(70);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 7919 + 11) % 151643);
  auto last_logits = [&](int64_t chunk) {
    runtime::SessionOptions so;
    so.exact = true;
    so.kv_type = runtime::KvType::f32;
    so.n_ctx = 128;
    so.chunk = chunk;
    so.page_tokens = 32;
    so.n_threads = 2;
    runtime::Session session(model, so);
    const float* l = session.prefill(ids);
    return std::vector<float>(l, l + RealHeadsQwen35::kVocab);
  };
  const std::vector<float> whole = last_logits(70), chunked = last_logits(16);
  double diff = 0, scale = 0;
  for (size_t i = 0; i < whole.size(); ++i) {
    ASSERT_TRUE(std::isfinite(whole[i])) << i;
    diff = std::max(diff, static_cast<double>(std::abs(whole[i] - chunked[i])));
    scale = std::max(scale, static_cast<double>(std::abs(whole[i])));
  }
  EXPECT_GT(scale, 1.0);  // not a flat output
  EXPECT_LT(diff, 1e-3);
  std::filesystem::remove(out);
}
