// Regression tests for the defect classes the fuzz targets (fuzz/) look for: counts and ids read
// from a file are checked against the file and sane caps before they size anything; nesting is
// bounded; decode(encode(s)) keeps every byte llama.cpp keeps; a failing allocation names its
// buffer; a full disk or a signal leaves no partial output. Inputs are hand-made.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "keel/error.h"
#include "model/model.h"
#include "runtime/session.h"
#include "test_paths.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/json_input.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_data.h"
#include "tokenizer/utf8.h"
#include "tools_lib/vocab_import.h"

using namespace keel;

namespace {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// A GGUF of the given metadata whose tensors are all zero F32.
std::string write_gguf(const std::string& name, const gguf::Metadata& md,
                       const std::vector<gguf::TensorRecord>& tensors) {
  const std::string path = keel::test::temp_dir() + "keel_robust_" + name + ".gguf";
  gguf::Writer w(path, md, tensors);
  for (const auto& t : tensors) {
    const std::vector<uint8_t> zeros(t.n_bytes());
    w.write(zeros.data(), zeros.size());
  }
  w.commit();
  return path;
}

gguf::Metadata tiny_llama_metadata(const std::string& arch, uint32_t block_count) {
  gguf::Metadata md;
  md.set("general.architecture", gguf::value_string(arch));
  md.set(arch + ".block_count", gguf::value_u32(block_count));
  md.set(arch + ".embedding_length", gguf::value_u32(8));
  md.set(arch + ".feed_forward_length", gguf::value_u32(16));
  md.set(arch + ".attention.head_count", gguf::value_u32(2));
  return md;
}

std::string write_text(const std::string& name, const std::string& text) {
  const std::string dir = keel::test::temp_dir() + "keel_robust_" + name;
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/tokenizer.json";
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// A valid byte-level BPE tokenizer.json with the given text in place of one token id.
std::string tokenizer_json_with_id(const std::string& id_text, bool in_added_tokens) {
  const std::string vocab_id = in_added_tokens ? "1" : id_text;
  const std::string added_id = in_added_tokens ? id_text : "2";
  return R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": )" + vocab_id +
         R"(}, "merges": []}, "added_tokens": [{"id": )" + added_id +
         R"(, "content": "<s>", "special": true}], "pre_tokenizer": {"type": "ByteLevel"}})";
}

}  // namespace

// ---- GGUF: counts checked against the tensor table ------------------------------------------

// 30 million layers in a 1 KB file: before the check, keel sized the expected-tensor list (and
// qwen35's per-layer flags) from it and was killed for memory.
TEST(Robustness, AbsurdBlockCountIsRefusedBeforeAnythingIsSized) {
  for (const std::string arch : {"llama", "qwen35"}) {
    const std::string path = write_gguf("layers_" + arch, tiny_llama_metadata(arch, 30'000'000),
                                        {{"token_embd.weight", quant::Type::F32, {8, 4}}});
    const std::string err = error_of([&] { model::Model::load(path); });
    EXPECT_NE(err.find(path), std::string::npos) << err;
    EXPECT_NE(err.find(arch + ".block_count = 30000000"), std::string::npos) << err;
    EXPECT_NE(err.find("holds 1 tensors"), std::string::npos) << err;
  }
}

TEST(Robustness, ZeroBlockCountIsRefused) {
  const std::string path =
      write_gguf("layers_zero", tiny_llama_metadata("llama", 0), {{"token_embd.weight", quant::Type::F32, {8, 4}}});
  EXPECT_NE(error_of([&] { model::Model::load(path); }).find("llama.block_count = 0"), std::string::npos);
}

// The same file through the CLI: exit code 1 and the message, not an out-of-memory kill.
TEST(Robustness, CliRefusesAbsurdBlockCount) {
  const std::string path = write_gguf("layers_cli", tiny_llama_metadata("llama", 30'000'000),
                                      {{"token_embd.weight", quant::Type::F32, {8, 4}}});
  const std::string cmd = test::keel_binary() + " run -m " + path + " -p hi -n 1 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 1) << out;
  EXPECT_NE(out.find("block_count = 30000000"), std::string::npos) << out;
}

// ---- tokenizer.json: ids are checked integers, nesting is bounded -------------------------

TEST(Robustness, TokenizerJsonIdsMustBeSmallNonNegativeIntegers) {
  struct Case {
    std::string id, shown;
  };
  const Case cases[] = {{"1e300", "1e+300"},
                        {"-1e300", "-1e+300"},
                        {"9223372036854775807", "9223372036854775807"},
                        {"18446744073709551615", "18446744073709551615"},
                        {"3.5", "3.5"},
                        {"-1", "-1"},
                        {"\"7\"", "\"7\""},
                        {"16777216", "16777216"},
                        {"1073741824", "1073741824"}};
  for (const Case& c : cases)
    for (bool added : {false, true}) {
      const std::string path = write_text("id", tokenizer_json_with_id(c.id, added));
      const std::string field = added ? "added_tokens id" : "model.vocab[\"b\"]";
      for (const std::string& err :
           {error_of([&] { tokenizer::Tokenizer::from_hf_json(path); }),
            error_of([&] {
              gguf::Metadata md;
              tools::import_tokenizer_json(path, "qwen2", md);
            })}) {
        EXPECT_NE(err.find(path), std::string::npos) << err;
        EXPECT_NE(err.find(field + " is " + c.shown + ", expected a token id"), std::string::npos) << c.id << ": " << err;
      }
    }
}

// One large id (2^30 before; now anything past the listed tokens' count) would make a vocabulary
// of millions of [PADn] entries from a three-token file.
TEST(Robustness, TokenizerJsonSparseIdIsRefused) {
  const std::string path = write_text("sparse", tokenizer_json_with_id("16000000", true));
  for (const std::string& err : {error_of([&] { tokenizer::Tokenizer::from_hf_json(path); }), error_of([&] {
                                   gguf::Metadata md;
                                   tools::import_tokenizer_json(path, "qwen2", md);
                                 })})
    EXPECT_NE(err.find("the largest token id is 16000000 but only 3 tokens are listed"), std::string::npos) << err;
  // A few holes stay fine: ids 0, 1 and 3 (id 2 becomes an unused [PAD2] entry).
  const auto tok = tokenizer::Tokenizer::from_hf_json(write_text("holes", tokenizer_json_with_id("3", true)));
  EXPECT_EQ(tok.n_vocab(), 4);
  EXPECT_EQ(tok.token_text(2), "[PAD2]");
}

TEST(Robustness, DeeplyNestedTokenizerJsonIsRefused) {
  std::string nested = R"({"type": "ByteLevel"})";
  for (int i = 0; i < 5000; ++i) nested = R"({"type": "Sequence", "pretokenizers": [)" + nested + "]}";
  const std::string path = write_text(
      "deep", R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": )" + nested + "}");
  for (const std::string& err : {error_of([&] { tokenizer::Tokenizer::from_hf_json(path); }), error_of([&] {
                                   gguf::Metadata md;
                                   tools::import_tokenizer_json(path, "qwen2", md);
                                 })})
    EXPECT_NE(err.find("nested more than 64 levels deep"), std::string::npos) << err;
  // Brackets inside strings do not count; 20 nested Sequences (about 45 levels) are fine.
  nested = R"({"type": "Split", "pattern": {"Regex": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\[]"}})";
  nested = R"({"type": "Sequence", "pretokenizers": [)" + nested + R"(, {"type": "ByteLevel"}]})";
  for (int i = 0; i < 20; ++i) nested = R"({"type": "Sequence", "pretokenizers": [)" + nested + "]}";
  const std::string ok = write_text(
      "deep_ok", R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": )" + nested + "}");
  EXPECT_NO_THROW(tokenizer::Tokenizer::from_hf_json(ok));
}

// ---- decode(encode(s)) keeps every byte llama.cpp keeps ------------------------------------

// llama.cpp's ids (node-llama-cpp 3.21.1, vocab-only load, tokenize without specials) for bytes
// these vocabularies cannot spell: falcon has no token for byte 0x04 and starcoder none for 0xF1,
// so llama.cpp drops them, and keel matches its ids; every other byte round-trips.
TEST(Robustness, BytesAVocabularyCannotSpellAreDroppedAsLlamaCppDoes) {
  struct Case {
    const char* vocab;
    std::string text;
    std::vector<int32_t> llamacpp_ids;
  };
  const Case cases[] = {
      {"falcon", "\x04", {}},
      {"falcon", "A\x04" "AB", {44, 4073}},
      {"starcoder", "\x04", {216}},
      {"starcoder", "\xF1\x80\x80\x80", {246, 246, 246}},
      {"starcoder", "A\xF1\x80\x80\x80" "B", {70, 246, 246, 246, 71}},
      // From a 300-string differential run per vocabulary (random valid UTF-8 of controls,
      // Latin, BMP and every 4-byte lead): keel equals llama.cpp on all 600; these lose bytes.
      {"falcon", "\x11", {}},
      {"falcon", "\x15", {}},
      {"falcon", "(\x1c", {19}},
      {"falcon", "\x07\x17", {190}},
      {"starcoder", "\xF1\x85\x85\xB3", {251, 251, 149}},
      {"starcoder", "\x03\xF1\xB5\x82\x8D", {215, 151, 248, 259}},
  };
  for (const Case& c : cases) {
    const auto tok = tokenizer::Tokenizer::from_gguf(
        gguf::File::open(test::shared(std::string("vocab/ggml-vocab-") + c.vocab + ".gguf")));
    EXPECT_EQ(tok.encode(c.text, false, false), c.llamacpp_ids) << c.vocab;
  }
}

// decode(encode(s)) == s whenever the vocabulary can spell every byte of s (byte-level BPE: the
// byte's own symbol is a token; SentencePiece: a <0xNN> byte token), one character at a time.
TEST(Robustness, RoundTripKeepsEveryByteTheVocabularyCanSpell) {
  const tokenizer::ByteLevel byte_level;
  for (const char* name : {"falcon", "starcoder", "gpt-2", "llama-spm", "phi-3", "deepseek-coder"}) {
    const auto tok = tokenizer::Tokenizer::from_gguf(
        gguf::File::open(test::shared(std::string("vocab/ggml-vocab-") + name + ".gguf")));
    const tokenizer::Vocab& vocab = tok.internals().vocab;
    auto spells = [&](uint8_t b) {
      return tok.is_spm() ? vocab.byte_token[b] >= 0 && vocab.byte_token[b] != vocab.unk
                          : vocab.index.find(byte_level.encode(b)) >= 0;
    };
    int lossy = 0;
    for (uint32_t cp = 1; cp < 0x110000; cp += cp < 0x800 ? 1 : 0x3FB) {
      if (cp >= 0xD800 && cp < 0xE000) continue;
      std::string s;
      tokenizer::utf8::append(s, cp);
      bool all_spelled = true;
      for (unsigned char c : s) all_spelled = all_spelled && spells(c);
      const bool kept = tok.decode(tok.encode(s, false, false)) == s;
      lossy += !kept;
      if (all_spelled) {
        EXPECT_TRUE(kept) << name << " U+" << std::hex << cp;
      }
    }
    RecordProperty(std::string("unspellable_code_points_") + name, lossy);
  }
}

// ---- a failing allocation names its buffer ---------------------------------------------------

namespace {

struct FailAllocation {
  explicit FailAllocation(const std::string& name) { setenv("KEEL_FAIL_ALLOC", name.c_str(), 1); }
  ~FailAllocation() { unsetenv("KEEL_FAIL_ALLOC"); }
};

runtime::SessionOptions small_session() {
  runtime::SessionOptions o;
  o.n_ctx = 64;
  o.chunk = 16;
  o.n_threads = 1;
  o.page_tokens = 16;
  return o;
}

}  // namespace

// Each buffer the session plans (activations, logits, backend workspaces, the host metadata,
// recurrent state, KV pages)
// fails in turn: the session refuses with the buffer's name and frees what it had (the
// sanitizer build checks for leaks), and a session without the fault still starts.
TEST(Robustness, EveryPlannedBufferFailingIsACleanRefusal) {
  for (const char* fixture : {"fixtures/tiny-qwen3.gguf", "fixtures/tiny-qwen35.gguf"}) {
    const auto model = model::Model::load(test::shared(fixture));
    const runtime::SessionLayout layout = runtime::layout_session(
        model->hparams(), model->family(), runtime::matrices_of(*model), small_session());
    std::vector<std::string> names = {"kv pages", layout.host.name};
    for (const auto& b : layout.scratch) names.push_back(b.name);
    for (const auto& b : layout.workspaces) names.push_back(b.name);
    for (const auto& b : layout.state) names.push_back(b.name);
    EXPECT_GE(names.size(), 8u) << fixture;
    for (const std::string& name : names) {
      FailAllocation fail(name);
      try {
        runtime::Session session(model, small_session());
        ADD_FAILURE() << fixture << ": no error when buffer '" << name << "' fails";
      } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::refused) << e.what();
        EXPECT_NE(std::string(e.what()).find("for buffer '" + name + "'"), std::string::npos) << e.what();
      }
    }
    EXPECT_NO_THROW({ runtime::Session session(model, small_session()); }) << fixture;
  }
}

TEST(Robustness, CliFailingAllocationExitsOneNamingTheBuffer) {
  const std::string cmd = "KEEL_FAIL_ALLOC=logits " + test::keel_binary() + " run -p hi -n 2 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 1) << out;
  EXPECT_NE(out.find("for buffer 'logits'"), std::string::npos) << out;
}

// ---- a full disk or a signal leaves no partial file -----------------------------------------

namespace {

struct ChildOptions {
  rlim_t file_size_limit = RLIM_INFINITY;  // RLIMIT_FSIZE: writes past it fail (a full disk)
  int signal = 0;                          // sent while `output`'s temp file is being written
  std::string output;
};

// Runs keel; returns its exit code, or 1000 + the signal that killed it.
int run_keel(const std::vector<std::string>& args, const ChildOptions& opt, std::string* err_text) {
  // One file per test process: ctest runs the tests of this file in parallel, and a shared
  // path let one child's freopen truncate another test's error text before it was read.
  const std::string err_path = keel::test::temp_dir() + "keel_robust_stderr." + std::to_string(getpid()) + ".txt";
  std::vector<std::string> all = {test::keel_binary()};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    if (!freopen(err_path.c_str(), "w", stderr)) _exit(126);
    const rlimit limit{opt.file_size_limit, opt.file_size_limit};
    if (setrlimit(RLIMIT_FSIZE, &limit) != 0) _exit(125);
    execv(argv[0], argv.data());
    _exit(127);
  }
  if (opt.signal != 0) {
    // Freeze the writer as soon as its temp file appears, so the signal lands mid-write however
    // fast the machine is; it is handled when the process continues.
    const std::string temp = opt.output + ".tmp." + std::to_string(pid);
    for (int i = 0; i < 20000 && !std::filesystem::exists(temp); ++i)
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    kill(pid, SIGSTOP);
    EXPECT_TRUE(std::filesystem::exists(temp)) << "the writer never started";
    kill(pid, opt.signal);
    kill(pid, SIGCONT);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  std::ifstream in(err_path);
  *err_text = std::string{std::istreambuf_iterator<char>(in), {}};
  std::filesystem::remove(err_path);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
}

bool temp_files_left(const std::string& path) {
  const std::filesystem::path p(path);
  for (const auto& e : std::filesystem::directory_iterator(p.parent_path()))
    if (e.path().filename().string().rfind(p.filename().string() + ".tmp.", 0) == 0) return true;
  return false;
}

// The three commands that write a model, each writing `out` with a few MB to tens of MB.
std::vector<std::pair<std::string, std::vector<std::string>>> writing_commands(const std::string& out) {
  return {
      {"synth", {"synth", "--preset", "qwen3-0.6b", "--type", "q8_0", "--layers", "4", "--dims", "n_vocab=512",
                 "-o", out, "-t", "1", "--no-progress"}},
      {"quantize", {"quantize", test::shared("fixtures/tiny-qwen35.gguf"), out, "q4_k_m", "-t", "1", "--no-progress"}},
      {"convert", {"convert", test::shared("fixtures/hf/tiny-qwen35"), "-o", out, "--type", "q8_0", "--vocab-from",
                   test::shared("fixtures/tiny-qwen35.gguf"), "-t", "1", "--no-progress"}},
  };
}

}  // namespace

// A file-size limit stands in for a full disk (ENOSPC and EFBIG take the same path): each
// command reports the failed write and exit code 1, and leaves neither output nor temp file.
TEST(Robustness, FullDiskLeavesNoPartialFile) {
  const std::string out = keel::test::temp_dir() + "keel_robust_full.gguf";
  for (const auto& [name, args] : writing_commands(out)) {
    std::filesystem::remove(out);
    ChildOptions opt;
    opt.file_size_limit = 512 * 1024;
    std::string err;
    EXPECT_EQ(run_keel(args, opt, &err), 1) << name << ": " << err;
    EXPECT_NE(err.find("failed"), std::string::npos) << name << ": " << err;
    EXPECT_FALSE(std::filesystem::exists(out)) << name;
    EXPECT_FALSE(temp_files_left(out)) << name;
  }
}

// SIGINT ends with 130 and SIGTERM with 143 (128 + the signal number), with no file left.
TEST(Robustness, SignalsDuringWritesLeaveNoPartialFile) {
  const std::string out = keel::test::temp_dir() + "keel_robust_signal.gguf";
  for (const auto& [name, args] : writing_commands(out))
    for (const auto& [sig, code] : {std::pair{SIGINT, 130}, std::pair{SIGTERM, 143}}) {
      std::filesystem::remove(out);
      ChildOptions opt;
      opt.signal = sig;
      opt.output = out;
      std::string err;
      EXPECT_EQ(run_keel(args, opt, &err), code) << name << " signal " << sig << ": " << err;
      EXPECT_FALSE(std::filesystem::exists(out)) << name;
      EXPECT_FALSE(temp_files_left(out)) << name;
    }
}

// ---- SIGINT/SIGTERM during generation and scoring ------------------------------------------

namespace {

// True once `pid` has a handler installed for `sig` (the SigCgt mask of /proc/PID/status).
bool catches(pid_t pid, int sig) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("SigCgt:", 0) == 0) return (std::stoull(line.substr(7), nullptr, 16) >> (sig - 1)) & 1;
  return false;
}

// Runs keel and sends `sig` as soon as keel handles it (frozen meanwhile, so the signal lands
// before the work is done however fast the machine is); returns the exit code, or 1000 + the
// signal that killed it.
int run_keel_signalled(const std::vector<std::string>& args, int sig) {
  std::vector<std::string> all = {test::keel_binary()};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(126);
    execv(argv[0], argv.data());
    _exit(127);
  }
  bool caught = false;
  for (int i = 0; i < 40000 && !(caught = catches(pid, sig)); ++i)
    std::this_thread::sleep_for(std::chrono::microseconds(250));
  kill(pid, SIGSTOP);
  EXPECT_TRUE(caught) << "keel never installed a handler for signal " << sig;
  kill(pid, sig);
  kill(pid, SIGCONT);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
}

}  // namespace

TEST(Robustness, SignalsDuringRunAndPerplexityEndWithTheirExitCodes) {
  const std::string text_path = keel::test::temp_dir() + "keel_robust_text.txt";
  {
    std::ofstream text(text_path);
    for (int i = 0; i < 60; ++i) text << "Once upon a time there was a little girl who liked to play. ";
  }
  for (const auto& [sig, code] : {std::pair{SIGINT, 130}, std::pair{SIGTERM, 143}}) {
    EXPECT_EQ(run_keel_signalled({"run", "-p", "Once upon a time", "-n", "400", "--chunk", "1", "-t", "1"}, sig), code)
        << "run, signal " << sig;
    EXPECT_EQ(run_keel_signalled({"perplexity", "-f", text_path, "--chunk", "1", "-t", "1"}, sig), code)
        << "perplexity, signal " << sig;
  }
}
