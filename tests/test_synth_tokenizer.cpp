#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gguf/writer.h"
#include "keel/error.h"
#include "test_paths.h"
#include "tools_lib/vocab_import.h"

using namespace keel;

namespace {

// A byte-level BPE tokenizer.json in the shape Hugging Face writes (Qwen2's split regex, merges
// as pairs) with a tokenizer_config.json beside it.
std::string write_tokenizer(const std::string& dir, const std::string& regex) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/tokenizer.json") << R"({"version": "1.0", "added_tokens": [
      {"id": 5, "content": "<|endoftext|>", "special": true},
      {"id": 6, "content": "<|im_end|>", "special": true},
      {"id": 8, "content": "<tool>", "special": false}],
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": )" + regex + R"(}, "behavior": "Isolated"},
      {"type": "ByteLevel", "add_prefix_space": false}]},
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġab": 4},
              "merges": [["a", "b"], ["Ġ", "ab"]]}})";
  std::ofstream(dir + "/tokenizer_config.json") << R"({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
    "bos_token": null, "add_bos_token": false, "chat_template": "{{ messages }}"})";
  return dir + "/tokenizer.json";
}

const char* kQwen2Regex =
    R"("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")";

}  // namespace

TEST(SynthTokenizer, ImportsTokenizerJson) {
  const std::string dir = keel::test::temp_dir() + "keel_tok_json";
  const std::string path = write_tokenizer(dir, kQwen2Regex);
  gguf::Metadata md;
  tools::import_tokenizer(path, "", md);
  EXPECT_EQ(*md.find("tokenizer.ggml.model")->as_string(), "gpt2");
  EXPECT_EQ(*md.find("tokenizer.ggml.pre")->as_string(), "qwen2");
  const gguf::Array* tokens = md.find("tokenizer.ggml.tokens")->as_array();
  const gguf::Array* types = md.find("tokenizer.ggml.token_type")->as_array();
  ASSERT_EQ(tokens->items.size(), 9u);
  EXPECT_EQ(*tokens->items[4].as_string(), "Ġab");
  EXPECT_EQ(*tokens->items[7].as_string(), "[PAD7]");  // a hole in the ids
  EXPECT_EQ(types->items[0].as_int(), 1);
  EXPECT_EQ(types->items[6].as_int(), 3);  // special: CONTROL
  EXPECT_EQ(types->items[7].as_int(), 5);  // hole: UNUSED
  EXPECT_EQ(types->items[8].as_int(), 4);  // added, not special: USER_DEFINED
  const gguf::Array* merges = md.find("tokenizer.ggml.merges")->as_array();
  ASSERT_EQ(merges->items.size(), 2u);
  EXPECT_EQ(*merges->items[1].as_string(), "Ġ ab");
  EXPECT_EQ(md.find("tokenizer.ggml.eos_token_id")->as_int(), 6);
  EXPECT_EQ(md.find("tokenizer.ggml.padding_token_id")->as_int(), 5);
  EXPECT_EQ(md.find("tokenizer.ggml.bos_token_id"), nullptr);
  EXPECT_EQ(*md.find("tokenizer.chat_template")->as_string(), "{{ messages }}");

  tools::pad_vocab(md, 12);
  EXPECT_EQ(tools::tokenizer_vocab_size(md), 12u);
  std::filesystem::remove_all(dir);
}

TEST(SynthTokenizer, UnknownPreTokenizerNeedsAName) {
  const std::string dir = keel::test::temp_dir() + "keel_tok_json_unknown";
  const std::string path = write_tokenizer(dir, R"("\\s+")");
  gguf::Metadata md;
  try {
    tools::import_tokenizer(path, "", md);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--pre"), std::string::npos) << e.what();
  }
  tools::import_tokenizer(path, "qwen35", md);
  EXPECT_EQ(*md.find("tokenizer.ggml.pre")->as_string(), "qwen35");
  std::filesystem::remove_all(dir);
}

TEST(SynthTokenizer, CopiesTheKeysOfAGguf) {
  gguf::Metadata md;
  tools::import_tokenizer(test::shared("models/stories260K.gguf"), "", md);
  EXPECT_EQ(tools::tokenizer_vocab_size(md), 512u);
  EXPECT_EQ(*md.find("tokenizer.ggml.model")->as_string(), "llama");
  for (const auto& [key, value] : md.items()) EXPECT_EQ(key.rfind("tokenizer.", 0), 0u) << key;
}
