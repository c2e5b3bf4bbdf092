// End-to-end tests of the keel binary: golden greedy runs, perplexity against the fixture
// reference, inspect, and errors (exit codes, messages, nothing on stdout).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "fixture_ref.h"
#include "test_paths.h"

using namespace keel;

namespace {

struct Output {
  int code;
  std::string out;
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

Output keel_cli(const std::string& args, bool merge_stderr = false) {
  std::string cmd = test::keel_binary() + " " + args + (merge_stderr ? " 2>&1" : " 2>/dev/null");
  FILE* p = popen(cmd.c_str(), "r");
  Output o{-1, ""};
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) o.out.append(buf.data(), n);
  int status = pclose(p);
  o.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return o;
}

}  // namespace

TEST(Cli, RunGreedyEqualsLlamaCppGolden) {
  auto golden = test::read_json(test::shared("golden/stories260K.greedy.json"));
  for (const auto& item : golden) {
    const std::string prompt = item["prompt"];
    Output o = keel_cli("run --temp 0 -n 64 --json -p " + quote(prompt));
    ASSERT_EQ(o.code, 0) << prompt;
    auto j = nlohmann::json::parse(o.out);
    EXPECT_EQ(j["prompt_ids"].get<std::vector<int32_t>>(), item["prompt_ids"].get<std::vector<int32_t>>()) << prompt;
    EXPECT_EQ(j["ids"].get<std::vector<int32_t>>(), item["greedy_ids"].get<std::vector<int32_t>>()) << prompt;
    // Streamed text continues the prompt, so a first piece "▁a" prints as " a"; llama.cpp's
    // greedy_text detokenizes the ids on their own, which drops that leading space.
    Output text = keel_cli("run --temp 0 -n 64 -p " + quote(prompt));
    std::string streamed = text.out;
    if (!streamed.empty() && streamed[0] == ' ') streamed.erase(0, 1);
    EXPECT_EQ(streamed, item["greedy_text"].get<std::string>() + "\n") << prompt;
  }
}

TEST(Cli, RunFromIdsFileWithSmallChunks) {
  auto golden = test::read_json(test::shared("golden/stories260K.greedy.json"));
  const auto& item = golden[1];
  std::string path = keel::test::temp_dir() + "keel_ids.txt";
  std::string ids;
  for (int32_t id : item["prompt_ids"].get<std::vector<int32_t>>()) ids += std::to_string(id) + " ";
  std::ofstream(path) << ids;
  Output o = keel_cli("run --temp 0 -n 16 --chunk 3 --json --ids-file " + path);
  ASSERT_EQ(o.code, 0);
  auto want = item["greedy_ids"].get<std::vector<int32_t>>();
  want.resize(16);
  EXPECT_EQ(nlohmann::json::parse(o.out)["ids"].get<std::vector<int32_t>>(), want);
}

// keel perplexity over prompt A equals the mean NLL computed from the HF float64 logits.
TEST(Cli, PerplexityMatchesReferenceNll) {
  test::Fixture fx = test::load_fixture("tiny-qwen3");
  auto ref = test::read_rows("tiny-qwen3.logits.f32", fx.n_vocab);
  double nll = 0;
  for (size_t i = 0; i + 1 < fx.prompt_a.size(); ++i)
    nll -= test::log_softmax(ref.at(i).data(), fx.n_vocab)[static_cast<size_t>(fx.prompt_a[i + 1])];
  nll /= static_cast<double>(fx.prompt_a.size() - 1);
  std::string path = keel::test::temp_dir() + "keel_ppl_ids.txt";
  std::string ids;
  for (int32_t id : fx.prompt_a) ids += std::to_string(id) + "\n";
  std::ofstream(path) << ids;
  for (std::string chunk : {"5", "512"}) {
    Output o = keel_cli("perplexity -m " + test::shared("fixtures/tiny-qwen3.gguf") + " --kv-type f32 --chunk " + chunk +
                        " --ids-file " + path);
    ASSERT_EQ(o.code, 0) << o.out;
    long long tokens = 0;
    double mean = 0, ppl = 0;
    ASSERT_EQ(std::sscanf(o.out.c_str(), "tokens %lld  mean_nll %lf  perplexity %lf", &tokens, &mean, &ppl), 3) << o.out;
    EXPECT_EQ(tokens, static_cast<long long>(fx.prompt_a.size() - 1));
    EXPECT_NEAR(mean, nll, 1e-4);
    EXPECT_NEAR(ppl, std::exp(nll), std::exp(nll) * 1e-3);
  }
}

TEST(Cli, InspectListsTensorsAndMetadata) {
  Output o = keel_cli("inspect " + test::shared("models/stories260K.gguf"));
  ASSERT_EQ(o.code, 0);
  EXPECT_NE(o.out.find("general.architecture"), std::string::npos);
  EXPECT_NE(o.out.find("blk.4.ffn_down.weight"), std::string::npos);
  Output j = keel_cli("inspect --json " + test::shared("models/stories260K.gguf"));
  ASSERT_EQ(j.code, 0);
  EXPECT_EQ(nlohmann::json::parse(j.out)["tensors"].size(), 48u);
}

TEST(Cli, ErrorsHaveExitCodesAndMessages) {
  Output missing = keel_cli("run -m /nonexistent.gguf -p hi", true);
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.out.find("/nonexistent.gguf"), std::string::npos) << missing.out;
  Output v1 = keel_cli("run -m " + test::shared("models/tinyllamas-stories-260k-f32.gguf") + " -p hi", true);
  EXPECT_EQ(v1.code, 1);
  EXPECT_NE(v1.out.find("GGUF v1, not supported"), std::string::npos) << v1.out;
  Output usage = keel_cli("run --no-such-flag", true);
  EXPECT_EQ(usage.code, 2);
  EXPECT_NE(usage.out.find("--no-such-flag"), std::string::npos);
  EXPECT_EQ(keel_cli("frobnicate").code, 2);
  Output too_long = keel_cli("run -c 4 -p 'Once upon a time there was a dog'", true);
  EXPECT_EQ(too_long.code, 1);
  EXPECT_NE(too_long.out.find("context"), std::string::npos) << too_long.out;
  // A GPU this machine does not have (none has 8 here): refused before loading, with the way out.
  for (const std::string cmd : {"run -n 1 -p hi", "bench -p 8 -n 1", "serve --port 0"}) {
    Output no_gpu = keel_cli(cmd + " --device cuda:7 --budget 1GB", true);
    EXPECT_EQ(no_gpu.code, 1) << cmd;
    EXPECT_NE(no_gpu.out.find("--device cuda:7: "), std::string::npos) << no_gpu.out;
    EXPECT_NE(no_gpu.out.find("--device cpu runs on the CPU"), std::string::npos) << no_gpu.out;
  }
  Output bad_kv = keel_cli("run --kv-type q3 -p hi", true);
  EXPECT_EQ(bad_kv.code, 2);
  EXPECT_EQ(keel_cli("run --help").code, 0);
}

// keel bench's TFLOP/s against the arithmetic of stories260K's shapes counted by hand (5 layers:
// q and o 64 x 64, k and v 64 x 32, gate, up and down 64 x 172; head 512 x 64; 8 heads of 8):
// 2 x 226,560 FLOP a token, 65,536 a logits row, 4 x 5 x 8 x 8 = 1,280 a (token, key); and the
// memory beside the plan.
TEST(Cli, BenchCountsArithmeticAndMemory) {
  Output o = keel_cli("bench --device cpu -p 16 -n 2 -d 0,8 -r 1 --no-warmup --json");
  ASSERT_EQ(o.code, 0) << o.out;
  const auto j = nlohmann::json::parse(o.out);
  ASSERT_EQ(j.size(), 4u);
  for (const auto& r : j) {
    const int64_t depth = r["depth"];
    const bool prefill = !r["n_prompt"].is_null();
    const double n = prefill ? r["n_prompt"].get<double>() : r["n_gen"].get<double>();
    // A decode at depth 0 follows one prefilled token: its steps are at positions 1 and 2.
    const double first = prefill ? double(depth) : std::max(1.0, double(depth));
    const double keys = n * first + n * (n + 1) / 2;
    const double flops = n * 453120.0 + (prefill ? 1.0 : n) * 65536.0 + keys * 1280.0;
    const double rate = prefill ? r["prefill_tok_s"].get<double>() : r["decode_tok_s"].get<double>();
    EXPECT_NEAR(r["tflop_s"].get<double>(), flops * rate / n / 1e12, 1e-9 * flops * rate / n / 1e12)
        << (prefill ? "prefill" : "decode") << " at depth " << depth;
    EXPECT_GT(r["session_allocated_bytes"].get<uint64_t>(), 0u);
    EXPECT_LE(r["session_allocated_bytes"].get<uint64_t>(), r["plan_bytes"].get<uint64_t>());
    EXPECT_GT(r["peak_rss_bytes"].get<uint64_t>(), 0u);
    EXPECT_TRUE(r["device_in_use_bytes"].is_null()) << "no CUDA device in a CPU run";
  }
  // Each repetition's rate, in order; their mean and standard deviation are the record's.
  Output reps = keel_cli("bench --device cpu -p 16 -n 2 -r 3 --no-warmup --json");
  ASSERT_EQ(reps.code, 0) << reps.out;
  for (const auto& r : nlohmann::json::parse(reps.out)) {
    const auto samples = r["samples_tok_s"].get<std::vector<double>>();
    ASSERT_EQ(samples.size(), 3u);
    double sum = 0, sq = 0;
    for (double x : samples) sum += x;
    const double mean = sum / 3;
    for (double x : samples) sq += (x - mean) * (x - mean);
    const double rate = r["n_prompt"].is_null() ? r["decode_tok_s"].get<double>() : r["prefill_tok_s"].get<double>();
    EXPECT_NEAR(rate, mean, 1e-9 * mean);
    EXPECT_NEAR(r["stddev_tok_s"].get<double>(), std::sqrt(sq / 2), 1e-9 * mean);
  }
  Output text = keel_cli("bench --device cpu -p 8 -n 1 -r 1", true);
  ASSERT_EQ(text.code, 0) << text.out;
  EXPECT_NE(text.out.find("TFLOP/s"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("measured: session allocated"), std::string::npos) << text.out;
}

// An F16 llama with the 32000-token Llama-2 vocabulary loads and generates, greedy twice alike.
TEST(Cli, LlamaTinyRandomF16Generates) {
  const std::string cmd = "run -m " + test::shared("models/llama-2-tiny-random.gguf") + " -p 'Hello world' -n 8 --temp 0 --json";
  Output a = keel_cli(cmd), b = keel_cli(cmd);
  ASSERT_EQ(a.code, 0);
  auto ja = nlohmann::json::parse(a.out), jb = nlohmann::json::parse(b.out);
  EXPECT_EQ(ja["prompt_ids"][0], 1);  // BOS
  EXPECT_EQ(ja["ids"].size(), 8u);
  EXPECT_EQ(ja["ids"], jb["ids"]);
  for (int32_t id : ja["ids"].get<std::vector<int32_t>>()) EXPECT_LT(id, 32000);
}

namespace {

std::string write_ids(const std::string& name, const std::vector<int32_t>& ids) {
  const std::string path = keel::test::temp_dir() + name;
  std::ofstream out(path);
  for (int32_t id : ids) out << id << " ";
  return path;
}

std::vector<float> read_f32_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes{std::istreambuf_iterator<char>(in), {}};
  std::vector<float> out(bytes.size() / sizeof(float));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(float));
  return out;
}

}  // namespace

// --dump-logits writes the rows asked for, in the order asked, equal to the HF float64 reference
// of tiny-qwen35's prompt B (1500 tokens through chunks of 100).
TEST(Cli, PerplexityDumpsLogitsAtPositions) {
  test::Fixture fx = test::load_fixture("tiny-qwen35");
  auto ref = test::read_rows("tiny-qwen35.logits.f32", fx.n_vocab);  // rows 48.. are prompt B's positions
  const std::string ids = write_ids("keel_dump_ids.txt", fx.prompt_b);
  const std::string out = keel::test::temp_dir() + "keel_dump.f32";
  std::vector<size_t> order;  // indices into positions_b, last first
  std::string list;
  for (size_t k = fx.positions_b.size(); k-- > 0;) {
    order.push_back(k);
    if (!list.empty()) list += ',';
    list += std::to_string(fx.positions_b[k]);
  }
  Output o = keel_cli("perplexity -m " + test::shared("fixtures/tiny-qwen35.gguf") +
                      " --kv-type f32 --exact --chunk 100 --ids-file " + ids + " --dump-logits " + out + " --logits-at " + list);
  ASSERT_EQ(o.code, 0) << o.out;
  const std::vector<float> rows = read_f32_file(out);
  ASSERT_EQ(rows.size(), order.size() * static_cast<size_t>(fx.n_vocab));
  for (size_t r = 0; r < order.size(); ++r) {
    const std::vector<double> got = test::log_softmax(rows.data() + r * fx.n_vocab, fx.n_vocab);
    const std::vector<double> want = test::log_softmax(ref.at(48 + order[r]).data(), fx.n_vocab);
    double diff = 0;
    for (int i = 0; i < fx.n_vocab; ++i) diff = std::max(diff, std::abs(got[i] - want[i]));
    EXPECT_LT(diff, 1e-3) << "position " << fx.positions_b[order[r]];
  }
  std::remove(out.c_str());
}

TEST(Cli, PerplexityDumpLogitsUsageErrors) {
  const std::string ids = write_ids("keel_dump_err_ids.txt", {1, 200, 300, 400});
  const std::string out = keel::test::temp_dir() + "keel_dump_err.f32";
  const std::string base = "perplexity --ids-file " + ids + " ";
  Output alone = keel_cli(base + "--dump-logits " + out, true);
  EXPECT_EQ(alone.code, 2);
  EXPECT_NE(alone.out.find("--logits-at"), std::string::npos) << alone.out;
  EXPECT_EQ(keel_cli(base + "--logits-at 1", true).code, 2);
  Output bad = keel_cli(base + "--dump-logits " + out + " --logits-at 1,x", true);
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.out.find("'x'"), std::string::npos) << bad.out;
  Output past = keel_cli(base + "--dump-logits " + out + " --logits-at 0,4", true);
  EXPECT_EQ(past.code, 2);
  EXPECT_NE(past.out.find("past the last token"), std::string::npos) << past.out;
  EXPECT_FALSE(std::ifstream(out).good());
  Output unwritable = keel_cli(base + "--dump-logits /nonexistent/dir/x.f32 --logits-at 3", true);
  EXPECT_EQ(unwritable.code, 1);
  EXPECT_NE(unwritable.out.find("/nonexistent/dir/x.f32"), std::string::npos) << unwritable.out;
}

// --ignore-eos: generation goes on through the end-of-text token. After the first 79 ids of
// tiny-qwen35's prompt B the model's top token is </s> (id 2), 0.5 ahead of the next.
TEST(Cli, RunIgnoreEosGoesPastEndOfText) {
  test::Fixture fx = test::load_fixture("tiny-qwen35");
  const std::string ids = write_ids("keel_eos_ids.txt", std::vector<int32_t>(fx.prompt_b.begin(), fx.prompt_b.begin() + 79));
  const std::string cmd = "run -m " + test::shared("fixtures/tiny-qwen35.gguf") + " --temp 0 --json -n 3 --ids-file " + ids;
  Output plain = keel_cli(cmd);
  ASSERT_EQ(plain.code, 0);
  EXPECT_TRUE(nlohmann::json::parse(plain.out)["ids"].empty()) << plain.out;
  Output more = keel_cli(cmd + " --ignore-eos");
  ASSERT_EQ(more.code, 0);
  const auto got = nlohmann::json::parse(more.out)["ids"].get<std::vector<int32_t>>();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], 2);
}
