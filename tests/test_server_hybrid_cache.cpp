// Prefix reuse in `keel serve` for a hybrid model (tiny-qwen35: Gated DeltaNet layers with a
// recurrent state beside two attention layers): the snapshot bookkeeping alone (slots, LRU), a
// Session that restores a snapshot with shared pages (the logits of a fresh prefill), the plan
// (every snapshot byte planned and allocated), and the BatchingEngine: greedy tokens equal an
// engine without the cache for prefixes ending on and off page boundaries, with the exact number of
// reused tokens (a cached prefix is usable only up to its last snapshot); snapshots evicted under
// slot pressure take their useless pages with them; a running request's prompt serves a later
// one; a preempted or cancelled request leaves its snapshotted prefix behind.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <future>
#include <thread>

#include "model/model.h"
#include "plan/plan.h"
#include "runtime/session.h"
#include "server/api.h"
#include "server/batching_engine.h"
#include "server/state_snapshots.h"
#include "test_paths.h"

using namespace keel;

namespace {

constexpr const char* kHybrid = "fixtures/tiny-qwen35.gguf";

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

}  // namespace

// ---- the bookkeeping alone --------------------------------------------------------------------

TEST(StateSnapshotsUnit, FreeSlotsFirstThenTheLeastRecentlyUsed) {
  server::StateSnapshots s(2, 10);
  int32_t evicted = 99;
  EXPECT_EQ(s.take(4, evicted), 0);
  EXPECT_EQ(evicted, -1);
  EXPECT_EQ(s.take(7, evicted), 1);
  EXPECT_EQ(evicted, -1);
  EXPECT_EQ(s.size(), 2);
  EXPECT_EQ(s.slot_of(4), 0);
  EXPECT_EQ(s.slot_of(5), -1);
  s.touch(4);  // 7 is now the older
  EXPECT_EQ(s.take(2, evicted), 1);
  EXPECT_EQ(evicted, 7);
  EXPECT_EQ(s.slot_of(7), -1);
  EXPECT_EQ(s.slot_of(2), 1);
  s.drop(4);  // its page left the cache: the slot is free again
  EXPECT_EQ(s.size(), 1);
  EXPECT_EQ(s.take(9, evicted), 0);
  EXPECT_EQ(evicted, -1);
  server::StateSnapshots none(0, 10);
  EXPECT_EQ(none.take(1, evicted), -1);
}

// ---- a session restoring a snapshot -----------------------------------------------------------

namespace {

runtime::Session make_session(int n_seqs, int snapshots) {
  runtime::SessionOptions o;
  o.n_ctx = 128;
  o.chunk = 32;
  o.n_threads = 2;
  o.page_tokens = 16;
  o.n_seqs = n_seqs;
  o.state_snapshots = snapshots;
  return runtime::Session(model::Model::load(test::shared(kHybrid)), o);
}

std::vector<float> step_logits(runtime::Session& s, int32_t seq, std::span<const int32_t> tokens) {
  const runtime::SeqInput in{seq, tokens, true};
  const auto rows = s.step(std::span<const runtime::SeqInput>(&in, 1));
  return {rows[0], rows[0] + s.model().hparams().n_vocab};
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, static_cast<double>(std::fabs(a[i] - b[i])));
  return d;
}

}  // namespace

TEST(SessionStateSnapshots, SharedPagesWithTheirSnapshotGiveTheLogitsOfAFreshPrefill) {
  auto s = make_session(2, 2);
  ASSERT_EQ(s.snapshot_slots(), 2);
  EXPECT_EQ(s.snapshot_bytes(), 6u * (3u * 512u + 4u * 64u * 64u) * 4u);  // 6 GDN layers: conv + delta state
  const auto t = ids(48);
  step_logits(s, 0, std::span<const int32_t>(t).first(16));
  s.save_snapshot(0, 1);  // after one page
  step_logits(s, 0, std::span<const int32_t>(t).subspan(16, 16));
  s.save_snapshot(0, 0);  // after two pages
  const auto want = step_logits(s, 0, std::span<const int32_t>(t).subspan(32));

  const std::vector<int32_t> pages(s.pages_of(0).begin(), s.pages_of(0).begin() + 2);
  const int32_t other = s.add_sequence();
  EXPECT_THROW(s.share_pages(other, pages), Error);        // pages alone cannot restore the state
  EXPECT_THROW(s.share_pages(other, pages, 2), Error);     // no such slot
  s.share_pages(other, pages, 0);
  EXPECT_EQ(s.n_past(other), 32);
  EXPECT_EQ(max_diff(step_logits(s, other, std::span<const int32_t>(t).subspan(32)), want), 0.0);

  // The snapshot after one page restored with two pages: another state, other logits.
  s.remove_sequence(other);
  const int32_t wrong = s.add_sequence();
  s.share_pages(wrong, pages, 1);
  EXPECT_GT(max_diff(step_logits(s, wrong, std::span<const int32_t>(t).subspan(32)), want), 1e-3);
}

TEST(SessionStateSnapshots, ThePlanCountsEverySnapshotByteAndTheSessionAllocatesThem) {
  auto model = model::Model::load(test::shared(kHybrid));
  plan::PlanRequest req;
  req.n_ctx = 512;
  req.chunk = 64;
  req.n_seqs = 2;
  req.page_tokens = 16;
  req.state_snapshots = 5;
  const plan::Plan p = plan::plan_for_model(*model, req);
  ASSERT_TRUE(p.fits);
  EXPECT_EQ(p.options.state_snapshots, 5);
  const uint64_t per = 6u * (3u * 512u + 4u * 64u * 64u) * 4u;
  EXPECT_EQ(p.bytes(plan::Category::recurrent_state), (2u + 5u) * per);
  runtime::Session session(model, p.options);
  EXPECT_EQ(session.allocated_bytes(), p.session_bytes());
  EXPECT_EQ(session.layout().state_bytes(), p.bytes(plan::Category::recurrent_state));
  EXPECT_NE(plan::format_plan(p).find("5 prefix-cache snapshots of"), std::string::npos);

  // auto: a chunk of the context each plus three per sequence, when memory allows.
  req.state_snapshots = plan::kAutoStateSnapshots;
  EXPECT_EQ(plan::plan_for_model(*model, req).options.state_snapshots, 512 / 64 + 3 * 2);
  // A model without recurrent state plans none.
  auto llama = model::Model::load(test::shared("models/stories260K.gguf"));
  EXPECT_EQ(plan::plan_for_model(*llama, req).options.state_snapshots, 0);
}

// ---- the engine with the cache ----------------------------------------------------------------

namespace {

// By default a 256-token context in 16-token pages (16 + n_seqs - 1 of them), 32-token chunks.
std::unique_ptr<server::BatchingEngine> make_engine(int n_seqs, int snapshots, bool memory = true, int64_t n_ctx = 256,
                                                    int64_t chunk = 32) {
  auto model = model::Model::load(test::shared(kHybrid));
  runtime::SessionOptions so;
  so.n_ctx = n_ctx;
  so.chunk = chunk;
  so.n_seqs = n_seqs;
  so.page_tokens = 16;
  so.n_threads = 1;
  so.state_snapshots = snapshots;
  server::PrefixCacheOptions cache;
  cache.memory = memory;
  return std::make_unique<server::BatchingEngine>(model, tokenizer::Tokenizer::from_gguf(model->file()), so,
                                                  std::nullopt, nlohmann::ordered_json::object(), "m", 16, cache);
}

std::unique_ptr<server::BatchingEngine> make_plain() { return make_engine(1, 0, false); }

struct Outcome {
  std::vector<int32_t> tokens;  // generated
  server::GenerationResult result;
};

// A greedy request; the generated token ids come through the logprobs callback. on_first_text
// returning false cancels the request there.
Outcome generate(server::Engine& e, const std::vector<int32_t>& prompt, int64_t max_tokens,
                 const std::function<bool()>& on_first_text = {}) {
  server::GenerationRequest g;
  g.prompt = prompt;
  g.max_tokens = max_tokens;
  g.sampling.temperature = 0;
  g.logprobs = true;
  Outcome o;
  server::GenerationCallbacks cb;
  bool first_text = true;
  cb.on_logprobs = [&](std::span<const server::TokenLogprobs> l) {
    const bool go_on = !first_text || !on_first_text || on_first_text();
    first_text = false;
    for (const auto& t : l) o.tokens.push_back(t.token.id);
    return go_on;
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
  return s.requests_running == 0 && s.kv_pages_used == 0 && s.kv_pages_cached == 0 && s.state_snapshots_cached == 0;
}

}  // namespace

TEST(ServerHybridCache, WithoutSnapshotsNothingIsSharedInMemory) {
  auto e = make_engine(2, 0);
  const server::EngineStats s = e->stats();
  EXPECT_FALSE(s.prefix_cache_enabled);
  EXPECT_EQ(s.state_snapshots_total, 0);
}

TEST(ServerHybridCache, GreedyTokensEqualAnEngineWithoutTheCacheAndSnapshottedPrefixesAreReused) {
  auto cached = make_engine(2, 8);
  auto plain = make_plain();
  ASSERT_TRUE(cached->stats().prefix_cache_enabled);
  EXPECT_EQ(cached->stats().state_snapshots_total, 8);
  EXPECT_EQ(cached->stats().state_snapshot_bytes, 6 * (3 * 512 + 4 * 64 * 64) * 4);
  int64_t reused_before = 0;
  auto check = [&](const std::vector<int32_t>& prompt, int64_t max_tokens, int64_t reused) {
    const Outcome want = generate(*plain, prompt, max_tokens);
    const Outcome got = generate(*cached, prompt, max_tokens);
    EXPECT_EQ(got.tokens, want.tokens);
    EXPECT_EQ(got.result.finish, want.result.finish);
    EXPECT_EQ(cached->stats().prefix_cache_reused_tokens - reused_before, reused);
    reused_before = cached->stats().prefix_cache_reused_tokens;
    return want;
  };
  // 1: nothing cached. Its 40-token prompt is prefilled as 32 (the last full page: a snapshot)
  // and 8; its decoded tokens take no snapshot, so it leaves 2 pages with a snapshot at 32.
  const auto p1 = ids(40);
  const Outcome o1 = check(p1, 20, 0);
  ASSERT_EQ(o1.tokens.size(), 20u);
  EXPECT_EQ(cached->stats().state_snapshots_taken, 1);
  EXPECT_EQ(cached->stats().kv_pages_cached, 2);
  // 2: a second question after the first answer: 32 tokens (a pure-attention model's 48 has no
  // snapshot at its end). Its prompt of 70 is prefilled 32..64 (a chunk end and its last full
  // page: a snapshot), then 64..70.
  const auto p2 = concat(concat(p1, o1.tokens), ids(10, 1));
  check(p2, 12, 32);
  EXPECT_EQ(cached->stats().state_snapshots_taken, 2);
  // 3: diverging right at the page boundary 32: both pages; then 32..48 for a snapshot of its own.
  check(concat(first(p1, 32), ids(20, 2)), 8, 32);
  // 4: exactly two pages of prompt: at most one page may be reused (its last token is computed
  // again), and no snapshot ends that page: nothing.
  check(first(p1, 32), 8, 0);
  // 5: diverging off a page boundary (at 67, inside page 4): up to p2's snapshot at 64.
  check(concat(first(p2, 67), ids(9, 4)), 6, 64);
  // 6: diverging at 45, inside p2's third page: up to the snapshot at 32.
  check(concat(first(p2, 45), ids(15, 3)), 6, 32);
  const server::EngineStats s = cached->stats(), p = plain->stats();
  EXPECT_EQ(s.prefix_cache_hits, 4);
  EXPECT_EQ(s.prefix_cache_misses, 2);
  EXPECT_EQ(s.prefix_cache_reused_tokens, 32 + 32 + 64 + 32);
  EXPECT_EQ(s.prompt_tokens_total, p.prompt_tokens_total - (32 + 32 + 64 + 32));  // prefilled: the rest only
  EXPECT_EQ(s.state_snapshots_evicted, 0);
  EXPECT_GT(s.state_snapshots_cached, 0);
  const std::string metrics = server::metrics_text(s);
  EXPECT_NE(metrics.find("\nkeel_prefix_cache_enabled 1\n"), std::string::npos);
  EXPECT_NE(metrics.find("\nkeel_state_snapshots_total 8\n"), std::string::npos);
  EXPECT_NE(metrics.find("\nkeel_state_snapshots_taken_total " + std::to_string(s.state_snapshots_taken) + "\n"),
            std::string::npos);
  EXPECT_EQ(s.kv_pages_used, 0);
  cached->clear_prefix_cache();
  EXPECT_TRUE(eventually(*cached, all_pages_back));
}

TEST(ServerHybridCache, LongChunksAreCutForAFollowUpQuestionAndAContinuedConversation) {
  // One 512-token chunk holds the whole 300-token prompt, so no chunk end lands inside it; its
  // prefill is cut at 32 (the last page boundary 256 tokens before its end) and at 288 (its last
  // full page), and both get snapshots.
  auto cached = make_engine(1, 8, true, 512, 512);
  auto plain = make_engine(1, 0, false, 512, 512);
  const auto p = ids(300, 30);
  EXPECT_EQ(generate(*cached, p, 4).tokens, generate(*plain, p, 4).tokens);
  EXPECT_EQ(cached->stats().state_snapshots_taken, 2);
  // The conversation goes on: everything up to the last full page.
  const auto longer = concat(first(p, 290), ids(20, 31));
  EXPECT_EQ(generate(*cached, longer, 4).tokens, generate(*plain, longer, 4).tokens);
  EXPECT_EQ(cached->stats().prefix_cache_reused_tokens, 288);
  // Another question after the first 200 tokens: back to the cut at 32.
  const auto other = concat(first(p, 200), ids(10, 32));
  EXPECT_EQ(generate(*cached, other, 4).tokens, generate(*plain, other, 4).tokens);
  EXPECT_EQ(cached->stats().prefix_cache_reused_tokens, 288 + 32);
}

TEST(ServerHybridCache, SnapshotsEvictedUnderSlotPressureTakeTheirUselessPagesAlong) {
  // Two slots. Each 70-token prompt takes snapshots at 32 and 64 (a chunk end, then the last full
  // page); the second prompt's two evict the first's (least recently used), and the first's four
  // pages, which then resume nothing, leave the cache.
  auto cached = make_engine(2, 2);
  auto plain = make_plain();
  const auto a = ids(70, 20), b = ids(70, 21);
  EXPECT_EQ(generate(*cached, a, 4).tokens, generate(*plain, a, 4).tokens);
  server::EngineStats s = cached->stats();
  EXPECT_EQ(s.state_snapshots_cached, 2);
  EXPECT_EQ(s.kv_pages_cached, 4);
  EXPECT_EQ(generate(*cached, b, 4).tokens, generate(*plain, b, 4).tokens);
  s = cached->stats();
  EXPECT_EQ(s.state_snapshots_taken, 4);
  EXPECT_EQ(s.state_snapshots_evicted, 2);
  EXPECT_EQ(s.state_snapshots_cached, 2);
  EXPECT_EQ(s.kv_pages_cached, 4);  // b's
  EXPECT_EQ(s.prefix_cache_evicted_pages, 4);  // a's
  // b's prefix is there, a's is gone.
  const auto a2 = concat(first(a, 66), ids(6, 22)), b2 = concat(first(b, 66), ids(6, 23));
  EXPECT_EQ(generate(*cached, b2, 6).tokens, generate(*plain, b2, 6).tokens);
  EXPECT_EQ(cached->stats().prefix_cache_reused_tokens, 64);
  EXPECT_EQ(generate(*cached, a2, 6).tokens, generate(*plain, a2, 6).tokens);
  EXPECT_EQ(cached->stats().prefix_cache_reused_tokens, 64);
  cached->clear_prefix_cache();
  EXPECT_TRUE(eventually(*cached, all_pages_back));
}

TEST(ServerHybridCache, EvictionUnderPoolPressureKeepsOutputsAndEveryRequestEnds) {
  // 17 pages; three clients, each with two prompts of 80 tokens and 40 new ones (8 pages a
  // request): the cache fills and must give pages (and their snapshots) back while requests run.
  auto cached = make_engine(2, 6);
  auto plain = make_plain();
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 6; ++i) prompts.push_back(concat(first(ids(48), 32 * (i % 2)), ids(80 - 32 * (i % 2), 10 + i)));
  std::vector<Outcome> want;
  for (const auto& p : prompts) want.push_back(generate(*plain, p, 40));
  std::vector<std::future<std::vector<Outcome>>> clients;
  for (int c = 0; c < 3; ++c)
    clients.push_back(std::async(std::launch::async, [&, c] {
      std::vector<Outcome> out;
      for (int k = 0; k < 2; ++k) out.push_back(generate(*cached, prompts[static_cast<size_t>(3 * k + c)], 40));
      return out;
    }));
  for (int c = 0; c < 3; ++c) {
    ASSERT_EQ(clients[static_cast<size_t>(c)].wait_for(std::chrono::seconds(300)), std::future_status::ready);
    const auto got = clients[static_cast<size_t>(c)].get();
    for (int k = 0; k < 2; ++k) {
      SCOPED_TRACE(3 * k + c);
      EXPECT_EQ(got[static_cast<size_t>(k)].result.finish, want[static_cast<size_t>(3 * k + c)].result.finish);
      EXPECT_EQ(got[static_cast<size_t>(k)].tokens, want[static_cast<size_t>(3 * k + c)].tokens);
    }
  }
  const server::EngineStats s = cached->stats();
  EXPECT_GT(s.prefix_cache_evicted_pages, 0);
  EXPECT_EQ(s.kv_pages_used, 0);
  cached->clear_prefix_cache();
  EXPECT_TRUE(eventually(*cached, all_pages_back));
}

TEST(ServerHybridCache, ARunningRequestsPromptServesALaterRequest) {
  // A's client stalls, so A holds its sequence; its 64-token prompt was snapshotted at 32 and 64
  // as its prefill reached them. B, admitted beside it, shares all 4 pages and restores the
  // snapshot at 64.
  auto cached = make_engine(2, 8);
  auto plain = make_plain();
  const auto a = ids(64, 6), b = concat(a, ids(10, 7));
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  auto run_a = std::async(std::launch::async, [&] {
    return generate(*cached, a, -1, [&] {
      released.wait();
      return true;
    });
  });
  EXPECT_TRUE(eventually(*cached, [](const server::EngineStats& s) {
    return s.requests_running == 1 && s.kv_pages_cached == 4 && s.state_snapshots_cached == 2;
  }));
  const Outcome got_b = generate(*cached, b, 12);
  EXPECT_EQ(run_a.wait_for(std::chrono::seconds(0)), std::future_status::timeout);  // A still runs
  const server::EngineStats during = cached->stats();
  release.set_value();
  const Outcome got_a = run_a.get();
  EXPECT_EQ(during.prefix_cache_reused_tokens, 64);
  EXPECT_EQ(got_b.tokens, generate(*plain, b, 12).tokens);
  EXPECT_EQ(got_a.tokens, generate(*plain, a, -1).tokens);
  cached->clear_prefix_cache();
  EXPECT_TRUE(eventually(*cached, all_pages_back));
}

TEST(ServerHybridCache, APreemptedRequestComesBackToItsSnapshotAndReplaysIdentically) {
  // W leaves its prompt's 32 snapshotted tokens in the cache. B and C start with them and,
  // without max_tokens, both grow to the whole context; the pool (19 pages) holds one of them, so
  // C is preempted, comes back to its own prompt's snapshot (at 48, its last full page) and
  // replays its generated tokens. Both clients stall until both run.
  auto cached = make_engine(4, 8);
  auto plain = make_plain();
  const auto prefix = ids(40, 3);
  generate(*cached, prefix, 9);
  // (Prompts whose greedy continuations do not reach </s> before the context is full.)
  const std::vector<std::vector<int32_t>> prompts = {concat(prefix, ids(12, 4)), concat(prefix, ids(12, 6))};
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::vector<std::future<Outcome>> runs;
  for (size_t i = 0; i < 2; ++i) {
    runs.push_back(std::async(std::launch::async, [&, i] {
      return generate(*cached, prompts[i], -1, [&] {
        released.wait();
        return true;
      });
    }));
    const int64_t running = static_cast<int64_t>(i) + 1;
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

TEST(ServerHybridCache, ACancelledRequestLeavesItsSnapshottedPrefix) {
  auto cached = make_engine(1, 8);
  auto plain = make_plain();
  const auto a = ids(70, 8);
  const Outcome cancelled = generate(*cached, a, 50, [] { return false; });
  EXPECT_EQ(cancelled.result.finish, server::FinishReason::cancelled);
  EXPECT_TRUE(eventually(*cached, [](const server::EngineStats& s) { return s.requests_running == 0; }));
  const auto b = concat(first(a, 68), ids(5, 9));
  EXPECT_EQ(generate(*cached, b, 6).tokens, generate(*plain, b, 6).tokens);
  EXPECT_EQ(cached->stats().prefix_cache_reused_tokens, 64);
  cached->clear_prefix_cache();
  EXPECT_TRUE(eventually(*cached, all_pages_back));
}
