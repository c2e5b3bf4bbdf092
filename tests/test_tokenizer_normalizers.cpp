// tokenizer.json normalizers and decoders against Hugging Face `tokenizers` 0.23.2: the ids,
// normalized texts and decoded texts in tests/data/normalizer_ids.json were computed by
// `tokenizers` itself (tests/data/README.md says how), for the real Qwen3 (NFC) and Llama-3 (no
// normalizer) files and for small hand-written files with one normalizer each.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fixture_ref.h"
#include "test_paths.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_data.h"

using keel::tokenizer::Tokenizer;

namespace {

const nlohmann::json& expected() {
  static const nlohmann::json j = keel::test::read_json(keel::test::data("normalizer_ids.json"));
  return j;
}

std::string tokenizer_path(const std::string& name) {
  if (name == "qwen3" || name == "llama3") return keel::test::shared("tokenizers/" + name + "/tokenizer.json");
  return keel::test::data("normalizers/" + name + ".json");
}

// Every text of the data set through one tokenizer: ids, normalizer output and decode.
void expect_like_hf(const std::string& name) {
  const nlohmann::json& rows = expected()["tokenizers"][name];
  ASSERT_TRUE(rows.is_array()) << name << ": " << rows.dump();
  const Tokenizer tok = Tokenizer::from_hf_json(tokenizer_path(name));
  EXPECT_TRUE(tok.warnings().empty()) << tok.warnings().front();
  int changed = 0;
  for (const nlohmann::json& row : rows) {
    const std::string text = row["text"];
    const std::string normalized = row["normalized"];
    changed += normalized != text;
    EXPECT_EQ(tok.internals().normalizer.apply(text), normalized) << name << ": " << text;
    const std::vector<int32_t> ids = row["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode(text, false, false), ids) << name << ": " << text;
    EXPECT_EQ(tok.decode(ids), row["decoded"].get<std::string>()) << name << ": " << text;
  }
  // Each hand-written normalizer changes some of the texts (else this test could not fail).
  if (name != "llama3") {
    EXPECT_GT(changed, 0) << name;
  }
}

}  // namespace

TEST(TokenizerNormalizers, DataSetComesFromHfTokenizers) {
  EXPECT_EQ(expected()["tokenizers_version"], "0.23.2");
  EXPECT_EQ(expected()["tokenizers"].size(), 14u);
}

TEST(TokenizerNormalizers, Qwen3AppliesNfc) {
  expect_like_hf("qwen3");
  // Composed and decomposed accents give the same ids once NFC is applied.
  const Tokenizer tok = Tokenizer::from_hf_json(tokenizer_path("qwen3"));
  EXPECT_EQ(tok.encode("caf\xC3\xA9", false, false), tok.encode("cafe\xCC\x81", false, false));
}

TEST(TokenizerNormalizers, Llama3HasNoNormalizer) { expect_like_hf("llama3"); }
TEST(TokenizerNormalizers, Nfc) { expect_like_hf("nfc"); }
TEST(TokenizerNormalizers, Nfd) { expect_like_hf("nfd"); }
TEST(TokenizerNormalizers, Nfkc) { expect_like_hf("nfkc"); }
TEST(TokenizerNormalizers, Nfkd) { expect_like_hf("nfkd"); }
TEST(TokenizerNormalizers, Lowercase) { expect_like_hf("lowercase"); }
TEST(TokenizerNormalizers, ReplaceString) { expect_like_hf("replace_string"); }
TEST(TokenizerNormalizers, ReplaceRegex) { expect_like_hf("replace_regex"); }
TEST(TokenizerNormalizers, Prepend) { expect_like_hf("prepend"); }
TEST(TokenizerNormalizers, Strip) { expect_like_hf("strip"); }
TEST(TokenizerNormalizers, StripLeft) { expect_like_hf("strip_left"); }
TEST(TokenizerNormalizers, StripAccents) { expect_like_hf("strip_accents"); }
// NFKC, Lowercase, Replace (regex and string), Strip and Prepend chained, with a decoder
// (ByteLevel, Replace, Strip) that undoes the spaces.
TEST(TokenizerNormalizers, SequenceWithDecoder) { expect_like_hf("sequence"); }

// Invalid UTF-8 never throws: the valid runs around a stray byte are normalized, the byte kept.
TEST(TokenizerNormalizers, InvalidUtf8PassesThrough) {
  const Tokenizer tok = Tokenizer::from_hf_json(tokenizer_path("nfkc"));
  EXPECT_EQ(tok.internals().normalizer.apply("\xEF\xAC\x81\xFF\xEF\xAC\x81"), "fi\xFF" "fi");
  EXPECT_EQ(tok.decode(tok.encode("\xFF\xC3", false, false)), "\xFF\xC3");
}

TEST(TokenizerNormalizers, UnknownNormalizerIsNamedInAWarning) {
  std::vector<std::string> unsupported;
  const auto n = keel::tokenizer::Normalizer::from_json(
      nlohmann::json::parse(R"({"type":"Sequence","normalizers":[{"type":"NFC"},{"type":"Precompiled"}]})"), unsupported);
  EXPECT_EQ(unsupported, std::vector<std::string>{"Precompiled"});
  EXPECT_FALSE(n.empty());
}
