// The batching policy of `keel serve`, as plain data and without a model, so it can be tested on
// its own: which tokens one forward call carries, and how many KV pages requests commit.
//
// A running request holds `tokens` = its prompt then the tokens sampled so far; `fed` of them are
// in its sequence's KV cache. Each step carries
//   - the next token of every request whose prompt is in (a decode, or a replay of a generated
//     token after the request was preempted), and
//   - prefill pieces of the requests still in their prompt, round-robin from a rotating start,
//     each piece as long as it would be in `keel run` (up to the next multiple of the chunk), as
//     many as fit in the call's token budget (the plan's chunk + n_seqs - 1); a hybrid model's
//     prompt is also cut where its state is snapshotted (RunningSeq::cut).
// Pieces are never cut to fill the budget: a sequence's chunk boundaries, and with them its
// logits, do not depend on the other requests (batch invariance).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace keel::server {

struct RunningSeq {
  uint64_t arrival = 0;    // lower: older (admission order; kept across preemptions)
  int64_t n_prompt = 0;    // prompt tokens
  int64_t n_tokens = 0;    // prompt + sampled tokens
  int64_t fed = 0;         // tokens in the KV cache
  bool paused = false;     // its client lags behind: it sits this step out
  int64_t cut = 0;         // a prompt position a prefill piece ends at rather than cross (0: none):
                           // where a hybrid's recurrent state is snapshotted
};

struct StepPiece {
  size_t index = 0;        // into the running requests
  int64_t first = 0;       // tokens [first, first + n) of that request
  int64_t n = 0;
  bool logits = false;     // its last token is the request's newest: sample after the step
  bool prefill = false;    // part of the prompt (else one decoded or replayed token)
};

struct StepBudget {
  int64_t chunk = 0;       // longest prefill piece
  int64_t max_tokens = 0;  // tokens one forward call may carry
};

// Fills `out` with this step's pieces: decodes first, then prefill pieces. `running` is in
// arrival order.
// `turn` is the arrival from which the prefill round-robin starts; it is advanced past the first
// request served, so the next step starts with the next one.
void plan_step(std::span<const RunningSeq> running, const StepBudget& budget, uint64_t& turn,
               std::vector<StepPiece>& out);

// The prefill piece that starts at `fed`: up to the next multiple of `chunk`, within the prompt,
// and not across `cut` (0: none).
int64_t prefill_piece(int64_t fed, int64_t n_prompt, int64_t chunk, int64_t cut = 0);

// KV pages that `tokens` tokens occupy.
inline int64_t pages_for(int64_t tokens, int64_t page_tokens) { return (tokens + page_tokens - 1) / page_tokens; }

}  // namespace keel::server
