// Prompt-cache state files: save -> load -> continue gives the logits of the uninterrupted run
// (llama, qwen3, the qwen35 hybrid; prefixes on and off page and chunk boundaries); a file made
// for another model or KV type is not used; flipped bytes and truncation are clear errors that
// leave the sequence empty; a write that fails (file-size limit) leaves no file behind.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "keel/error.h"
#include "model/model.h"
#include "runtime/session.h"
#include "test_paths.h"

using namespace keel;
namespace fs = std::filesystem;

namespace {

runtime::Session make_session(std::shared_ptr<const model::Model> m, runtime::KvType kv = runtime::KvType::f16) {
  runtime::SessionOptions o;
  o.n_ctx = 128;
  o.chunk = 32;
  o.n_threads = 2;
  o.page_tokens = 16;
  o.kv_type = kv;
  return runtime::Session(std::move(m), o);
}

std::vector<int32_t> tokens(size_t n, int salt = 0) {
  std::vector<int32_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>(3 + (i * 37 + static_cast<size_t>(salt) * 11) % 240);
  return ids;
}

double max_diff(const float* a, const float* b, size_t n) {
  double d = 0;
  for (size_t i = 0; i < n; ++i) d = std::max(d, static_cast<double>(std::fabs(a[i] - b[i])));
  return d;
}

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/keel-pc-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

class PromptCache : public ::testing::TestWithParam<const char*> {};

TEST_P(PromptCache, SaveLoadContinueEqualsUninterrupted) {
  auto m = model::Model::load(test::shared(GetParam()));
  const size_t n_vocab = m->hparams().n_vocab;
  TempDir dir;
  const auto prompt = tokens(70);
  for (size_t saved : {16u, 23u, 32u, 45u}) {  // page 16, chunk 32: on and off both
    const std::string path = (dir.path / std::string("s").append(std::to_string(saved))).string();
    const std::span<const int32_t> prefix = std::span<const int32_t>(prompt).first(saved);
    const std::span<const int32_t> rest = std::span<const int32_t>(prompt).subspan(saved);
    // Uninterrupted: the prefix, then the rest and two decodes.
    auto a = make_session(m);
    const float* a_prefix = a.prefill(prefix);
    std::vector<float> prefix_logits(a_prefix, a_prefix + n_vocab);
    a.save_state(0, prefix, a_prefix, path);
    const float* l = a.prefill(rest);
    std::vector<float> want(l, l + n_vocab);
    l = a.decode(7);
    std::vector<float> want_next(l, l + n_vocab);

    auto c = make_session(m);
    const auto r = c.load_state(0, path, prompt);
    ASSERT_EQ(r.n_reused, static_cast<int64_t>(saved)) << GetParam() << " " << r.note;
    EXPECT_EQ(r.logits, nullptr);
    EXPECT_EQ(c.n_past(), static_cast<int64_t>(saved));
    l = c.prefill(rest);
    EXPECT_LE(max_diff(l, want.data(), n_vocab), 1e-6) << GetParam() << " saved " << saved;
    l = c.decode(7);
    EXPECT_LE(max_diff(l, want_next.data(), n_vocab), 1e-6) << GetParam() << " saved " << saved;

    // The very prompt that was saved: nothing to compute, the saved logits come back.
    auto d = make_session(m);
    const auto whole = d.load_state(0, path, prefix);
    ASSERT_EQ(whole.n_reused, static_cast<int64_t>(saved));
    ASSERT_NE(whole.logits, nullptr);
    EXPECT_EQ(max_diff(whole.logits, prefix_logits.data(), n_vocab), 0.0);
  }
}

TEST_P(PromptCache, ADivergingPromptReusesTheCommonPrefixOrNothing) {
  auto m = model::Model::load(test::shared(GetParam()));
  const bool hybrid = m->hparams().n_recurrent_layers() > 0;
  TempDir dir;
  const std::string path = (dir.path / "s").string();
  auto a = make_session(m);
  const auto saved = tokens(40);
  a.save_state(0, saved, a.prefill(saved), path);
  auto other = saved;
  other[30] += 1;  // diverges at 30
  auto b = make_session(m);
  const auto r = b.load_state(0, path, other);
  if (hybrid) {
    EXPECT_EQ(r.n_reused, 0) << "a recurrent state cannot be cut back";
    EXPECT_NE(r.note.find("hybrid"), std::string::npos) << r.note;
  } else {
    EXPECT_EQ(r.n_reused, 30);
    // And the continuation equals a fresh run of the other prompt.
    const size_t n_vocab = m->hparams().n_vocab;
    const float* got = b.prefill(std::span<const int32_t>(other).subspan(30));
    std::vector<float> g(got, got + n_vocab);
    auto fresh = make_session(m);
    fresh.prefill(std::span<const int32_t>(other).first(30));
    const float* want = fresh.prefill(std::span<const int32_t>(other).subspan(30));
    EXPECT_LE(max_diff(g.data(), want, n_vocab), 1e-6);
  }
  EXPECT_EQ(b.load_state(0, path, tokens(40, 5)).n_reused, 0);  // nothing in common
  EXPECT_EQ(b.n_past(), 0);
}

// A hybrid model resumes from its recurrent-state checkpoints: a prompt that diverges at 70 of a
// saved 100 (chunks of 32, checkpoints at 32 and 64) restores 64 tokens, and the continuation
// equals an uninterrupted run of the new prompt; a divergence before the first checkpoint
// restores nothing; a corrupt checkpoint position is a clear error.
TEST(PromptCacheFile, HybridResumesFromTheLongestSharedCheckpoint) {
  auto m = model::Model::load(test::shared("fixtures/tiny-qwen35.gguf"));
  const size_t n_vocab = m->hparams().n_vocab;
  TempDir dir;
  const std::string path = (dir.path / "s").string();
  const auto saved = tokens(100);
  {
    auto a = make_session(m);
    ASSERT_TRUE(a.has_recurrent_state());
    runtime::StateCheckpoints checkpoints(path);
    const std::span<const int32_t> all(saved);
    a.prefill(all.first(32));
    a.checkpoint_state(0, checkpoints);
    a.prefill(all.subspan(32, 32));
    a.checkpoint_state(0, checkpoints);
    const float* last = a.prefill(all.subspan(64));
    a.save_state(0, saved, last, path, &checkpoints);
  }
  auto other = saved;
  other[70] += 1;
  auto b = make_session(m);
  const auto r = b.load_state(0, path, other);
  ASSERT_EQ(r.n_reused, 64) << r.note;
  EXPECT_EQ(r.logits, nullptr);
  const float* got = b.prefill(std::span<const int32_t>(other).subspan(64));
  std::vector<float> g(got, got + n_vocab);
  auto fresh = make_session(m);
  const std::span<const int32_t> o(other);
  fresh.prefill(o.first(32));
  fresh.prefill(o.subspan(32, 32));
  const float* want = fresh.prefill(o.subspan(64));
  EXPECT_LE(max_diff(g.data(), want, n_vocab), 1e-6);

  auto early = saved;
  early[20] += 1;
  EXPECT_EQ(b.load_state(0, path, early).n_reused, 0);
  auto exact = saved;
  exact.resize(64);  // the prompt is exactly a checkpoint: one token is recomputed for logits
  EXPECT_EQ(b.load_state(0, path, exact).n_reused, 32);

  // Flip the first checkpoint position (right after the header and the 100 tokens).
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(80 + 100 * 4);
    const int64_t bad = 1000;
    f.write(reinterpret_cast<const char*>(&bad), sizeof bad);
  }
  try {
    b.load_state(0, path, other);
    ADD_FAILURE() << "a corrupt checkpoint table was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("corrupt"), std::string::npos) << e.what();
  }
  EXPECT_EQ(b.n_past(), 0);
}

TEST_P(PromptCache, CorruptOrTruncatedFilesAreClearErrors) {
  auto m = model::Model::load(test::shared(GetParam()));
  TempDir dir;
  const std::string path = (dir.path / "s").string();
  const auto prompt = tokens(40);
  auto a = make_session(m);
  a.save_state(0, prompt, a.prefill(prompt), path);
  std::ifstream in(path, std::ios::binary);
  const std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto write = [&](const std::string& bytes) { std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes; };
  auto b = make_session(m);
  int errors = 0, cases = 0;
  for (size_t at : {size_t{0}, size_t{9}, size_t{30}, size_t{79}, size_t{80}, size_t{100}, size_t{300},
                    good.size() / 2, good.size() - 9, good.size() - 1}) {
    std::string bad = good;
    bad[at] = static_cast<char>(bad[at] ^ 0x10);
    write(bad);
    ++cases;
    try {
      b.load_state(0, path, prompt);
      ADD_FAILURE() << GetParam() << ": a flipped byte at " << at << " was not noticed";
    } catch (const Error& e) {
      ++errors;
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
    EXPECT_EQ(b.n_past(), 0) << "a failed load leaves the sequence empty";
  }
  for (size_t len = 0; len < good.size(); len += std::max<size_t>(1, good.size() / 37)) {
    write(good.substr(0, len));
    ++cases;
    try {
      b.load_state(0, path, prompt);
      ADD_FAILURE() << GetParam() << ": truncation at " << len << " was not noticed";
    } catch (const Error&) {
      ++errors;
    }
    EXPECT_EQ(b.n_past(), 0);
  }
  EXPECT_EQ(errors, cases);
  write(good);  // intact again: usable, and the session works after all those failures
  EXPECT_EQ(b.load_state(0, path, prompt).n_reused, 40);
}

INSTANTIATE_TEST_SUITE_P(Families, PromptCache,
                         ::testing::Values("models/stories260K.gguf", "fixtures/tiny-qwen3.gguf",
                                           "fixtures/tiny-qwen35.gguf"),
                         [](const auto& info) {
                           std::string name = info.param;
                           name = name.substr(name.find('/') + 1);
                           name = name.substr(0, name.find('.'));
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// Found by fuzz/prompt_cache.cpp: restoring for an empty prompt reported -1 tokens restored and
// left the sequence at n_past -1 (the "recompute the last prompt token" step had none to take).
TEST(PromptCacheFile, EmptyPromptRestoresNothing) {
  TempDir dir;
  const std::string path = (dir.path / "s").string();
  auto m = model::Model::load(test::shared("models/stories260K.gguf"));
  const auto prompt = tokens(20);
  auto a = make_session(m);
  a.save_state(0, prompt, a.prefill(prompt), path);
  auto b = make_session(m);
  const auto r = b.load_state(0, path, {});
  EXPECT_EQ(r.n_reused, 0);
  EXPECT_EQ(r.logits, nullptr);
  EXPECT_EQ(b.n_past(), 0);
  EXPECT_EQ(b.pages_free(), b.pages_total());
  EXPECT_EQ(b.load_state(0, path, prompt).n_reused, 20);  // and the file is still usable
}

TEST(PromptCacheFile, AnotherModelOrKvTypeIsNotUsed) {
  TempDir dir;
  const std::string path = (dir.path / "s").string();
  auto qwen3 = model::Model::load(test::shared("fixtures/tiny-qwen3.gguf"));
  const auto prompt = tokens(20);
  auto a = make_session(qwen3);
  a.save_state(0, prompt, a.prefill(prompt), path);
  auto q8 = make_session(model::Model::load(test::shared("fixtures/tiny-qwen3-q8_0.gguf")));
  auto r = q8.load_state(0, path, prompt);
  EXPECT_EQ(r.n_reused, 0);
  EXPECT_NE(r.note.find("another model"), std::string::npos) << r.note;
  auto f32kv = make_session(qwen3, runtime::KvType::f32);
  r = f32kv.load_state(0, path, prompt);
  EXPECT_EQ(r.n_reused, 0);
  EXPECT_NE(r.note.find("KV"), std::string::npos) << r.note;
  auto missing = make_session(qwen3);
  EXPECT_EQ(missing.load_state(0, (dir.path / "none").string(), prompt).n_reused, 0);
}

TEST(PromptCacheFile, AFailedWriteLeavesNoFile) {
  TempDir dir;
  const std::string path = (dir.path / "s").string();
  auto m = model::Model::load(test::shared("fixtures/tiny-qwen3.gguf"));
  const auto prompt = tokens(60);
  auto a = make_session(m);
  const float* logits = a.prefill(prompt);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // a disk that fills after 64 KiB: the write fails, the temp file goes
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit lim{64 << 10, 64 << 10};
    setrlimit(RLIMIT_FSIZE, &lim);
    try {
      a.save_state(0, prompt, logits, path);
      _exit(0);
    } catch (const Error&) {
      _exit(3);
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3) << "the save should have failed";
  EXPECT_TRUE(fs::is_empty(dir.path)) << "a failed save left a file behind";
  a.save_state(0, prompt, logits, path);  // without the limit it works
  EXPECT_TRUE(fs::exists(path));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}), 1);
}

}  // namespace
