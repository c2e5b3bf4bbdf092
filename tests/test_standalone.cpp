// The keel binary on its own: copied into an empty directory, with the source tree and ../shared
// out of reach (run from that directory, environment emptied), it still runs the embedded
// default model, tokenizes with it and synthesizes a model from its vocabulary.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include "fixture_ref.h"
#include "test_paths.h"

namespace fs = std::filesystem;
using namespace keel;

namespace {

using Output = test::Ran;

// A fresh directory holding only a copy of the keel binary; removed at the end.
class LoneBinary {
 public:
  LoneBinary() {
    std::string pattern = (fs::temp_directory_path() / "keel-standalone-XXXXXX").string();
    if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    dir_ = pattern;
    fs::copy_file(test::keel_binary(), dir_ / "keel");
  }
  ~LoneBinary() {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
  LoneBinary(const LoneBinary&) = delete;
  LoneBinary& operator=(const LoneBinary&) = delete;

  const fs::path& dir() const { return dir_; }

  // `./keel ARGS` inside the directory, with an empty environment (no PATH, no HOME).
  Output run(const std::string& args) const {
    return test::run_command("cd '" + dir_.string() + "' && env -i ./keel " + args + " 2>/dev/null");
  }

  std::vector<std::string> files() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  fs::path dir_;
};

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t used = 0;
    if (text.find_first_of("0123456789", pos) == std::string::npos) break;
    pos = text.find_first_of("0123456789", pos);
    ids.push_back(std::stoi(text.substr(pos), &used));
    pos += used;
  }
  return ids;
}

}  // namespace

TEST(Standalone, RunTokenizeAndSynthWithNoFileAround) {
  const LoneBinary keel;
  const auto golden = test::read_json(test::shared("golden/stories260K.greedy.json"));
  const auto& item = golden[0];  // "Once upon a time"
  const std::string prompt = item["prompt"];

  Output run = keel.run("run --temp 0 -n 16 --json -p '" + prompt + "'");
  ASSERT_EQ(run.code, 0);
  auto j = nlohmann::json::parse(run.out);
  EXPECT_EQ(j["prompt_ids"].get<std::vector<int32_t>>(), item["prompt_ids"].get<std::vector<int32_t>>());
  auto want = item["greedy_ids"].get<std::vector<int32_t>>();
  want.resize(16);
  EXPECT_EQ(j["ids"].get<std::vector<int32_t>>(), want);

  Output tok = keel.run("tokenize -p '" + prompt + "'");
  ASSERT_EQ(tok.code, 0);
  EXPECT_EQ(parse_ids(tok.out), item["prompt_ids"].get<std::vector<int32_t>>());

  // synth takes the embedded model's vocabulary when --tokenizer is not given.
  Output synth = keel.run(
      "synth --preset qwen3-0.6b --layers 1 --type q8_0 "
      "--dims n_embd=64,n_ff=128,n_head=4,n_head_kv=2,head_dim=16,n_vocab=512 -o tiny.gguf");
  ASSERT_EQ(synth.code, 0);
  EXPECT_EQ(keel.files(), (std::vector<std::string>{"keel", "tiny.gguf"}));
  Output tiny = keel.run("run -m tiny.gguf --temp 0 -n 4 --json -p '" + prompt + "'");
  ASSERT_EQ(tiny.code, 0);
  EXPECT_EQ(nlohmann::json::parse(tiny.out)["prompt_ids"].get<std::vector<int32_t>>(),
            item["prompt_ids"].get<std::vector<int32_t>>());
}

TEST(Standalone, DefaultModelByNameInInspectAndPlan) {
  const LoneBinary keel;
  Output inspect = keel.run("inspect default --json");
  ASSERT_EQ(inspect.code, 0);
  auto j = nlohmann::json::parse(inspect.out);
  EXPECT_EQ(j["metadata"]["general.architecture"], "llama");

  Output plan = keel.run("plan -m default -c 512 --json");
  ASSERT_EQ(plan.code, 0);
  EXPECT_TRUE(nlohmann::json::parse(plan.out)["fits"].get<bool>()) << plan.out;

  Output version = keel.run("--version");
  ASSERT_EQ(version.code, 0);
  EXPECT_NE(version.out.find("keel "), std::string::npos);
#ifdef KEEL_HAS_CUDA
  EXPECT_NE(version.out.find("cuda sm_90a"), std::string::npos) << version.out;
#else
  EXPECT_NE(version.out.find("cuda not built"), std::string::npos) << version.out;
#endif

  // A missing file is still an error, not the embedded model.
  EXPECT_EQ(keel.run("run -m default.gguf -p hi").code, 1);
}
