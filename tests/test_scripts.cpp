// scripts/cuda_vs_llamacpp.sh against stand-ins for its two tools: keel itself on the CPU (a
// wrapper turns --device cuda into cpu) and a llama-bench that prints the JSON lines the real one
// does (`-o jsonl`: n_prompt, n_gen, n_depth, avg_ts) at known rates and logs its arguments.
// scripts/seed_workload.sh against the same keel and an nvidia-smi that reports a fixed memory.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "test_paths.h"

namespace {

namespace fs = std::filesystem;

using keel::test::Ran;

Ran shell(const std::string& cmd) { return keel::test::run_command("bash -c '" + cmd + "' 2>&1"); }

void write_exec(const fs::path& path, const std::string& text) {
  std::ofstream(path) << text;
  fs::permissions(path, fs::perms::owner_all);
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A table row's columns, trimmed: model, test, keel, llama.cpp, ratio, TFLOP/s, GB/s.
std::vector<std::string> row_of(const std::string& table, const std::string& test) {
  std::istringstream lines(table);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("| " + test + " |") == std::string::npos) continue;
    std::vector<std::string> cols;
    std::istringstream in(line.substr(1));
    for (std::string c; std::getline(in, c, '|');) cols.push_back(std::regex_replace(c, std::regex("^ +| +$"), ""));
    return cols;
  }
  return {};
}

double number(std::string s) {
  s.erase(std::remove(s.begin(), s.end(), ','), s.end());
  return std::stod(s);
}

// A fresh directory for the running test, holding `keel`: the real one on the CPU (--device cuda
// becomes cpu), each call's arguments logged to args.log.
fs::path test_dir_with_keel() {
  const fs::path dir = fs::path(keel::test::temp_dir()) / testing::UnitTest::GetInstance()->current_test_info()->name();
  fs::remove_all(dir);
  fs::create_directories(dir);
  write_exec(dir / "keel", "#!/usr/bin/env bash\necho \"keel $*\" >> " + (dir / "args.log").string() +
                               "\nargs=(); for a in \"$@\"; do [ \"$a\" = cuda ] && a=cpu; args+=(\"$a\"); done\nexec " +
                               keel::test::keel_binary() + " \"${args[@]}\"\n");
  return dir;
}

class CudaVsLlamacpp : public testing::Test {
 protected:
  void SetUp() override {
    if (shell("command -v python3").code != 0) GTEST_SKIP() << "the script needs python3";
    dir_ = test_dir_with_keel();
    // The file the script would synthesize for PRESET:TYPE stub:q8_0 is already there.
    fs::copy_file(keel::test::shared("models/stories260K.gguf"), dir_ / "keel-stub-q8_0.gguf",
                  fs::copy_options::overwrite_existing);
    // Prefill of p tokens at 1000 + p tok/s, decode at depth d at 50 + d tok/s.
    write_exec(dir_ / "llama-bench", R"(#!/usr/bin/env python3
import json, sys
a = sys.argv[1:]
open(")" + (dir_ / "args.log").string() + R"(", "a").write("llama " + " ".join(a) + "\n")
arg = lambda flag, d: a[a.index(flag) + 1] if flag in a else d
for d in map(int, arg("-d", "0").split(",")):
    for p in map(int, arg("-p", "512").split(",")):
        if p: print(json.dumps({"n_prompt": p, "n_gen": 0, "n_depth": d, "avg_ts": 1000.0 + p,
                                "samples_ts": [1000.0 + p + i for i in range(int(arg("-r", "5")))]}))
    for n in map(int, arg("-n", "128").split(",")):
        if n: print(json.dumps({"n_prompt": 0, "n_gen": n, "n_depth": d, "avg_ts": 50.0 + d,
                                "samples_ts": [50.0 + d + i for i in range(int(arg("-r", "5")))]}))
)");
  }
  Ran script(const std::string& env, const std::string& models = "stub:q8_0") {
    return shell(env + " DIR=" + dir_.string() + " " + KEEL_SOURCE_DIR + "/scripts/cuda_vs_llamacpp.sh " +
                 (dir_ / "keel").string() + " " + (dir_ / "llama-bench").string() + " " + models);
  }
  std::string args_log() { return read_text(dir_ / "args.log"); }
  fs::path dir_;
};

// Every test both tools ran is one row, the llama.cpp column is what llama-bench printed for that
// test, and the ratio is keel's rate over it.
TEST_F(CudaVsLlamacpp, TablesEveryTestWithItsRatio) {
  const Ran r = script("PROMPTS=32 DEPTHS=0,8 GEN=4");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("| model | test | keel tok/s | llama.cpp tok/s | keel / llama.cpp |"), std::string::npos) << r.out;
  const struct { std::string test; double llama; } expected[] = {{"pp32", 1032.0}, {"tg4", 50.0}, {"tg4 @ d8", 58.0}};
  for (const auto& e : expected) {
    const auto cols = row_of(r.out, e.test);
    ASSERT_EQ(cols.size(), 7u) << e.test << "\n" << r.out;
    EXPECT_EQ(cols[0], "stub:q8_0");
    const double keel = number(cols[2]), llama = number(cols[3]);
    EXPECT_GT(keel, 0.0) << e.test;
    EXPECT_DOUBLE_EQ(llama, e.llama) << e.test;
    EXPECT_NEAR(number(cols[4].substr(0, cols[4].size() - 1)), keel / llama, 0.006 + 0.001 * keel / llama) << e.test;
  }
  const std::string log = args_log();
  EXPECT_NE(log.find("-ngl 99 -fa 1 -ub 2048 -b 2048"), std::string::npos) << log;
  EXPECT_EQ(log.find("--no-warmup"), std::string::npos) << log;
  EXPECT_EQ(r.out.find("Each repetition"), std::string::npos) << "one repetition: no second table\n" << r.out;
}

// REPS above 1: a second table gives each test's repetitions in order, keel's (as its --json
// samples) beside llama-bench's samples_ts.
TEST_F(CudaVsLlamacpp, RepetitionsTableEachRateInOrder) {
  const Ran r = script("PROMPTS=32 DEPTHS=0,8 GEN=4 REPS=3");
  ASSERT_EQ(r.code, 0) << r.out;
  const size_t second = r.out.find("Each repetition, in order");
  ASSERT_NE(second, std::string::npos) << r.out;
  const std::string table = r.out.substr(second);
  const struct { std::string test, llama; } expected[] = {
      {"pp32", "1,032.0 / 1,033.0 / 1,034.0"}, {"tg4", "50.0 / 51.0 / 52.0"}, {"tg4 @ d8", "58.0 / 59.0 / 60.0"}};
  for (const auto& e : expected) {
    const auto cols = row_of(table, e.test);
    ASSERT_EQ(cols.size(), 4u) << e.test << "\n" << table;
    EXPECT_EQ(cols[3], e.llama) << e.test;
    std::vector<double> keel;
    std::istringstream in(cols[2]);
    for (std::string x; std::getline(in, x, '/');) keel.push_back(number(x));
    ASSERT_EQ(keel.size(), 3u) << cols[2];
    const double mean = (keel[0] + keel[1] + keel[2]) / 3;
    EXPECT_NEAR(mean, number(row_of(r.out, e.test)[2]), 0.05 + 1e-3 * mean) << e.test;  // the first table's rate
  }
  EXPECT_NE(args_log().find("-r 3"), std::string::npos) << args_log();
}

// GEN=0: the prefill rows alone, no decode run by either tool; WARMUP=0 reaches both tools.
TEST_F(CudaVsLlamacpp, GenZeroSkipsDecodeAndWarmupZeroReachesBothTools) {
  const Ran r = script("PROMPTS=16,32 GEN=0 WARMUP=0");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(row_of(r.out, "pp16").size(), 7u) << r.out;
  EXPECT_EQ(row_of(r.out, "pp32").size(), 7u) << r.out;
  EXPECT_EQ(r.out.find("| tg"), std::string::npos) << r.out;
  const std::string log = args_log();
  EXPECT_EQ(log.find("-n 0 -d"), std::string::npos) << log;
  EXPECT_EQ(log.find("-p 0"), std::string::npos) << log;
  EXPECT_NE(log.find("llama -m"), std::string::npos) << log;
  std::istringstream lines(log);
  int runs = 0;
  for (std::string line; std::getline(lines, line); ++runs) EXPECT_NE(line.find("--no-warmup"), std::string::npos) << line;
  EXPECT_EQ(runs, 2) << log;  // one llama-bench and one keel bench
}

TEST_F(CudaVsLlamacpp, RefusesAModelWithoutItsType) {
  const Ran r = script("", "stub");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("is not PRESET:TYPE"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir_ / "args.log"));  // refused before either tool ran
}

// scripts/seed_workload.sh with `keel` (from test_dir_with_keel) and a stand-in nvidia-smi in
// dir, 100 tokens, a short prompt of 64, the model (stories260K) where it would be synthesized.
Ran seed_workload(const fs::path& dir) {
  fs::create_directories(dir / "bin" / "work");
  write_exec(dir / "bin" / "nvidia-smi", "#!/usr/bin/env bash\necho 1234\nexec sleep 60\n");
  fs::copy_file(keel::test::shared("models/stories260K.gguf"), dir / "bin" / "work" / "stub-q8_0.gguf",
                fs::copy_options::overwrite_existing);
  return shell("PATH=" + (dir / "bin").string() + ":$PATH PRESET=stub SHORT=64 " + KEEL_SOURCE_DIR +
               "/scripts/seed_workload.sh " + (dir / "keel").string() + " " + (dir / "bin" / "work").string() +
               " 100 q8_0");
}

// The seed workload's three runs, then the short prompt's rate sustained (a warm-up and 20 runs,
// never --no-warmup) and the whole-GPU run's prefill rate over it.
TEST(SeedWorkload, RatesTheLongPromptAgainstTheShortOneSustained) {
  if (shell("command -v python3").code != 0) GTEST_SKIP() << "the script needs python3";
  const fs::path dir = test_dir_with_keel();
  const Ran r = seed_workload(dir);
  ASSERT_EQ(r.code, 0) << r.out;
  std::smatch first, last;
  ASSERT_TRUE(std::regex_search(r.out, first, std::regex("keel: prompt 100 tokens, prefill ([0-9.]+) tok/s"))) << r.out;
  ASSERT_TRUE(std::regex_search(r.out, last,
                                std::regex("prefill: 100 tokens ([0-9.]+) tok/s, 64 tokens sustained ([0-9.]+) tok/s: "
                                           "ratio ([0-9.]+)")))
      << r.out;
  const double long_rate = std::stod(last[1]), short_rate = std::stod(last[2]);
  EXPECT_NEAR(long_rate, std::stod(first[1]), 0.051) << "the whole-GPU run's rate, the first of three\n" << r.out;
  EXPECT_GT(short_rate, 0.0);
  EXPECT_NEAR(std::stod(last[3]), long_rate / short_rate, 0.0005 + 0.001 * long_rate / short_rate) << r.out;
  const std::string log = read_text(dir / "args.log");
  EXPECT_NE(log.find("bench --device cuda -m " + (dir / "bin" / "work" / "stub-q8_0.gguf").string() + " -p 64 -n 0 -r 20"),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("--no-warmup"), std::string::npos) << log;
}

// A whole-GPU run that is refused gives no ratio (not a ratio of 0 or of another run's rate).
TEST(SeedWorkload, NoRatioWithoutTheWholeGpuRun) {
  if (shell("command -v python3").code != 0) GTEST_SKIP() << "the script needs python3";
  const fs::path dir = test_dir_with_keel();
  // keel refuses a run without --budget (the whole-GPU one), as if the model did not fit.
  const std::string real = read_text(dir / "keel");
  write_exec(dir / "keel", "#!/usr/bin/env bash\nif [ \"$1\" = run ] && ! [[ \" $* \" == *\" --budget \"* ]]; then\n"
                           "  echo \"error: refused (stand-in)\" >&2; exit 1\nfi\n" + real.substr(real.find('\n') + 1));
  const Ran r = seed_workload(dir);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("error: refused (stand-in)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("keel: prompt 100 tokens"), std::string::npos) << "the budgeted runs still ran\n" << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("prefill: 64 tokens sustained [0-9.]+ tok/s; no ratio"))) << r.out;
  EXPECT_EQ(r.out.find("ratio 0"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(": ratio"), std::string::npos) << r.out;
}

}  // namespace
