// Fast mode end to end: stories260K requantized by `keel quantize` to Q8_0 and Q4_0 (its 64-wide
// rows rule out K-quants) scores a text it was not trained on (written for this test, not from
// TinyStories) with a perplexity within 1% of exact mode's. The 8-bit activations must also
// change the logits (else the fast path was not taken): the perplexity printed to 4 decimals can
// come out the same (Q4_0 under KEEL_CPU_ISA=avx2 did), so raw logit rows are compared.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>
#include <sys/wait.h>

#include "test_paths.h"

namespace {

const char* kText =
    "The lighthouse keeper climbed the spiral stairs every evening at dusk. He carried a small tin "
    "lamp, a notebook with a cracked blue cover, and a thermos of bitter tea. From the top he could "
    "see the fishing boats coming home, their lights bobbing like fireflies over the grey water. One "
    "night a storm rolled in from the north. The wind howled around the tower and rain hammered the "
    "glass. A boat with a torn sail drifted toward the rocks. The keeper turned the great lens as fast "
    "as he could and rang the iron bell until his arms ached. The sailors saw the beam, turned their "
    "boat, and reached the harbour safely. In the morning they brought him fresh bread and a jar of "
    "honey, and the keeper wrote one more line in his notebook before he finally went to sleep.";

std::string run(const std::string& args) {
  const std::string cmd = keel::test::keel_binary() + " " + args + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << cmd << "\n" << out;
  return out;
}

std::vector<float> read_floats(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<float> v;
  float x;
  while (in.read(reinterpret_cast<char*>(&x), sizeof x)) v.push_back(x);
  return v;
}

// The perplexity; the logits at three positions go to `logits`.
double perplexity(const std::string& model, const std::string& text_file, bool exact, std::vector<float>& logits) {
  const std::string dump = keel::test::temp_dir() + "keel_fast_ppl_logits.f32";
  const std::string out = run("perplexity -m " + model + " -f " + text_file + " --kv-type f32 --chunk 64 -t 2" +
                              " --dump-logits " + dump + " --logits-at 1,70,150" + (exact ? " --exact" : ""));
  logits = read_floats(dump);
  std::remove(dump.c_str());
  long long tokens = 0;
  double mean = 0, ppl = 0;
  EXPECT_EQ(std::sscanf(out.c_str(), "tokens %lld  mean_nll %lf  perplexity %lf", &tokens, &mean, &ppl), 3) << out;
  EXPECT_GT(tokens, 150);
  return ppl;
}

TEST(FastPerplexity, Stories260kQ8_0AndQ4_0WithinOnePercentOfExact) {
  const std::string dir = keel::test::temp_dir();
  const std::string text = dir + "keel_fast_ppl.txt";
  std::ofstream(text) << kText;
  for (const std::string type : {"q8_0", "q4_0"}) {
    const std::string model = dir + "keel_fast_ppl_" + type + ".gguf";
    run("quantize --no-progress -t 2 " + keel::test::shared("models/stories260K.gguf") + " " + model + " " + type);
    std::vector<float> exact_logits, fast_logits;
    const double exact = perplexity(model, text, true, exact_logits), fast = perplexity(model, text, false, fast_logits);
    std::printf("[fast ppl] stories260K %s: exact %.4f fast %.4f (%+.3f%%)\n", type.c_str(), exact, fast,
                100.0 * (fast / exact - 1.0));
    ASSERT_EQ(fast_logits.size(), exact_logits.size());
    EXPECT_GE(exact_logits.size(), 3u * 512u) << "three rows of stories260K's 512 logits";
    EXPECT_NE(fast_logits, exact_logits) << type << ": the fast path did not round the activations";
    EXPECT_LT(std::abs(fast / exact - 1.0), 0.01) << type;
    std::remove(model.c_str());
  }
  std::remove(text.c_str());
}

}  // namespace
