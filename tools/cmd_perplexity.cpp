// `keel perplexity`: mean negative log-likelihood and perplexity of a text (or token ids),
// evaluated as one sequence through chunked prefill. Logits exist for one chunk at a time, so
// --dump-logits copies the rows it was asked for as they pass.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "args.h"
#include "commands.h"
#include "keel/error.h"
#include "run_common.h"

namespace keel::cli {

namespace {

// --logits-at: comma-separated 0-based indices into the scored ids; the row at index i is the
// distribution of the token after ids[i].
std::vector<int64_t> parse_positions(const std::string& list, int64_t n_tokens) {
  std::vector<int64_t> out;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || v < 0)
      throw Error("--logits-at: '" + item + "' is not a token position (0-based, comma-separated)", ErrorKind::usage);
    if (v >= n_tokens)
      throw Error("--logits-at: position " + item + " is past the last token (the ids have " + std::to_string(n_tokens) +
                      ", positions 0.." + std::to_string(n_tokens - 1) + ")",
                  ErrorKind::usage);
    out.push_back(v);
  }
  if (out.empty()) throw Error("--logits-at: no positions given", ErrorKind::usage);
  return out;
}

// Rows [positions.size(), n_vocab] of raw f32 logits, little-endian, in --logits-at order.
void write_rows(std::ofstream& out, const std::string& path, const std::vector<int64_t>& positions,
                const std::map<int64_t, std::vector<float>>& rows) {
  for (int64_t p : positions) {
    const std::vector<float>& row = rows.at(p);
    out.write(reinterpret_cast<const char*>(row.data()), static_cast<std::streamsize>(row.size() * sizeof(float)));
  }
  out.close();
  if (!out) throw Error("--dump-logits: writing '" + path + "' failed");
}

}  // namespace

int cmd_perplexity(const CommandArgs& argv) {
  std::vector<Option> options = model_options();
  options.push_back({{"-f", "--file"}, "FILE", "text to score"});
  options.push_back({{"--ids-file"}, "FILE", "token ids to score (whitespace-separated)"});
  options.push_back({{"--no-bos"}, "", "do not add the BOS token to the text"});
  options.push_back({{"--dump-logits"}, "FILE",
                     "write the raw logits at the --logits-at positions to FILE (f32 little-endian, one row of n_vocab "
                     "per position, in the order given)"});
  options.push_back({{"--logits-at"}, "LIST", "positions for --dump-logits: 0-based token indices, e.g. 0,249,1999"});
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
  const std::optional<std::string> dump_path = args.get("--dump-logits");
  if (dump_path.has_value() != args.has("--logits-at"))
    throw Error("keel perplexity: --dump-logits FILE and --logits-at LIST go together", ErrorKind::usage);
  std::vector<int64_t> dump_positions;
  if (dump_path) dump_positions = parse_positions(*args.get("--logits-at"), static_cast<int64_t>(ids.size()));
  std::map<int64_t, std::vector<float>> dumped;  // position -> its logits row
  for (int64_t p : dump_positions) dumped[p];
  std::ofstream dump_file;  // opened now: a path that cannot be written fails before the evaluation
  if (dump_path) {
    dump_file.open(*dump_path, std::ios::binary | std::ios::trunc);
    if (!dump_file) throw Error("--dump-logits: cannot write '" + *dump_path + "'");
  }

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
          if (auto it = dumped.find(i); it != dumped.end()) it->second.assign(logits, logits + n_vocab);
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
  if (dump_path) {
    write_rows(dump_file, *dump_path, dump_positions, dumped);
    std::fprintf(stderr, "dumped the logits of %zu positions x %d to %s\n", dump_positions.size(), n_vocab,
                 dump_path->c_str());
  }
  std::printf("tokens %lld  mean_nll %.6f  perplexity %.4f\n", static_cast<long long>(scored), mean, std::exp(mean));
  if (args.has("--memory-report")) print_memory_report(plan, session);
  return 0;
}

}  // namespace keel::cli
