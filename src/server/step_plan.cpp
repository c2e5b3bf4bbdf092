#include "server/step_plan.h"

#include <algorithm>

namespace keel::server {

int64_t prefill_piece(int64_t fed, int64_t n_prompt, int64_t chunk, int64_t cut) {
  const int64_t n = std::min(chunk - fed % chunk, n_prompt - fed);
  return fed < cut && fed + n > cut ? cut - fed : n;
}

void plan_step(std::span<const RunningSeq> running, const StepBudget& budget, uint64_t& turn,
               std::vector<StepPiece>& out) {
  out.clear();
  int64_t left = budget.max_tokens;
  for (size_t i = 0; i < running.size() && left > 0; ++i) {
    const RunningSeq& r = running[i];
    if (r.paused || r.fed < r.n_prompt || r.fed >= r.n_tokens) continue;
    out.push_back(StepPiece{i, r.fed, 1, r.fed + 1 == r.n_tokens, false});
    --left;
  }

  // Prefills round-robin: from the first prefilling request that arrived at `turn` or later,
  // to the end, then from the beginning (`running` is in arrival order).
  auto prefilling = [](const RunningSeq& r) { return !r.paused && r.fed < r.n_prompt; };
  size_t start = 0;
  while (start < running.size() && !(prefilling(running[start]) && running[start].arrival >= turn)) ++start;
  if (start == running.size()) {
    start = 0;
    while (start < running.size() && !prefilling(running[start])) ++start;
    if (start == running.size()) return;  // nobody is prefilling
  }
  turn = running[start].arrival + 1;
  for (size_t k = 0; k < running.size() && left > 0; ++k) {
    const size_t i = (start + k) % running.size();
    const RunningSeq& r = running[i];
    if (!prefilling(r)) continue;
    const int64_t n = prefill_piece(r.fed, r.n_prompt, budget.chunk, r.cut);
    if (n > left) continue;  // never cut: a smaller piece further on may still fit
    out.push_back(StepPiece{i, r.fed, n, r.fed + n == r.n_tokens, true});
    left -= n;
  }
}

}  // namespace keel::server
