// Tokenizer behaviour beyond the vector files: the stories260K golden prompts, special tokens,
// decoding and round trips on random text, invalid UTF-8, streaming, errors and the CLI.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gguf/gguf.h"
#include "keel/error.h"
#include "test_paths.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/spm.h"
#include "tokenizer/tokenizer_data.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

using keel::tokenizer::DecodeOptions;
using keel::tokenizer::StreamDecoder;
using keel::tokenizer::Tokenizer;

namespace keel::test {
const Tokenizer& hf_tokenizer(const std::string& name);  // test_tokenizer_vectors.cpp
}

namespace {

const Tokenizer& gguf_tokenizer(const std::string& rel) {
  static std::map<std::string, Tokenizer> cache;
  auto it = cache.find(rel);
  if (it == cache.end())
    it = cache.emplace(rel, Tokenizer::from_gguf(keel::gguf::File::open(keel::test::shared(rel)))).first;
  return it->second;
}
const Tokenizer& llama_spm() { return gguf_tokenizer("vocab/ggml-vocab-llama-spm.gguf"); }
const Tokenizer& gpt2() { return gguf_tokenizer("vocab/ggml-vocab-gpt-2.gguf"); }
const Tokenizer& deepseek_llm() { return gguf_tokenizer("vocab/ggml-vocab-deepseek-llm.gguf"); }
const Tokenizer& qwen3() { return keel::test::hf_tokenizer("qwen3"); }
const Tokenizer& llama3() { return keel::test::hf_tokenizer("llama3"); }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const keel::Error& e) {
    return e.what();
  }
  return "";
}

// Random text from the kinds of characters tokenizers trip on.
std::string random_text(std::mt19937& rng, size_t n_chars) {
  static const std::vector<std::pair<uint32_t, uint32_t>> ranges = {
      {'a', 'z'}, {'A', 'Z'}, {'0', '9'}, {'!', '/'}, {':', '@'}, {0xC0, 0xFF},     // Latin-1 letters
      {0x300, 0x36F},                                                             // combining marks
      {0x391, 0x3C9}, {0x410, 0x44F}, {0x5D0, 0x5EA}, {0x627, 0x64A}, {0x900, 0x97F},  // Greek .. Devanagari
      {0x3041, 0x3096}, {0x4E00, 0x9FFF}, {0xAC00, 0xD7A3},                       // kana, CJK, Hangul
      {0x1F300, 0x1F64F}, {0x1F900, 0x1F9FF}, {0x20000, 0x2A6DF},                 // emoji, CJK ext. B (4 bytes)
      {0x2000, 0x200D}, {0x3000, 0x3002}, {0xFF01, 0xFF5E},                       // odd spaces, ZWJ, fullwidth
  };
  std::string s;
  std::uniform_int_distribution<size_t> pick(0, ranges.size() + 2);
  while (n_chars-- > 0) {
    const size_t k = pick(rng);
    if (k >= ranges.size()) {  // whitespace runs, sometimes long
      static const char kSpace[] = {' ', ' ', ' ', '\n', '\t', '\r'};
      const size_t run = std::uniform_int_distribution<size_t>(1, k == ranges.size() ? 40 : 3)(rng);
      for (size_t i = 0; i < run; ++i) s.push_back(kSpace[std::uniform_int_distribution<size_t>(0, 5)(rng)]);
      continue;
    }
    const auto [lo, hi] = ranges[k];
    keel::tokenizer::utf8::append(s, std::uniform_int_distribution<uint32_t>(lo, hi)(rng));
  }
  return s;
}

}  // namespace

TEST(TokenizerGolden, Stories260KPromptIdsMatchLlamaCpp) {
  std::ifstream in(keel::test::shared("golden/stories260K.greedy.json"));
  const auto golden = nlohmann::json::parse(in);
  const Tokenizer& tok = gguf_tokenizer("models/stories260K.gguf");
  ASSERT_TRUE(tok.add_bos_by_default());
  EXPECT_EQ(tok.bos(), 1);
  EXPECT_EQ(tok.eos(), 2);
  ASSERT_FALSE(golden.empty());
  for (const auto& g : golden) {
    const std::string prompt = g.at("prompt");
    EXPECT_EQ(tok.encode(prompt, tok.add_bos_by_default(), false), g.at("prompt_ids").get<std::vector<int32_t>>())
        << prompt;
    EXPECT_EQ(tok.decode(g.at("prompt_ids").get<std::vector<int32_t>>()), prompt);
  }
}

TEST(TokenizerSpm, BosSpacePrefixAndDecode) {
  const Tokenizer& tok = llama_spm();
  EXPECT_EQ(tok.n_vocab(), 32000);
  EXPECT_EQ(tok.encode("Hello world", true, false), (std::vector<int32_t>{1, 15043, 3186}));
  EXPECT_EQ(tok.encode("Hello world", false, false), (std::vector<int32_t>{15043, 3186}));
  EXPECT_EQ(tok.token_text(15043), "\xE2\x96\x81Hello");
  EXPECT_EQ(tok.token_to_piece(15043), " Hello");
  EXPECT_EQ(tok.decode({1, 15043, 3186}), "Hello world");
  EXPECT_EQ(tok.decode({15043, 3186}), "Hello world");
  DecodeOptions raw;
  raw.skip_leading_bos = false;
  raw.strip_space_prefix = false;
  EXPECT_EQ(tok.decode({1, 15043, 3186}, raw), "<s> Hello world");
  // Bytes with no piece fall back to <0xNN> tokens and decode back to the same bytes.
  const std::string emoji = "\xF0\x9F\xA6\x99";  // U+1F999
  const auto ids = tok.encode(emoji, false, false);
  EXPECT_EQ(ids.size(), 5u);  // the space prefix, then four byte tokens
  EXPECT_EQ(tok.decode(ids), emoji);
  EXPECT_TRUE(tok.is_end_of_generation(2));
  EXPECT_FALSE(tok.is_end_of_generation(15043));
}

TEST(TokenizerSpecial, ParsedOnlyWithParseSpecial) {
  const Tokenizer& q = qwen3();
  const std::string chat = "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n";
  const auto on = q.encode(chat, false, true);
  ASSERT_GE(on.size(), 6u);
  EXPECT_EQ(on.front(), 151644);
  EXPECT_EQ(std::count(on.begin(), on.end(), 151644), 2);
  EXPECT_EQ(std::count(on.begin(), on.end(), 151645), 1);
  const auto off = q.encode(chat, false, false);
  EXPECT_EQ(std::count(off.begin(), off.end(), 151644), 0);
  EXPECT_GT(off.size(), on.size());
  EXPECT_EQ(q.decode(on), chat);
  EXPECT_EQ(q.decode(off), chat);
  // Non-special added tokens (USER_DEFINED) are matched either way, as llama.cpp does.
  EXPECT_EQ(q.encode("<think>", false, false), (std::vector<int32_t>{151667}));
  // Qwen: BOS is not added; <|im_end|> and <|endoftext|> end generation.
  EXPECT_FALSE(q.add_bos_by_default());
  EXPECT_TRUE(q.is_end_of_generation(151645));
  EXPECT_TRUE(q.is_end_of_generation(151643));
  EXPECT_FALSE(q.is_end_of_generation(151644));

  const Tokenizer& l = llama3();
  EXPECT_TRUE(l.add_bos_by_default());
  EXPECT_EQ(l.bos(), 128000);
  EXPECT_EQ(l.encode("<|begin_of_text|>Hi", false, true), (std::vector<int32_t>{128000, 13347}));
  EXPECT_EQ(l.encode("Hi", true, false), (std::vector<int32_t>{128000, 13347}));
  EXPECT_TRUE(l.is_end_of_generation(128009));  // <|eot_id|>
  EXPECT_TRUE(l.is_end_of_generation(128001));  // <|end_of_text|>

  // SPM: a special token is followed by the space prefix again (llama.cpp's rule).
  const Tokenizer& s = llama_spm();
  EXPECT_EQ(s.encode("<s>Hello", false, true), (std::vector<int32_t>{1, 15043}));
  EXPECT_NE(s.encode("<s>Hello", false, false).front(), 1);
}

TEST(TokenizerRoundTrip, RandomUtf8) {
  std::mt19937 rng(1234);
  for (int i = 0; i < 60; ++i) {
    const std::string s = random_text(rng, 1 + rng() % 120);
    ASSERT_TRUE(keel::tokenizer::utf8::is_valid(s));
    // Qwen3's tokenizer.json declares NFC: the round trip gives the NFC form (as in `tokenizers`).
    EXPECT_EQ(qwen3().decode(qwen3().encode(s, false, false)), qwen3().internals().normalizer.apply(s));
    EXPECT_EQ(llama3().decode(llama3().encode(s, true, false)), s);
    EXPECT_EQ(gpt2().decode(gpt2().encode(s, false, false)), s);
    EXPECT_EQ(deepseek_llm().decode(deepseek_llm().encode(s, false, false)), s);
    EXPECT_EQ(llama_spm().decode(llama_spm().encode(s, true, false)), s);  // the prefix space is removed again
  }
}

TEST(TokenizerRoundTrip, InvalidUtf8BecomesByteTokens) {
  std::mt19937 rng(99);
  const std::vector<std::string> fixed = {"\xFF", "\xC3", "a\xE2\x82", "\x80\x80 x", "\xED\xA0\x80", "\xF4\x90\x80\x80",
                                          std::string("nul\0byte", 8)};
  std::vector<std::string> inputs = fixed;
  for (int i = 0; i < 40; ++i) {
    std::string s;
    const size_t n = 1 + rng() % 64;
    for (size_t k = 0; k < n; ++k) s.push_back(static_cast<char>(rng() & 0xFF));
    inputs.push_back(s);
  }
  for (const std::string& s : inputs) {
    EXPECT_EQ(qwen3().decode(qwen3().encode(s, false, false)), s);
    EXPECT_EQ(gpt2().decode(gpt2().encode(s, false, false)), s);
    EXPECT_EQ(llama_spm().decode(llama_spm().encode(s, true, false)), s);
    // DeepSeek stores the byte-level characters of bytes that never occur in valid UTF-8
    // (0xC0, 0xC1, 0xF5..0xFF, ...) as USER_DEFINED tokens, which decode to their text as in
    // llama.cpp; for those inputs only encoding without error is required.
    for (int32_t id : deepseek_llm().encode(s, false, false)) EXPECT_LT(id, deepseek_llm().n_vocab());
  }
}

TEST(TokenizerRoundTrip, LongWhitespaceAndRepeats) {
  const std::string s = std::string(5000, ' ') + "x" + std::string(3000, '\n') + std::string(2000, '\t') +
                        std::string(4000, 'a') + "\xE4\xB8\xAD" + std::string(1000, '!');
  for (const Tokenizer* t : {&qwen3(), &gpt2(), &deepseek_llm()}) EXPECT_EQ(t->decode(t->encode(s, false, false)), s);
  EXPECT_EQ(llama_spm().decode(llama_spm().encode(s, true, false)), s);
}

TEST(TokenizerStream, NeverSplitsACharacter) {
  std::mt19937 rng(7);
  for (const Tokenizer* t : {&llama_spm(), &qwen3(), &gpt2()}) {
    for (int i = 0; i < 20; ++i) {
      const std::string s = random_text(rng, 60);
      const auto ids = t->encode(s, false, false);
      StreamDecoder stream(*t);
      std::string joined;
      for (int32_t id : ids) {
        const std::string part = stream.push(id);
        EXPECT_TRUE(keel::tokenizer::utf8::is_valid(part)) << "split inside a character";
        joined += part;
      }
      joined += stream.flush();
      DecodeOptions raw;
      raw.strip_space_prefix = false;
      EXPECT_EQ(joined, t->decode(ids, raw));
    }
  }
  // A lone lead byte at the end comes out on flush; bytes that can never complete go straight out.
  StreamDecoder s(llama_spm());
  const int32_t byte_e4 = llama_spm().find_token("<0xE4>");
  const int32_t byte_b8 = llama_spm().find_token("<0xB8>");
  const int32_t byte_ad = llama_spm().find_token("<0xAD>");
  const int32_t byte_ff = llama_spm().find_token("<0xFF>");
  EXPECT_EQ(s.push(byte_e4), "");
  EXPECT_EQ(s.push(byte_b8), "");
  EXPECT_EQ(s.push(byte_ad), "\xE4\xB8\xAD");
  EXPECT_EQ(s.push(byte_ff), "\xFF");
  EXPECT_EQ(s.push(byte_e4), "");
  EXPECT_EQ(s.flush(), "\xE4");
}

TEST(TokenizerErrors, ClearMessages) {
  EXPECT_NE(error_of([] { keel::tokenizer::pre_tokenizer_spec("gpt-9"); }).find("'gpt-9'"), std::string::npos);
  EXPECT_NE(error_of([] {
              Tokenizer::from_gguf(keel::gguf::File::open(keel::test::shared("vocab/ggml-vocab-bert-bge.gguf")));
            }).find("'bert'"),
            std::string::npos);
  EXPECT_NE(error_of([] { Tokenizer::from_hf_json("/nonexistent/tokenizer.json"); }).find("cannot open"),
            std::string::npos);
  EXPECT_NE(error_of([] { llama_spm().token_to_piece(32000); }).find("outside the vocabulary"), std::string::npos);
  for (const char* pre : {"default", "gpt-2", "llama-bpe", "llama3", "llama-v3", "qwen2", "deepseek-r1-qwen",
                                 "qwen35", "deepseek-llm", "deepseek-coder", "falcon", "mpt", "starcoder", "refact",
                                 "gpt-neox"}) {
    const auto spec = keel::tokenizer::pre_tokenizer_spec(pre);
    EXPECT_NO_THROW(keel::tokenizer::PreTokenizer{spec.regexes}) << pre;
  }
}

TEST(TokenizerErrors, UnknownPreInAFileIsNamed) {
  // The gpt-2 vocab with its pre-tokenizer name patched to one keel does not know.
  std::ifstream in(keel::test::shared("vocab/ggml-vocab-gpt-2.gguf"), std::ios::binary);
  std::string bytes{std::istreambuf_iterator<char>(in), {}};
  const std::string key = "tokenizer.ggml.pre";
  const size_t at = bytes.find(key);
  ASSERT_NE(at, std::string::npos);
  const size_t value = bytes.find("gpt-2", at + key.size());
  ASSERT_NE(value, std::string::npos);
  bytes.replace(value, 5, "gpt-9");
  const std::string path = keel::test::temp_dir() + "keel_vocab_unknown_pre.gguf";
  std::ofstream(path, std::ios::binary) << bytes;
  const std::string message = error_of([&] { Tokenizer::from_gguf(keel::gguf::File::open(path)); });
  EXPECT_NE(message.find("'gpt-9'"), std::string::npos) << message;
  std::remove(path.c_str());
}

TEST(TokenizerQwen35, MarksJoinLetters) {
  // qwen35 keeps combining marks inside letter runs; qwen2 splits them off.
  keel::tokenizer::PreTokenizer qwen2(keel::tokenizer::pre_tokenizer_spec("qwen2").regexes);
  keel::tokenizer::PreTokenizer qwen35(keel::tokenizer::pre_tokenizer_spec("qwen35").regexes);
  const std::string text = "cafe\xCC\x81 naive";  // "café" with U+0301
  EXPECT_EQ(qwen35.split(text).size(), 2u);
  EXPECT_EQ(qwen2.split(text).size(), 3u);
}

namespace {

struct CliResult {
  int status;
  std::string out;
};

CliResult run_cli(const std::string& args) {
  const std::string cmd = keel::test::keel_binary() + " " + args + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}


// A byte-level BPE tokenizer.json small enough to write inline: the 256 byte characters, merges
// "a b" -> 257 and "ab" + "Ġ"... in both merge spellings, one added special token, and a
// TemplateProcessing post-processor that puts BOS (<s>, 256) first.
std::string write_tiny_tokenizer_json() {
  nlohmann::json vocab = nlohmann::json::object();
  const keel::tokenizer::ByteLevel bytes;
  for (int b = 0; b < 256; ++b) vocab[bytes.encode(static_cast<uint8_t>(b))] = b;
  vocab["<s>"] = 256;
  vocab["ab"] = 258;
  vocab["Ġb"] = 257;
  nlohmann::json j = {
      {"added_tokens", {{{"id", 256}, {"content", "<s>"}, {"special", true}},
                        {{"id", 259}, {"content", "<|go|>"}, {"special", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor", {{"type", "TemplateProcessing"},
                          {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                      {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a b", {"Ġ", "b"}}}}},
  };
  const std::string path = keel::test::temp_dir() + "keel_tiny_tokenizer.json";
  std::ofstream(path) << j.dump();
  return path;
}

}  // namespace

TEST(TokenizerCli, PrintsIdsAndPieces) {
  const std::string spm = keel::test::shared("vocab/ggml-vocab-llama-spm.gguf");
  EXPECT_EQ(run_cli("tokenize -m " + spm + " -p 'Hello world'").out, "1 15043 3186\n");
  EXPECT_EQ(run_cli("tokenize -m " + spm + " -p 'Hello world' --no-bos").out, "15043 3186\n");
  EXPECT_EQ(run_cli("tokenize -m " + spm + " -p 'Hello world' --pieces").out,
            "<s> \xE2\x96\x81Hello \xE2\x96\x81world\n");
  EXPECT_EQ(run_cli("tokenize -p 'Once upon a time'").out, "1 403 407 261 378\n");  // the embedded model
  const std::string json = write_tiny_tokenizer_json();
  EXPECT_EQ(run_cli("tokenize --tokenizer " + json + " -p 'ab <|go|>'").out, "256 258 32 60 124 103 111 124 62\n");
  EXPECT_EQ(run_cli("tokenize --tokenizer " + json + " -p 'ab <|go|>' --parse-special").out, "256 258 32 259\n");
  std::remove(json.c_str());
  const std::string file = keel::test::temp_dir() + "keel_tokenize_input.txt";
  std::ofstream(file) << "Hello world";
  EXPECT_EQ(run_cli("tokenize -m " + spm + " -f " + file).out, "1 15043 3186\n");
  std::remove(file.c_str());
  EXPECT_EQ(run_cli("tokenize -m " + keel::test::shared("vocab/ggml-vocab-bert-bge.gguf") + " -p x").status, 1);
  EXPECT_EQ(run_cli("tokenize -m " + spm).status, 2);  // no text
}

TEST(TokenizerSpm, WordByWordEqualsOneSession) {
  // The fast path (words encoded separately, cached) against the whole-text reference.
  for (const char* rel : {"vocab/ggml-vocab-llama-spm.gguf", "vocab/ggml-vocab-baichuan.gguf"}) {
    ASSERT_TRUE(gguf_tokenizer(rel).internals().vocab.spm_words_independent) << rel;
    const Tokenizer& tok = gguf_tokenizer(rel);
    std::mt19937 rng(5);
    for (int i = 0; i < 30; ++i) {
      std::string s = random_text(rng, 200);
      std::string escaped = "\xE2\x96\x81";
      for (char c : s) escaped += c == ' ' ? std::string("\xE2\x96\x81") : std::string(1, c);
      std::vector<int32_t> whole;
      keel::tokenizer::spm_encode_whole(tok.internals().vocab, escaped, whole);
      EXPECT_EQ(tok.encode(s, false, false), whole) << rel << ": '" << s << "'";
    }
  }
}
