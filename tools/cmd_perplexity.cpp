// `keel perplexity`: mean negative log-likelihood and perplexity of a text (or token ids),
// evaluated as one sequence through chunked prefill. Logits exist for one chunk at a time.
#include <cmath>
#include <cstdio>

#include "args.h"
#include "commands.h"
#include "keel/error.h"
#include "run_common.h"

namespace keel::cli {

int cmd_perplexity(const CommandArgs& argv) {
  std::vector<Option> options = model_options();
  options.push_back({{"-f", "--file"}, "FILE", "text to score"});
  options.push_back({{"--ids-file"}, "FILE", "token ids to score (whitespace-separated)"});
  options.push_back({{"--no-bos"}, "", "do not add the BOS token to the text"});
  Args args("perplexity",
            "Score a text or token ids as one sequence: prints the number of predicted tokens, the mean\n"
            "negative log-likelihood (nats) and the perplexity.",
            options);
  if (!args.parse(argv)) return 0;
  if (!args.has("-f") && !args.has("--ids-file"))
    throw Error("keel perplexity: give -f TEXT_FILE or --ids-file IDS_FILE", ErrorKind::usage);
  LoadedModel lm = load_model(args);
  std::vector<int32_t> ids = read_prompt_tokens(args, lm.tokenizer);
  if (ids.size() < 2) throw Error("keel perplexity: need at least 2 tokens, got " + std::to_string(ids.size()));

  const plan::Plan plan = plan_session(args, *lm.model, static_cast<int64_t>(ids.size()), /*logits_every_token=*/true);
  runtime::Session session(lm.model, plan.options);
  const int n_vocab = static_cast<int>(lm.model->hparams().n_vocab);

  CancelGuard cancel;
  ProgressBar bar(true);
  double nll_sum = 0;
  int64_t scored = 0;
  try {
    session.evaluate(
        ids,
        [&](int64_t i, const float* logits) {
          if (i + 1 >= static_cast<int64_t>(ids.size())) return;
          double mx = logits[0];
          for (int k = 1; k < n_vocab; ++k) mx = std::max(mx, static_cast<double>(logits[k]));
          double sum = 0;
          for (int k = 0; k < n_vocab; ++k) sum += std::exp(static_cast<double>(logits[k]) - mx);
          nll_sum += mx + std::log(sum) - static_cast<double>(logits[ids[static_cast<size_t>(i + 1)]]);
          ++scored;
        },
        [&](const runtime::ChunkProgress& p) {
          bar.update(p);
          return !cancel.requested();
        });
  } catch (const Error& e) {
    bar.finish();
    if (e.kind() != ErrorKind::cancelled) throw;
    std::fprintf(stderr, "%s\n", e.what());
    return cancel.exit_code();
  }
  bar.finish();
  const double mean = nll_sum / static_cast<double>(scored);
  std::printf("tokens %lld  mean_nll %.6f  perplexity %.4f\n", static_cast<long long>(scored), mean, std::exp(mean));
  if (args.has("--memory-report")) print_memory_report(plan, session);
  return 0;
}

}  // namespace keel::cli
