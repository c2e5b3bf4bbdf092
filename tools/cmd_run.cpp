// `keel run`: generate from a prompt. Streams only the generated text to stdout; progress on
// stderr during prefill (when it is a terminal); a closing stats line on stderr.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "args.h"
#include "embedded/default_model.h"
#include "chat_template.h"
#include "commands.h"
#include "keel/error.h"
#include "model/model.h"
#include "run_common.h"
#include "runtime/sampler.h"
#include "runtime/session.h"
#include "template/chat.h"
#include "template/template.h"
#include "tokenizer/tokenizer.h"

namespace keel::cli {

namespace {

// --chat: the prompt text as one user message through the chat template, tokenized with special
// tokens recognised and no BOS added (the template writes bos_token itself when it wants one).
std::vector<int32_t> chat_prompt_tokens(const Args& args, const tokenizer::Tokenizer& tok) {
  if (args.has("--ids-file")) throw Error("keel run: --chat takes -p or -f text, not --ids-file", ErrorKind::usage);
  if (args.has("-p") && args.has("-f")) throw Error("give only one of -p and -f", ErrorKind::usage);
  const std::string text = args.has("-f") ? read_text_file(*args.get("-f")) : args.get_or("-p", "");
  const gguf::File model = embedded::open_gguf(args.get_or("-m", std::string(embedded::kDefaultModelName)));
  nlohmann::ordered_json chat_case = {{"messages", {{{"role", "user"}, {"content", text}}}}, {"add_generation_prompt", true}};
  tmpl::RenderOptions options;
  options.now = tmpl::today_local();
  const std::string rendered = tmpl::Template(chat_template_source(args.get("--chat-template"), &model))
                                   .render(tmpl::chat_context(chat_case, special_tokens(model), nullptr), options);
  return tok.encode(rendered, /*add_bos=*/false, /*parse_special=*/true);
}

}  // namespace

int cmd_run(const CommandArgs& argv) {
  std::vector<Option> options = model_options();
  for (Option o : std::vector<Option>{
           {{"-p", "--prompt"}, "TEXT", "prompt text"},
           {{"-f", "--file"}, "FILE", "read the prompt from FILE"},
           {{"--ids-file"}, "FILE", "start from token ids (whitespace-separated) instead of text"},
           {{"-n", "--n-predict"}, "N", "tokens to generate (-1: until end of text or full context; default -1)"},
           {{"--temp"}, "T", "temperature; 0 = greedy (default 0.8)"},
           {{"--top-k"}, "K", "top-k sampling, 0 = off (default 40)"},
           {{"--top-p"}, "P", "top-p sampling, 1 = off (default 0.95)"},
           {{"--min-p"}, "P", "min-p sampling, 0 = off (default 0.05)"},
           {{"--repeat-penalty"}, "X", "penalty for recent tokens, 1 = off (default 1.0)"},
           {{"--repeat-last-n"}, "N", "tokens the penalty looks back on (default 64)"},
           {{"--presence-penalty"}, "X", "subtracted once from every token generated so far, 0 = off (default 0)"},
           {{"--frequency-penalty"}, "X", "subtracted per time a token was generated so far, 0 = off (default 0)"},
           {{"--seed"}, "N", "random seed (default: random)"},
           {{"--no-bos"}, "", "do not add the BOS token"},
           {{"--ignore-eos"}, "", "keep generating after an end-of-generation token (it is emitted like any other)"},
           {{"--json"}, "", "print one JSON object at the end instead of streaming text"},
           {{"--prompt-cache"}, "FILE", "restore the prompt's longest saved prefix from FILE, then save the prompt's state there"},
           {{"--prompt-cache-ro"}, "", "with --prompt-cache: only read FILE, never write it"},
           {{"--chat"}, "", "wrap -p/-f as one user turn in the model's chat template (add_generation_prompt)"},
           {{"--chat-template"}, "FILE", "a Jinja chat template instead of the model's (implies --chat)"},
       })
    options.push_back(o);
  Args args("run", "Generate text from a prompt with a GGUF model (default: the embedded stories260K).", options);
  if (!args.parse(argv)) return 0;
  if (!args.positionals().empty())
    throw Error("keel run: unexpected argument '" + args.positionals()[0] + "' (use -p for the prompt)", ErrorKind::usage);

  LoadedModel lm = load_model(args);
  const auto& tok = lm.tokenizer;
  std::vector<int32_t> prompt = (args.has("--chat") || args.has("--chat-template")) ? chat_prompt_tokens(args, tok) : read_prompt_tokens(args, tok);
  if (prompt.empty()) throw Error("keel run: the prompt is empty (give -p TEXT, -f FILE or --ids-file FILE)", ErrorKind::usage);

  runtime::SamplerOptions so;
  so.temperature = static_cast<float>(args.get_double("--temp", 0.8));
  so.top_k = static_cast<int>(args.get_int("--top-k", 40));
  so.top_p = static_cast<float>(args.get_double("--top-p", 0.95));
  so.min_p = static_cast<float>(args.get_double("--min-p", 0.05));
  so.repeat_penalty = static_cast<float>(args.get_double("--repeat-penalty", 1.0));
  so.repeat_last_n = static_cast<int>(args.get_int("--repeat-last-n", 64));
  so.presence_penalty = static_cast<float>(args.get_double("--presence-penalty", 0.0));
  so.frequency_penalty = static_cast<float>(args.get_double("--frequency-penalty", 0.0));
  if (!(so.repeat_penalty > 0)) throw Error("keel run: --repeat-penalty must be above 0", ErrorKind::usage);
  so.seed = args.has("--seed") ? static_cast<uint64_t>(args.get_int("--seed", 0))
                               : static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  int64_t n_predict = args.get_int("-n", -1);
  const bool json = args.has("--json");
  const bool ignore_eos = args.has("--ignore-eos");

  const plan::Plan plan = plan_session(args, *lm.model, static_cast<int64_t>(prompt.size()));
  runtime::Session session(lm.model, plan.options);
  runtime::Sampler sampler(so);
  runtime::SamplerScratch sampler_scratch(static_cast<int32_t>(lm.model->hparams().n_vocab));
  std::vector<int32_t> history = prompt;
  history.reserve(static_cast<size_t>(session.n_ctx()));

  CancelGuard cancel;
  ProgressBar bar(!json);
  const auto t0 = std::chrono::steady_clock::now();
  RunStats stats;
  stats.prompt_tokens = static_cast<int64_t>(prompt.size());
  const float* logits = nullptr;
  const std::optional<std::string> cache = args.get("--prompt-cache");
  if (!cache && args.has("--prompt-cache-ro"))
    throw Error("keel run: --prompt-cache-ro needs --prompt-cache FILE", ErrorKind::usage);
  int64_t reused = 0;
  if (cache) {
    const runtime::Session::LoadedState restored = session.load_state(0, *cache, prompt);
    reused = restored.n_reused;
    logits = restored.logits;
    if (reused > 0)
      std::fprintf(stderr, "prompt cache: %lld of %zu prompt tokens restored from %s\n", static_cast<long long>(reused),
                   prompt.size(), cache->c_str());
    else if (!restored.note.empty())
      std::fprintf(stderr, "prompt cache: %s\n", restored.note.c_str());
  }
  // A hybrid model's state file keeps snapshots of its recurrent state at the prompt's last chunk
  // boundaries (kCheckpoints of them): the next prompt that shares all but the tail (another
  // question about the same document) resumes from the last one it shares.
  constexpr int kCheckpoints = 3;
  const bool save = cache && !args.has("--prompt-cache-ro");
  std::optional<runtime::StateCheckpoints> checkpoints;
  std::vector<int64_t> cuts;  // prompt offsets where a snapshot is taken
  if (save && session.has_recurrent_state()) {
    checkpoints.emplace(*cache);
    for (int64_t b = reused + session.chunk(); b < static_cast<int64_t>(prompt.size()); b += session.chunk())
      cuts.push_back(b);
    if (cuts.size() > kCheckpoints) cuts.erase(cuts.begin(), cuts.end() - kCheckpoints);
  }
  try {
    const int64_t n_prompt = static_cast<int64_t>(prompt.size());
    for (int64_t from = reused; !logits && from < n_prompt;) {
      const auto cut = std::upper_bound(cuts.begin(), cuts.end(), from);
      const int64_t to = cut == cuts.end() ? n_prompt : *cut;
      const float* out = session.prefill(std::span<const int32_t>(prompt).subspan(static_cast<size_t>(from),
                                                                                  static_cast<size_t>(to - from)),
                                         [&](const runtime::ChunkProgress& p) {
                                           const double secs =
                                               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                                           bar.update({from - reused + p.done, n_prompt - reused, secs});
                                           return !cancel.requested();
                                         });
      if (to < n_prompt) session.checkpoint_state(0, *checkpoints);
      else logits = out;
      from = to;
    }
  } catch (const Error& e) {
    bar.finish();
    if (e.kind() == ErrorKind::cancelled) {
      std::fprintf(stderr, "%s\n", e.what());
      return cancel.exit_code();
    }
    throw;
  }
  bar.finish();
  if (save && reused < static_cast<int64_t>(prompt.size()))
    session.save_state(0, prompt, logits, *cache, checkpoints ? &*checkpoints : nullptr);
  const auto t1 = std::chrono::steady_clock::now();
  stats.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  stats.prompt_tokens -= reused;

  tokenizer::StreamDecoder decoder(tok);
  std::vector<int32_t> generated;
  const int64_t room = session.n_ctx() - session.n_past();
  const int64_t limit = n_predict < 0 ? room : std::min(n_predict, room);
  for (int64_t i = 0; i < limit && !cancel.requested(); ++i) {
    const int32_t id = sampler.sample(logits, history, prompt.size(), sampler_scratch);
    if (!ignore_eos && tok.is_end_of_generation(id)) break;
    generated.push_back(id);
    history.push_back(id);
    if (!json) {
      std::string text = decoder.push(id);
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    }
    if (i + 1 < limit) logits = session.decode(id);
  }
  std::string tail = decoder.flush();
  if (!json) {
    std::fwrite(tail.data(), 1, tail.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }
  stats.decode_tokens = static_cast<int64_t>(generated.size());
  stats.decode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  stats.chunk = session.layout().shape.chunk;

  if (json) {
    nlohmann::json out;
    out["prompt_ids"] = prompt;
    out["ids"] = generated;
    out["text"] = tok.decode(generated);
    out["prompt_tokens"] = stats.prompt_tokens;
    out["prefill_tok_s"] = stats.prefill_tok_s();
    out["decode_tok_s"] = stats.decode_tok_s();
    out["chunk"] = stats.chunk;
    out["peak_bytes"] = peak_rss_bytes();
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  print_stats_line(stats);
  if (args.has("--memory-report")) print_memory_report(plan, session);
  if (cancel.requested()) return cancel.exit_code();
  return 0;
}

}  // namespace keel::cli
