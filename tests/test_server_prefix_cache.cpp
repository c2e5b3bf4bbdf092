// Prefix reuse in `keel serve`: the PrefixCache alone (chained keys, longest match, LRU leaves
// first), shared KV pages in a Session (a sequence that starts with another's pages computes the
// logits of a fresh prefill; reference counts bring every page back), and the BatchingEngine with
// the cache: greedy tokens equal an engine without it (stories260K, tiny-qwen3), the expected
// number of tokens is reused (prefixes on page boundaries too; the last prompt token is always
// recomputed), eviction under pool pressure keeps outputs and ends every request, a preempted
// request that comes back to shared pages replays to the same tokens, and --prompt-cache-dir
// spills and reloads whole prefixes (tiny-qwen35 too), skipping a corrupt file.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "model/model.h"
#include "runtime/session.h"
#include "server/batching_engine.h"
#include "server/prefix_cache.h"
#include "test_paths.h"

using namespace keel;
namespace fs = std::filesystem;

namespace {

std::vector<int32_t> ids(size_t n, int salt = 0) {
  std::vector<int32_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(3 + (i * 37 + static_cast<size_t>(salt) * 11) % 240);
  return out;
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<int32_t> first(const std::vector<int32_t>& v, size_t n) { return {v.begin(), v.begin() + static_cast<long>(n)}; }

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/keel-prefix-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

}  // namespace

// ---- the cache alone --------------------------------------------------------------------------

TEST(ServerPrefixCacheUnit, LongestChainOfFullPagesAndLruLeavesFirst) {
  server::PrefixCache cache(16, 4);
  std::vector<int32_t> kept;
  auto keep = [&](int32_t p) { kept.push_back(p); };
  const auto a = ids(14);  // 3 full pages and 2 tokens
  const std::vector<int32_t> a_pages = {5, 6, 7, 8};
  EXPECT_EQ(cache.insert(a, a_pages, keep), 3);  // the partial page is not cached
  EXPECT_EQ(kept, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(cache.size(), 3);

  std::vector<int32_t> hit;
  cache.lookup(a, 99, hit);
  EXPECT_EQ(hit, (std::vector<int32_t>{5, 6, 7}));
  hit.clear();
  cache.lookup(a, 2, hit);  // at most max_pages
  EXPECT_EQ(hit, (std::vector<int32_t>{5, 6}));
  auto b = a;
  b[9] += 1;  // diverges in the third page
  hit.clear();
  cache.lookup(b, 99, hit);
  EXPECT_EQ(hit, (std::vector<int32_t>{5, 6}));
  auto c = a;
  c[0] += 1;  // the same later pages after another first page are another prefix
  hit.clear();
  cache.lookup(c, 99, hit);
  EXPECT_TRUE(hit.empty());

  // b's row shares a's first two pages (attached from the cache) and owns page 9: only 9 is new.
  kept.clear();
  EXPECT_EQ(cache.insert(first(b, 12), std::vector<int32_t>{5, 6, 9}, keep), 1);
  EXPECT_EQ(kept, (std::vector<int32_t>{9}));

  // Leaves first, least recently used first; never a page in use.
  auto none = [](int32_t) { return false; };
  EXPECT_EQ(cache.evict(none), 7);
  EXPECT_EQ(cache.evict([](int32_t p) { return p == 5 || p == 6 || p == 9; }), -1);
  hit.clear();
  cache.lookup(first(a, 8), 99, hit);  // a's first two pages are used again: 9 is the oldest leaf
  EXPECT_EQ(cache.evict(none), 9);
  EXPECT_EQ(cache.evict([](int32_t p) { return p == 5; }), 6);
  EXPECT_EQ(cache.evict([](int32_t p) { return p == 5; }), -1);
  EXPECT_EQ(cache.evict(none), 5);
  EXPECT_EQ(cache.size(), 0);
  hit.clear();
  cache.lookup(a, 99, hit);
  EXPECT_TRUE(hit.empty());
}

// ---- shared pages in a session ----------------------------------------------------------------

namespace {

runtime::Session make_session(std::shared_ptr<const model::Model> m, int n_seqs) {
  runtime::SessionOptions o;
  o.n_ctx = 128;
  o.chunk = 32;
  o.n_threads = 2;
  o.page_tokens = 16;
  o.n_seqs = n_seqs;
  return runtime::Session(std::move(m), o);
}

// Prefills `tokens` into `seq` from its current length in the server's pieces (up to the next
// multiple of the chunk); returns the last token's logits.
std::vector<float> prefill(runtime::Session& s, int32_t seq, std::span<const int32_t> tokens) {
  std::vector<float> last;
  for (size_t done = 0; done < tokens.size();) {
    const int64_t at = s.n_past(seq);
    const size_t n = std::min<size_t>(static_cast<size_t>(s.chunk() - at % s.chunk()), tokens.size() - done);
    const runtime::SeqInput in{seq, tokens.subspan(done, n), done + n == tokens.size()};
    const auto rows = s.step(std::span<const runtime::SeqInput>(&in, 1));
    if (in.logits) last.assign(rows[0], rows[0] + s.model().hparams().n_vocab);
    done += n;
  }
  return last;
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, static_cast<double>(std::fabs(a[i] - b[i])));
  return d;
}

}  // namespace

TEST(SessionSharedPages, ASharedPrefixGivesTheLogitsOfAFreshPrefillAndEveryPageComesBack) {
  auto m = model::Model::load(test::shared("models/stories260K.gguf"));
  auto s = make_session(m, 3);
  const int32_t total = s.pages_total();
  const auto a = ids(70);
  prefill(s, 0, a);
  const std::vector<int32_t> a_pages(s.pages_of(0).begin(), s.pages_of(0).end());
  ASSERT_EQ(a_pages.size(), 5u);
  for (int i = 0; i < 4; ++i) s.retain_page(a_pages[static_cast<size_t>(i)]);  // as the cache keeps full pages
  EXPECT_EQ(s.page_refs(a_pages[0]), 2);
  EXPECT_EQ(s.pages_shared(), 4);
  s.remove_sequence(0);
  EXPECT_EQ(s.pages_free(), total - 4);  // the partial page came back, the kept ones did not
  EXPECT_EQ(s.pages_shared(), 0);

  // Two sequences start with a's first three pages and go on differently, in the same steps.
  const auto b = concat(first(a, 48), ids(30, 1));
  const auto c = concat(first(a, 48), ids(9, 2));
  const std::vector<int32_t> shared(a_pages.begin(), a_pages.begin() + 3);
  const int32_t sb = s.add_sequence(), sc = s.add_sequence();
  s.share_pages(sb, shared);
  s.share_pages(sc, shared);
  EXPECT_EQ(s.n_past(sb), 48);
  EXPECT_EQ(s.page_refs(shared[0]), 3);
  EXPECT_EQ(s.pages_shared(), 3);
  const runtime::SeqInput both[2] = {{sb, std::span<const int32_t>(b).subspan(48, 16), false},
                                     {sc, std::span<const int32_t>(c).subspan(48), true}};
  const auto rows = s.step(both);
  const std::vector<float> c_got(rows[0], rows[0] + m->hparams().n_vocab);
  const std::vector<float> b_got = prefill(s, sb, std::span<const int32_t>(b).subspan(64));
  auto fresh = make_session(m, 1);
  EXPECT_LE(max_diff(b_got, prefill(fresh, 0, b)), 1e-6);
  fresh.reset();
  EXPECT_LE(max_diff(c_got, prefill(fresh, 0, c)), 1e-6);

  // The shared pages were not written: a third sequence on them still gets a's continuation.
  const int32_t sd = s.add_sequence();
  s.share_pages(sd, std::span<const int32_t>(a_pages).first(4));
  const auto d_got = prefill(s, sd, std::span<const int32_t>(a).subspan(64));
  fresh.reset();
  EXPECT_LE(max_diff(d_got, prefill(fresh, 0, a)), 1e-6);

  EXPECT_THROW(s.share_pages(sd, shared), Error);  // not empty
  for (int32_t seq : {sb, sc, sd}) s.remove_sequence(seq);
  for (int i = 0; i < 4; ++i) s.release_page(a_pages[static_cast<size_t>(i)]);
  EXPECT_EQ(s.pages_free(), total);
  EXPECT_EQ(s.pages_shared(), 0);
  const int32_t se = s.add_sequence();
  EXPECT_THROW(s.share_pages(se, shared), Error);  // free pages cannot be shared
  EXPECT_THROW(s.release_page(shared[0]), Error);
}

TEST(SessionSharedPages, AHybridModelRefusesSharedPages) {
  auto m = model::Model::load(test::shared("fixtures/tiny-qwen35.gguf"));
  auto s = make_session(m, 2);
  prefill(s, 0, ids(40));
  const std::vector<int32_t> pages(s.pages_of(0).begin(), s.pages_of(0).begin() + 2);
  const int32_t other = s.add_sequence();
  EXPECT_THROW(s.share_pages(other, pages), Error);
  EXPECT_EQ(s.page_refs(pages[0]), 1);
}

// ---- the engine with the cache ----------------------------------------------------------------

namespace {

// A 256-token context in 16-token pages (16 + n_seqs - 1 of them), 32-token chunks.
std::unique_ptr<server::BatchingEngine> make_engine(const std::string& model_path, int n_seqs,
                                                    const server::PrefixCacheOptions& cache) {
  auto model = model::Model::load(test::shared(model_path));
  runtime::SessionOptions so;
  so.n_ctx = 256;
  so.chunk = 32;
  so.n_seqs = n_seqs;
  so.page_tokens = 16;
  so.n_threads = 1;
  return std::make_unique<server::BatchingEngine>(model, tokenizer::Tokenizer::from_gguf(model->file()), so,
                                                  std::nullopt, nlohmann::ordered_json::object(), "m", 16, cache);
}

server::PrefixCacheOptions no_cache() {
  server::PrefixCacheOptions o;
  o.memory = false;
  return o;
}

struct Outcome {
  std::vector<int32_t> tokens;  // generated
  server::GenerationResult result;
};

// A greedy request; the generated token ids come through the logprobs callback.
Outcome generate(server::Engine& e, const std::vector<int32_t>& prompt, int64_t max_tokens,
                 const std::function<void()>& on_first_text = {}) {
  server::GenerationRequest g;
  g.prompt = prompt;
  g.max_tokens = max_tokens;
  g.sampling.temperature = 0;
  g.logprobs = true;
  Outcome o;
  server::GenerationCallbacks cb;
  bool first_text = true;
  cb.on_logprobs = [&](std::span<const server::TokenLogprobs> l) {
    if (first_text && on_first_text) on_first_text();
    first_text = false;
    for (const auto& t : l) o.tokens.push_back(t.token.id);
    return true;
  };
  o.result = e.generate(g, cb);
  return o;
}

template <class Pred>
bool eventually(const server::Engine& e, Pred done) {
  for (int i = 0; i < 2000 && !done(e.stats()); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return done(e.stats());
}

bool all_pages_back(const server::EngineStats& s) {
  return s.requests_running == 0 && s.kv_pages_used == 0 && s.kv_pages_cached == 0;
}

}  // namespace

class ServerPrefixCache : public ::testing::TestWithParam<const char*> {};

TEST_P(ServerPrefixCache, GreedyTokensEqualAnEngineWithoutTheCacheAndFullPagesAreReused) {
  auto cached = make_engine(GetParam(), 2, {});
  auto plain = make_engine(GetParam(), 2, no_cache());
  ASSERT_TRUE(cached->stats().prefix_cache_enabled);
  ASSERT_FALSE(plain->stats().prefix_cache_enabled);
  const auto p1 = ids(40);
  struct Step {
    std::vector<int32_t> prompt;
    int64_t max_tokens;
    int64_t reused;  // tokens the cache should give it
  };
  std::vector<Step> steps;
  // 1: nothing cached. It leaves 40 + 19 fed tokens: 3 full pages.
  steps.push_back({p1, 20, 0});
  auto run_step = [&](const Step& st, int64_t reused_before) {
    const Outcome want = generate(*plain, st.prompt, st.max_tokens);
    const Outcome got = generate(*cached, st.prompt, st.max_tokens);
    EXPECT_EQ(got.tokens, want.tokens);
    EXPECT_EQ(got.result.finish, want.result.finish);
    EXPECT_EQ(cached->stats().prefix_cache_reused_tokens - reused_before, st.reused);
    return want;
  };
  const Outcome o1 = run_step(steps[0], 0);
  ASSERT_EQ(o1.tokens.size(), 20u);
  // 2: a second question after the first answer: the 3 cached pages (48 tokens).
  steps.push_back({concat(concat(p1, o1.tokens), ids(10, 1)), 12, 48});
  // 3: the first 32 tokens, then others: exactly two pages, the prefix ends on a page boundary.
  steps.push_back({concat(first(p1, 32), ids(20, 2)), 8, 32});
  // 4: exactly two pages of prompt: one is reused, the last prompt token is computed again.
  steps.push_back({first(p1, 32), 8, 16});
  int64_t reused = 0;
  for (size_t i = 1; i < steps.size(); ++i) {
    SCOPED_TRACE(i);
    run_step(steps[i], reused);
    reused += steps[i].reused;
  }
  const server::EngineStats s = cached->stats(), p = plain->stats();
  EXPECT_EQ(s.prefix_cache_hits, 3);
  EXPECT_EQ(s.prefix_cache_misses, 1);
  EXPECT_EQ(s.prefix_cache_reused_tokens, 96);
  EXPECT_EQ(s.prompt_tokens_total, p.prompt_tokens_total - 96);  // prefilled: the rest only
  EXPECT_EQ(p.prefix_cache_hits + p.prefix_cache_misses, 0);
  // Nothing runs: no page is used, and once the cache lets go every page is free again.
  EXPECT_EQ(s.kv_pages_used, 0);
  EXPECT_GT(s.kv_pages_cached, 0);
  cached->clear_prefix_cache();
  EXPECT_TRUE(eventually(*cached, all_pages_back));
}

INSTANTIATE_TEST_SUITE_P(Models, ServerPrefixCache,
                         ::testing::Values("models/stories260K.gguf", "fixtures/tiny-qwen3.gguf"));

TEST(ServerPrefixCacheEngine, EvictionUnderPoolPressureKeepsOutputsAndEveryRequestEnds) {
  // 17 pages; three clients, each with three prompts of 80 tokens and 40 new ones (8 pages a
  // request): the cache fills and must give pages back while requests run beside each other.
  auto cached = make_engine("models/stories260K.gguf", 2, {});
  auto plain = make_engine("models/stories260K.gguf", 1, no_cache());
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 9; ++i) prompts.push_back(concat(first(ids(48), 16 * (i % 3)), ids(80 - 16 * (i % 3), 10 + i)));
  std::vector<Outcome> want;
  for (const auto& p : prompts) want.push_back(generate(*plain, p, 40));
  std::vector<std::future<std::vector<Outcome>>> clients;
  for (int c = 0; c < 3; ++c)
    clients.push_back(std::async(std::launch::async, [&, c] {
      std::vector<Outcome> out;
      for (int k = 0; k < 3; ++k) out.push_back(generate(*cached, prompts[static_cast<size_t>(3 * k + c)], 40));
      return out;
    }));
  for (int c = 0; c < 3; ++c) {
    ASSERT_EQ(clients[static_cast<size_t>(c)].wait_for(std::chrono::seconds(300)), std::future_status::ready);
    const auto got = clients[static_cast<size_t>(c)].get();
    for (int k = 0; k < 3; ++k) {
      SCOPED_TRACE(3 * k + c);
      EXPECT_EQ(got[static_cast<size_t>(k)].result.finish, server::FinishReason::length);
      EXPECT_EQ(got[static_cast<size_t>(k)].tokens, want[static_cast<size_t>(3 * k + c)].tokens);
    }
  }
  const server::EngineStats s = cached->stats();
  EXPECT_GT(s.prefix_cache_evicted_pages, 0);
  EXPECT_LE(s.kv_pages_cached, s.kv_pages_total);
  EXPECT_EQ(s.kv_pages_used, 0);
  cached->clear_prefix_cache();
  EXPECT_TRUE(eventually(*cached, all_pages_back));
}

TEST(ServerPrefixCacheEngine, APreemptedRequestReplaysIdenticallyOnSharedPages) {
  // W leaves a 48-token prefix in the cache. B and C start with it (2 pages shared each) and,
  // without max_tokens, both grow to the whole context; the pool (19 pages) holds one of them,
  // so C is preempted, comes back (to the cached pages of its own prompt and answer) and replays.
  // Both clients stall until both run, so both are admitted before either can finish.
  auto cached = make_engine("models/stories260K.gguf", 4, {});
  auto plain = make_engine("models/stories260K.gguf", 1, no_cache());
  const auto prefix = ids(40, 3);
  generate(*cached, prefix, 9);
  const std::vector<std::vector<int32_t>> prompts = {concat(prefix, ids(7, 4)), concat(prefix, ids(12, 5))};
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::vector<std::future<Outcome>> runs;
  for (size_t i = 0; i < 2; ++i) {
    runs.push_back(std::async(std::launch::async, [&, i] { return generate(*cached, prompts[i], -1, [&] { released.wait(); }); }));
    const int64_t running = static_cast<int64_t>(i) + 1;  // (no ASSERT before the release below)
    EXPECT_TRUE(eventually(*cached, [running](const server::EngineStats& s) { return s.requests_running == running; }));
  }
  release.set_value();
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(i);
    const Outcome got = runs[i].get();
    const Outcome want = generate(*plain, prompts[i], -1);
    EXPECT_EQ(got.result.finish, server::FinishReason::length);
    EXPECT_EQ(got.tokens.size(), 256 - prompts[i].size());
    EXPECT_EQ(got.tokens, want.tokens);
  }
  const server::EngineStats s = cached->stats();
  EXPECT_GE(s.requests_preempted, 1);
  EXPECT_GE(s.prefix_cache_hits, 3);  // B, C, and C's return
  EXPECT_GE(s.prefix_cache_reused_tokens, 2 * 32 + 48);
  cached->clear_prefix_cache();
  EXPECT_TRUE(eventually(*cached, all_pages_back));
}

TEST(ServerPrefixCacheEngine, ARunningRequestsPromptPagesServeALaterRequest) {
  // A's client stalls, so A holds its sequence (decoded tokens enter the cache only when it
  // ends); its 4 prompt pages entered the cache as its prefill completed them. B, admitted beside it, attaches 3 of them (48 tokens).
  auto cached = make_engine("models/stories260K.gguf", 2, {});
  auto plain = make_engine("models/stories260K.gguf", 1, no_cache());
  const auto a = ids(64, 6), b = concat(first(a, 48), ids(10, 7));
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  // (No max_tokens: A cannot end before its client is released, whatever it had taken first.)
  auto run_a = std::async(std::launch::async, [&] { return generate(*cached, a, -1, [&] { released.wait(); }); });
  EXPECT_TRUE(eventually(*cached, [](const server::EngineStats& s) { return s.requests_running == 1 && s.kv_pages_cached == 4; }));
  const Outcome got_b = generate(*cached, b, 12);
  EXPECT_EQ(run_a.wait_for(std::chrono::seconds(0)), std::future_status::timeout);  // A still runs
  const server::EngineStats during = cached->stats();
  release.set_value();
  const Outcome got_a = run_a.get();
  EXPECT_EQ(during.prefix_cache_reused_tokens, 48);
  EXPECT_EQ(got_b.tokens, generate(*plain, b, 12).tokens);
  EXPECT_EQ(got_a.tokens, generate(*plain, a, -1).tokens);
  cached->clear_prefix_cache();
  EXPECT_TRUE(eventually(*cached, all_pages_back));
}

// ---- --prompt-cache-dir -----------------------------------------------------------------------

class ServerDiskCache : public ::testing::TestWithParam<const char*> {};

TEST_P(ServerDiskCache, SpilledPrefixesReloadInAnotherEngineWithEqualOutputs) {
  TempDir dir;
  server::PrefixCacheOptions disk;
  disk.disk_dir = dir.path.string();
  auto plain = make_engine(GetParam(), 1, no_cache());
  const auto p1 = ids(40);
  const Outcome o1 = generate(*plain, p1, 20);
  const auto p2 = concat(concat(p1, o1.tokens), ids(10, 1));
  const Outcome want = generate(*plain, p2, 12);
  {
    auto first_engine = make_engine(GetParam(), 2, disk);
    EXPECT_EQ(generate(*first_engine, p1, 20).tokens, o1.tokens);
    const server::EngineStats s = first_engine->stats();
    EXPECT_EQ(s.disk_cache_writes, 1);
    EXPECT_EQ(s.disk_cache_files, 1);
    EXPECT_GT(s.disk_cache_bytes, 0);
  }
  // A new engine (a restarted server): the 59 tokens the first request fed come from the file.
  auto second = make_engine(GetParam(), 2, disk);
  EXPECT_EQ(second->stats().disk_cache_files, 1);
  const Outcome got = generate(*second, p2, 12);
  EXPECT_EQ(got.tokens, want.tokens);
  const server::EngineStats s = second->stats();
  EXPECT_EQ(s.disk_cache_hits, 1);
  EXPECT_EQ(s.disk_cache_reused_tokens, 59);
  EXPECT_EQ(s.prompt_tokens_total, static_cast<int64_t>(p2.size()) - 59);
  EXPECT_EQ(s.disk_cache_errors, 0);
  // The longer conversation superseded the first file (attention-only) or joined it (hybrid).
  EXPECT_EQ(s.disk_cache_files, std::string(GetParam()).find("qwen35") != std::string::npos ? 2 : 1);
}

INSTANTIATE_TEST_SUITE_P(Models, ServerDiskCache,
                         ::testing::Values("models/stories260K.gguf", "fixtures/tiny-qwen3.gguf",
                                           "fixtures/tiny-qwen35.gguf"));

TEST(ServerDiskCacheFiles, CorruptFilesAreSkippedNeverUsed) {
  TempDir dir;
  server::PrefixCacheOptions disk;
  disk.disk_dir = dir.path.string();
  disk.memory = false;
  const auto p1 = ids(40);
  {
    auto e = make_engine("models/stories260K.gguf", 1, disk);
    generate(*e, p1, 20);
  }
  std::vector<fs::path> files;
  for (const auto& f : fs::directory_iterator(dir.path)) files.push_back(f.path());
  ASSERT_EQ(files.size(), 1u);
  {  // a flipped byte in the KV pages: only the body checksum can tell
    std::fstream f(files[0], std::ios::in | std::ios::out | std::ios::binary);
    const auto middle = static_cast<std::streamoff>(fs::file_size(files[0]) / 2);
    f.seekg(middle);
    const char byte = static_cast<char>(f.get());
    f.seekp(middle);
    f.put(static_cast<char>(byte ^ 0x5a));
  }
  std::ofstream(dir.path / "junk.kcache") << "not a state file";  // skipped when the index is read
  auto plain = make_engine("models/stories260K.gguf", 1, no_cache());
  const auto p2 = concat(p1, ids(30, 1));
  const Outcome want = generate(*plain, p2, 12);
  auto e = make_engine("models/stories260K.gguf", 1, disk);
  EXPECT_EQ(e->stats().disk_cache_files, 1);  // the junk is not indexed
  const Outcome got = generate(*e, p2, 12);
  EXPECT_EQ(got.tokens, want.tokens);
  const server::EngineStats s = e->stats();
  EXPECT_EQ(s.disk_cache_errors, 1);
  EXPECT_EQ(s.disk_cache_hits, 0);
  EXPECT_EQ(s.prompt_tokens_total, static_cast<int64_t>(p2.size()));
  EXPECT_FALSE(fs::exists(files[0]));  // deleted; p2's own file took its place
  EXPECT_EQ(s.disk_cache_files, 1);
}

TEST(ServerDiskCacheFiles, TheSizeCapRemovesTheLeastRecentlyUsedFile) {
  server::PrefixCacheOptions disk;
  disk.memory = false;
  const auto p1 = ids(40), p2 = ids(40, 9);
  uint64_t one_file = 0;
  {
    TempDir probe;
    disk.disk_dir = probe.path.string();
    auto e = make_engine("models/stories260K.gguf", 1, disk);
    generate(*e, p1, 20);
    one_file = static_cast<uint64_t>(e->stats().disk_cache_bytes);
    ASSERT_GT(one_file, 0u);
  }
  TempDir dir;
  disk.disk_dir = dir.path.string();
  disk.disk_max_bytes = one_file + one_file / 2;  // room for one file of this length
  auto e = make_engine("models/stories260K.gguf", 1, disk);
  generate(*e, p1, 20);
  generate(*e, p2, 20);  // as long as p1's: p1's file goes
  server::EngineStats s = e->stats();
  EXPECT_EQ(s.disk_cache_writes, 2);
  EXPECT_EQ(s.disk_cache_files, 1);
  EXPECT_LE(static_cast<uint64_t>(s.disk_cache_bytes), disk.disk_max_bytes);
  generate(*e, concat(p2, ids(8, 1)), 4);  // p2's prefix is there
  generate(*e, concat(p1, ids(8, 1)), 4);  // p1's is gone
  s = e->stats();
  EXPECT_EQ(s.disk_cache_hits, 1);
  EXPECT_EQ(s.disk_cache_reused_tokens, 40);
}
