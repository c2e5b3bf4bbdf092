// llama.cpp's tokenizer test vectors (shared/vocab/*.inp/.out): every string of each .inp,
// encoded without BOS and without special-token parsing, must give the .out ids exactly.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

using keel::tokenizer::Tokenizer;

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return {std::istreambuf_iterator<char>(in), {}};
}

struct Case {
  std::string text;
  std::vector<int32_t> ids;
};

// .inp: strings each followed by "\n__ggml_vocab_test__\n"; .out: one line of ids per string.
std::vector<Case> read_cases(const std::string& stem) {
  const std::string inp = read_all(keel::test::shared("vocab/" + stem + ".gguf.inp"));
  const std::string out = read_all(keel::test::shared("vocab/" + stem + ".gguf.out"));
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<Case> cases;
  for (size_t pos = 0; pos < inp.size();) {
    const size_t end = inp.find(sep, pos);
    if (end == std::string::npos) break;
    cases.push_back({inp.substr(pos, end - pos), {}});
    pos = end + sep.size();
  }
  std::istringstream lines(out);
  std::string line;
  size_t i = 0;
  while (std::getline(lines, line) && i < cases.size()) {
    std::istringstream ids(line);
    int32_t id;
    while (ids >> id) cases[i].ids.push_back(id);
    ++i;
  }
  EXPECT_EQ(i, cases.size()) << stem;
  return cases;
}

std::string show(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += std::to_string(id) + " ";
  return s;
}

void expect_vectors(const Tokenizer& tok, const std::string& stem) {
  const std::vector<Case> cases = read_cases(stem);
  ASSERT_GT(cases.size(), 40u);
  int failures = 0;
  for (const Case& c : cases) {
    const std::vector<int32_t> got = tok.encode(c.text, /*add_bos=*/false, /*parse_special=*/false);
    EXPECT_EQ(got, c.ids) << stem << ": text '" << c.text << "'\n got:  " << show(got) << "\n want: " << show(c.ids);
    if (got != c.ids && ++failures > 5) break;
  }
}

class TokenizerVocabVectors : public testing::TestWithParam<const char*> {};

TEST_P(TokenizerVocabVectors, MatchesLlamaCpp) {
  const std::string stem = std::string("ggml-vocab-") + GetParam();
  const auto file = keel::gguf::File::open(keel::test::shared("vocab/" + stem + ".gguf"));
  expect_vectors(Tokenizer::from_gguf(file), stem);
}

// Every vocab GGUF with test vectors that is SentencePiece or byte-level BPE (bert-bge is
// WordPiece; baichuan and gpt-neox come without vectors and are covered elsewhere).
INSTANTIATE_TEST_SUITE_P(Tokenizer, TokenizerVocabVectors,
                         testing::Values("llama-spm", "phi-3", "gpt-2", "deepseek-coder", "deepseek-llm",
                                         "falcon", "mpt", "refact", "starcoder"),
                         [](const testing::TestParamInfo<const char*>& info) {
                           std::string name = info.param;
                           for (char& c : name)
                             if (c == '-') c = '_';
                           return name;
                         });

}  // namespace

namespace keel::test {
// Loaded once for all tokenizer tests (parsing an 11 MB tokenizer.json takes about a second).
const Tokenizer& hf_tokenizer(const std::string& name) {
  static std::map<std::string, Tokenizer> cache;
  auto it = cache.find(name);
  if (it == cache.end())
    it = cache.emplace(name, Tokenizer::from_hf_json(shared("tokenizers/" + name + "/tokenizer.json"))).first;
  return it->second;
}
}  // namespace keel::test

TEST(TokenizerHfJson, Qwen3ReproducesQwen2Vectors) {
  expect_vectors(keel::test::hf_tokenizer("qwen3"), "ggml-vocab-qwen2");
}

TEST(TokenizerHfJson, Qwen3ReproducesDeepseekR1QwenVectors) {
  expect_vectors(keel::test::hf_tokenizer("qwen3"), "ggml-vocab-deepseek-r1-qwen");
}

TEST(TokenizerHfJson, Llama3ReproducesLlamaBpeVectors) {
  expect_vectors(keel::test::hf_tokenizer("llama3"), "ggml-vocab-llama-bpe");
}
