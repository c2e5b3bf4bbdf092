#include <gtest/gtest.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "gguf/gguf.h"
#include "keel/error.h"
#include "model/family.h"
#include "model/recipe.h"
#include "quant/dequant.h"
#include "quant/quantize.h"
#include "sanitizers.h"
#include "test_paths.h"
#include "tools_lib/synth.h"

using namespace keel;

namespace {

std::string temp_path(const std::string& tag) { return keel::test::temp_dir() + "keel_synth_" + tag + ".gguf"; }

bool temp_files_left(const std::string& path) {
  const std::filesystem::path p(path);
  for (const auto& e : std::filesystem::directory_iterator(p.parent_path()))
    if (e.path().filename().string().rfind(p.filename().string() + ".tmp.", 0) == 0) return true;
  return false;
}

tools::WriteOptions threads(int n) {
  tools::WriteOptions o;
  o.n_threads = n;
  o.progress = false;
  return o;
}

// Row `row` of a job as the file holds it: drawn as blocks, or float values quantized.
std::vector<uint8_t> row_of(const tools::TensorJob& job, uint64_t row) {
  std::vector<uint8_t> out(job.record.row_bytes());
  if (job.encoded_rows) {
    job.encoded_rows(row, out.data());
  } else {
    std::vector<float> x(job.record.shape[0]);
    job.rows(row, x.data());
    quant::quantize_row(job.record.type, x.data(), out.data(), static_cast<int64_t>(x.size()));
  }
  return out;
}

const char* kTinyDense = "n_embd=256,n_ff=512,n_head=4,n_head_kv=2,head_dim=64,n_vocab=512";
const char* kTinyHybrid = "n_embd=256,n_ff=512,n_head=2,n_head_kv=1,head_dim=128,n_rot=32,n_vocab=512,"
                          "ssm_k_heads=2,ssm_v_heads=4,ssm_head_dim=64";

// Runs the keel binary; returns the exit code and (optionally) the peak RSS it reports. With
// interrupt_output set, it sends SIGINT once that output's temp file exists (mid-write).
// (wait4's ru_maxrss would count the pages the fork copied from this test process.)
int run_keel(const std::vector<std::string>& args, std::string* stderr_text = nullptr,
             const std::string& interrupt_output = "") {
  // One file per test process (ctest runs these tests in parallel).
  const std::string err_path = keel::test::temp_dir() + "keel_synth_stderr." + std::to_string(getpid()) + ".txt";
  std::vector<std::string> all = {test::keel_binary()};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    if (!freopen(err_path.c_str(), "w", stderr)) _exit(126);
    execv(argv[0], argv.data());
    _exit(127);
  }
  if (!interrupt_output.empty()) {
    const std::string temp = interrupt_output + ".tmp." + std::to_string(pid);
    for (int i = 0; i < 2000 && !std::filesystem::exists(temp); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_TRUE(std::filesystem::exists(temp)) << "the writer never started";
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    kill(pid, SIGINT);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (stderr_text) {
    std::ifstream in(err_path);
    *stderr_text = std::string{std::istreambuf_iterator<char>(in), {}};
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);  // killed: not an exit code
}

}  // namespace

// A shrunk qwen3 at q4_k_m: recipe types, the metadata the engine reads, sane random values,
// and the same bytes whatever the thread count.
TEST(Synth, TinyQwen3FileIsWhatTheEngineExpects) {
  tools::SynthOptions opt;
  opt.arch = "qwen3";
  opt.preset = "qwen3-0.6b";
  opt.type = "q4_k_m";
  opt.seed = 42;
  opt.layers = 2;
  opt.dims = kTinyDense;
  tools::SynthPlan plan = tools::plan_synth(opt);
  const std::string a = temp_path("q3a");
  tools::write_model(a, plan.metadata, plan.jobs, threads(2));
  gguf::File f = gguf::File::open(a);
  // Rows depend only on (seed, tensor, row): regenerating one gives the file's bytes (matrices
  // are drawn as blocks, norms as floats).
  size_t first_norm = 0;
  while (first_norm < plan.jobs.size() && plan.jobs[first_norm].encoded_rows) ++first_norm;
  ASSERT_LT(first_norm, plan.jobs.size());
  ASSERT_TRUE(plan.jobs.front().encoded_rows);
  for (size_t i : {size_t{0}, first_norm, plan.jobs.size() - 1}) {
    const auto& rec = plan.jobs[i].record;
    const gguf::TensorInfo& t = f.require_tensor(rec.name);
    const uint64_t row = rec.n_rows() - 1;
    const std::vector<uint8_t> q = row_of(plan.jobs[i], row);
    EXPECT_EQ(std::memcmp(t.data + row * q.size(), q.data(), q.size()), 0) << rec.name;
  }

  const model::Family& family = model::family_for("qwen3");
  const model::Hparams hp = family.read_hparams(f);
  EXPECT_EQ(hp.n_layer, 2u);
  EXPECT_EQ(hp.n_embd, 256u);
  EXPECT_EQ(hp.n_head_kv, 2u);
  EXPECT_EQ(hp.head_dim, 64u);
  EXPECT_EQ(hp.n_vocab, 512u);
  EXPECT_TRUE(hp.tied_output);  // Qwen3-0.6B ties its embeddings
  EXPECT_FLOAT_EQ(hp.rope_base, 1e6f);
  EXPECT_EQ(f.get_int("general.file_type"), 15);
  std::vector<model::TensorSpec> specs;
  for (const auto& s : family.tensor_specs(hp))
    if (f.find_tensor(s.name)) specs.push_back(s);
  const std::vector<quant::Type> types = model::recipe_types(model::FileType::q4_k_m, specs);
  ASSERT_EQ(specs.size(), f.tensors().size());
  for (size_t i = 0; i < specs.size(); ++i) EXPECT_EQ(f.require_tensor(specs[i].name).type, types[i]) << specs[i].name;
  EXPECT_EQ(f.require_tensor("token_embd.weight").type, quant::Type::Q6_K);  // tied: the LM head rule

  std::vector<float> row(512);
  quant::dequantize_row(quant::Type::F32, f.require_tensor("blk.0.attn_norm.weight").data, row.data(), 256);
  for (int i = 0; i < 256; ++i) EXPECT_NEAR(row[i], 1.0f, 0.15f);
  const gguf::TensorInfo& up = f.require_tensor("blk.1.ffn_up.weight");
  double s2 = 0;
  for (uint64_t r = 0; r < up.ne[1]; ++r) {
    quant::dequantize_row(up.type, up.data + r * quant::row_bytes(up.type, 256), row.data(), 256);
    for (int i = 0; i < 256; ++i) s2 += row[i] * row[i];
  }
  EXPECT_NEAR(std::sqrt(s2 / (256.0 * up.ne[1])), 1.0 / 16.0, 0.005);  // N(0, 1/sqrt(256))

  opt.seed = 43;
  tools::SynthPlan other = tools::plan_synth(opt);
  for (size_t i : {size_t{0}, first_norm}) EXPECT_NE(row_of(plan.jobs[i], 0), row_of(other.jobs[i], 0));
  std::filesystem::remove(a);
}

TEST(Synth, TinyQwen35HasTheHybridLayout) {
  tools::SynthOptions opt;
  opt.preset = "qwen35-0.8b";
  opt.type = "q8_0";
  opt.layers = 4;
  opt.dims = kTinyHybrid;
  tools::SynthPlan plan = tools::plan_synth(opt);
  const std::string path = temp_path("q35");
  tools::write_model(path, plan.metadata, plan.jobs, threads(2));
  gguf::File f = gguf::File::open(path);
  EXPECT_EQ(f.get_int("qwen35.ssm.group_count"), 2);
  EXPECT_EQ(f.get_int("qwen35.ssm.time_step_rank"), 4);
  EXPECT_EQ(f.get_int("qwen35.ssm.inner_size"), 256);
  EXPECT_EQ(f.get_int("qwen35.full_attention_interval"), 4);
  EXPECT_EQ(f.get_int("qwen35.rope.dimension_count"), 32);
  const model::Hparams hp = model::family_for("qwen35").read_hparams(f);
  EXPECT_TRUE(hp.is_recurrent(0));
  EXPECT_FALSE(hp.is_recurrent(3));
  EXPECT_NE(f.find_tensor("blk.0.attn_qkv.weight"), nullptr);
  EXPECT_NE(f.find_tensor("blk.3.attn_q.weight"), nullptr);
  const gguf::TensorInfo& a = f.require_tensor("blk.0.ssm_a");
  EXPECT_EQ(a.type, quant::Type::F32);
  for (uint64_t i = 0; i < a.ne[0]; ++i) {
    const float v = reinterpret_cast<const float*>(a.data)[i];
    EXPECT_LT(v, -0.04f);
    EXPECT_GT(v, -1.6f);
  }
  EXPECT_EQ(f.require_tensor("blk.0.ssm_conv1d.weight").type, quant::Type::F32);
  std::filesystem::remove(path);
}

// A preset vocabulary larger than the tokenizer's: [PAD{i}] tokens of type UNUSED fill it.
TEST(Synth, PadsTheVocabularyToThePreset) {
  tools::SynthOptions opt;
  opt.preset = "qwen3-0.6b";
  opt.type = "q8_0";
  opt.layers = 1;
  opt.dims = "n_embd=256,n_ff=512,n_head=4,n_head_kv=2,head_dim=64,n_vocab=1000";
  tools::SynthPlan plan = tools::plan_synth(opt);
  const gguf::Array* tokens = plan.metadata.find("tokenizer.ggml.tokens")->as_array();
  const gguf::Array* types = plan.metadata.find("tokenizer.ggml.token_type")->as_array();
  const gguf::Array* scores = plan.metadata.find("tokenizer.ggml.scores")->as_array();
  ASSERT_EQ(tokens->items.size(), 1000u);
  ASSERT_EQ(types->items.size(), 1000u);
  ASSERT_EQ(scores->items.size(), 1000u);
  EXPECT_EQ(*tokens->items[999].as_string(), "[PAD999]");
  EXPECT_EQ(types->items[512].as_int(), 5);
  EXPECT_EQ(plan.jobs[0].record.shape[1], 1000u);
}

// Qwen3.5-27B at Q5_K_M, by arithmetic (docs/specs/quants.md §5.1): nothing is written.
TEST(Synth, Qwen35_27B_Q5KM_SizeMatchesTheSpec) {
  tools::SynthOptions opt;
  opt.preset = "qwen35-27b";
  opt.type = "q5_k_m";
  tools::SynthPlan plan = tools::plan_synth(opt);
  std::map<std::string, uint64_t> bytes;
  std::map<std::string, int> q6;
  for (const auto& job : plan.jobs) {
    std::string group = job.record.name;
    if (group.rfind("blk.", 0) == 0) group = group.substr(group.find('.', 4) + 1);
    bytes[group] += job.record.n_bytes();
    q6[group] += job.record.type == quant::Type::Q6_K;
  }
  EXPECT_EQ(bytes["token_embd.weight"], 874086400u);
  EXPECT_EQ(bytes["output.weight"], 1042944000u);
  EXPECT_EQ(bytes["ffn_gate.weight"] + bytes["ffn_up.weight"], 7843348480u);
  EXPECT_EQ(bytes["ffn_down.weight"], 4300472320u);
  EXPECT_EQ(q6["ffn_down.weight"], 32);
  EXPECT_EQ(bytes["attn_qkv.weight"], 1897267200u);
  EXPECT_EQ(q6["attn_qkv.weight"], 24);
  EXPECT_EQ(bytes["attn_gate.weight"], 1038090240u);
  EXPECT_EQ(bytes["ssm_out.weight"], 1038090240u);
  EXPECT_EQ(bytes["ssm_alpha.weight"] + bytes["ssm_beta.weight"], 16220160u);
  EXPECT_EQ(bytes["attn_q.weight"], 692060160u);
  EXPECT_EQ(bytes["attn_k.weight"], 57671680u);
  EXPECT_EQ(bytes["attn_v.weight"], 63242240u);
  EXPECT_EQ(q6["attn_v.weight"], 8);
  EXPECT_EQ(bytes["attn_output.weight"], 346030080u);
  EXPECT_EQ(bytes["ssm_conv1d.weight"], 7864320u);
  const tools::WriteSummary s = tools::summarize(plan.metadata, plan.jobs);
  EXPECT_NEAR(s.tensor_bytes / 1e9, 19.22, 0.005);
  EXPECT_NEAR(s.bits_per_weight(), 5.72, 0.005);
  EXPECT_EQ(s.n_elements, 26895998464u);
}

TEST(Synth, RefusesBadRequests) {
  tools::SynthOptions opt;
  opt.preset = "qwen3-0.6b";
  opt.type = "q3_k";
  EXPECT_THROW(tools::plan_synth(opt), Error);
  opt.type = "q8_0";
  opt.arch = "llama";
  EXPECT_THROW(tools::plan_synth(opt), Error);  // the preset is qwen3
  opt.arch = "";
  opt.preset = "gpt-5";
  EXPECT_THROW(tools::plan_synth(opt), Error);
  opt.preset = "qwen3-0.6b";
  opt.dims = "n_embd=abc";
  EXPECT_THROW(tools::plan_synth(opt), Error);
  opt.dims = "";
  opt.tokenizer = "/nonexistent/tokenizer.gguf";
  EXPECT_THROW(tools::plan_synth(opt), Error);
}

// The CLI writes row by row: peak RSS stays far below the file size.
TEST(Synth, CliPeakMemoryIsFarBelowTheFileSize) {
#if KEEL_TEST_UNDER_ASAN
  GTEST_SKIP() << "AddressSanitizer's shadow memory and quarantine dominate RSS";
#endif
  const std::string path = temp_path("rss");
  std::string err;
  const int rc = run_keel({"synth", "--preset", "qwen3-0.6b", "--type", "f16", "--layers", "1", "--dims",
                           "n_vocab=8192", "-o", path, "-t", "2", "--no-progress"},
                          &err);
  ASSERT_EQ(rc, 0) << err;
  const size_t at = err.find("peak RSS ");
  ASSERT_NE(at, std::string::npos) << err;
  const long rss_kb = static_cast<long>(std::stod(err.substr(at + 9)) * 1e6 / 1024);  // "NN.NN MB"
  ASSERT_NE(err.find(" MB", at), std::string::npos) << err;
  const uint64_t size = std::filesystem::file_size(path);
  EXPECT_GT(size, uint64_t{34} << 20);
  EXPECT_LT(static_cast<uint64_t>(rss_kb) * 1024, size / 2) << "peak RSS " << rss_kb << " KB for a " << size << " B file";
  RecordProperty("peak_rss_kb", static_cast<int>(rss_kb));
  RecordProperty("file_bytes", static_cast<int>(size));
  std::filesystem::remove(path);
}

// Ctrl-C mid-write: exit code 130, no output and no temp file.
TEST(Synth, CliInterruptLeavesNoFile) {
  const std::string path = temp_path("sigint");
  std::filesystem::remove(path);
  const int rc = run_keel({"synth", "--preset", "qwen3-8b", "--type", "q4_k_m", "--layers", "2", "--dims", "n_vocab=512",
                           "-o", path, "-t", "1", "--no-progress"},
                          nullptr, path);
  EXPECT_EQ(rc, 130);
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(temp_files_left(path));
}
