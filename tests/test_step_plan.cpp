// The server's batching policy (server/step_plan.h) on its own: decodes first, prefill pieces
// round-robin within the call's budget, never cut (so each request's chunk boundaries are those
// of `keel run`, whatever else is running), paused requests sit out, and no request starves.
#include <gtest/gtest.h>

#include <map>

#include "server/step_plan.h"

using namespace keel::server;

namespace {

// A request that has fed `fed` of its `n_prompt` prompt tokens and sampled `generated` tokens.
RunningSeq seq(uint64_t arrival, int64_t n_prompt, int64_t fed, int64_t generated = 0, bool paused = false) {
  return RunningSeq{arrival, n_prompt, n_prompt + generated, fed, paused};
}

int64_t tokens_in(const std::vector<StepPiece>& pieces) {
  int64_t n = 0;
  for (const StepPiece& p : pieces) n += p.n;
  return n;
}

}  // namespace

TEST(StepPlan, PrefillPiecesEndAtChunkMultiples) {
  EXPECT_EQ(prefill_piece(0, 100, 32), 32);
  EXPECT_EQ(prefill_piece(32, 100, 32), 32);
  EXPECT_EQ(prefill_piece(96, 100, 32), 4);
  EXPECT_EQ(prefill_piece(20, 100, 32), 12);  // back onto the chunk grid
  EXPECT_EQ(prefill_piece(0, 7, 32), 7);
  // A cut (a hybrid's last full page) ends the piece that would cross it, and only that one.
  EXPECT_EQ(prefill_piece(64, 100, 32, 96), 32);
  EXPECT_EQ(prefill_piece(64, 100, 64, 96), 32);
  EXPECT_EQ(prefill_piece(96, 100, 64, 96), 4);
  EXPECT_EQ(prefill_piece(0, 40, 32, 32), 32);
  EXPECT_EQ(pages_for(0, 16), 0);
  EXPECT_EQ(pages_for(1, 16), 1);
  EXPECT_EQ(pages_for(16, 16), 1);
  EXPECT_EQ(pages_for(17, 16), 2);
}

TEST(StepPlan, DecodesFirstThenPrefills) {
  // Budget 32 + 3: two decodes (one of them a replayed token: no logits), then prefill pieces.
  const std::vector<RunningSeq> running = {seq(0, 10, 10, 1), seq(1, 50, 0), seq(2, 10, 10, 5), seq(3, 20, 0)};
  std::vector<StepPiece> out;
  uint64_t turn = 0;
  plan_step(running, StepBudget{32, 35}, turn, out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].index, 0u);
  EXPECT_EQ(out[0].first, 10);
  EXPECT_EQ(out[0].n, 1);
  EXPECT_TRUE(out[0].logits);   // its newest token: sample after the step
  EXPECT_FALSE(out[0].prefill);
  EXPECT_EQ(out[1].index, 2u);
  EXPECT_FALSE(out[1].logits);  // a replay: tokens 11..14 still to feed
  EXPECT_EQ(out[2].index, 1u);  // the oldest prefill takes its whole chunk ...
  EXPECT_EQ(out[2].n, 32);
  EXPECT_TRUE(out[2].prefill);
  EXPECT_FALSE(out[2].logits);
  // ... and request 3's 20-token piece does not fit in the 1 token left: it is not cut.
  EXPECT_EQ(turn, 2u);

  // The next step starts the round-robin after request 1: request 3 first, then 1 if it fits.
  plan_step(running, StepBudget{32, 35}, turn, out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[2].index, 3u);
  EXPECT_EQ(out[2].n, 20);
  EXPECT_TRUE(out[2].logits);  // the end of its prompt, nothing sampled yet
  EXPECT_EQ(turn, 4u);
}

TEST(StepPlan, SeveralShortPrefillsShareOneStep) {
  const std::vector<RunningSeq> running = {seq(0, 9, 0), seq(1, 12, 0), seq(2, 5, 0), seq(3, 40, 0)};
  std::vector<StepPiece> out;
  uint64_t turn = 0;
  plan_step(running, StepBudget{32, 35}, turn, out);
  ASSERT_EQ(out.size(), 3u);  // 9 + 12 + 5; the 32-token piece of request 3 waits
  EXPECT_EQ(tokens_in(out), 26);
  for (const StepPiece& p : out) EXPECT_TRUE(p.logits);
}

TEST(StepPlan, PausedRequestsSitOut) {
  const std::vector<RunningSeq> running = {seq(0, 10, 10, 1, true), seq(1, 10, 0, 0, true), seq(2, 10, 10, 1)};
  std::vector<StepPiece> out;
  uint64_t turn = 0;
  plan_step(running, StepBudget{32, 34}, turn, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].index, 2u);
}

TEST(StepPlan, EveryRequestFinishesItsPromptOnTheChunkGridWithinBudget) {
  // Simulate steps over prompts of assorted lengths, 4 sequences, chunk 16: every piece stays on
  // the grid of multiples of 16, every call within budget, and each prompt completes; with two
  // long prompts both advance in turn.
  const int64_t chunk = 16, budget = chunk + 3;
  std::vector<RunningSeq> running = {seq(0, 100, 0), seq(1, 90, 0), seq(2, 7, 0), seq(3, 33, 0)};
  std::map<size_t, int64_t> first_step;  // request → the first step that advanced it
  std::vector<StepPiece> out;
  uint64_t turn = 0;
  for (int step = 0; step < 100; ++step) {
    plan_step(running, StepBudget{chunk, budget}, turn, out);
    if (out.empty()) break;
    EXPECT_LE(tokens_in(out), budget);
    for (const StepPiece& p : out) {
      RunningSeq& r = running[p.index];
      EXPECT_EQ(p.first, r.fed);
      EXPECT_TRUE((r.fed + p.n) % chunk == 0 || r.fed + p.n == r.n_prompt) << "off the chunk grid";
      first_step.try_emplace(p.index, step);
      r.fed += p.n;
    }
  }
  for (const RunningSeq& r : running) EXPECT_EQ(r.fed, r.n_prompt);
  EXPECT_EQ(first_step.size(), 4u);
  // Each starts within one round of the round-robin (a full chunk leaves too little for the
  // others' pieces, which are not cut), not after the older prompts are done.
  for (size_t i = 0; i < running.size(); ++i) EXPECT_LE(first_step[i], static_cast<int64_t>(i)) << i;
}
