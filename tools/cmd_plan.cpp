// `keel plan`: the memory plan and verdict for a model file (header only) or a preset of a model
// that is not on this machine. Exit 0 when it fits, 1 when refused (with the refusal message).
#include <cstdio>
#include <iostream>

#include "args.h"
#include "commands.h"
#include "keel/error.h"
#include "model/recipe.h"
#include "plan/plan.h"

namespace keel::cli {

int cmd_plan(const CommandArgs& argv) {
  Args args("plan", "Print the memory plan of a session and whether it fits the device, without loading weights.",
            {{{"-m", "--model"}, "FILE", "GGUF model, or `default` for the embedded one (only its header is read)"},
             {{"--preset"}, "NAME", "plan a model that is not here, by name (e.g. qwen35-27b, qwen3-8b)"},
             {{"--type"}, "TYPE", "with --preset: file type (q5_k_m, q4_k_m, q8_0 (default), f16, ...)"},
             {{"-c", "--ctx-size", "--ctx"}, "N", "context length in tokens (default 4096, at most the model's)"},
             {{"--chunk"}, "N|auto", "prefill chunk size (default auto: the largest that fits)"},
             {{"--kv-type"}, "TYPE", "KV cache element type: f16 (default), q8_0, f32"},
             {{"--device"}, "NAME", "auto (default: cuda:0 when there is a GPU, else cpu), cpu (this machine's MemAvailable), cuda, cuda:N, apple-m1-16g, apple-m4-pro-24g, apple-m4-max-36g, apple-m4-pro-48g, apple-m5-max-128g, apple-m3-ultra-256g"},
             {{"--budget"}, "BYTES", "total memory budget, e.g. 24MiB, 1.5GiB, 27GB (overrides the device's)"},
             {{"--max-buffer"}, "BYTES", "largest single buffer (overrides the device's)"},
             {{"-t", "--threads"}, "N", "CPU threads (the per-thread scratch depends on it; default all cores)"},
             {{"--perplexity"}, "", "plan for perplexity: a logits row for every token of a chunk"},
             {{"-np", "--parallel"}, "N", "sequences held at once (a server's slots): N state slots, one call = a chunk + N-1 decodes (default 1)"},
             {{"--state-snapshots"}, "N|auto", "hybrid models: recurrent-state snapshots for keel serve's prefix cache (default 0; keel serve's default is auto)"},
             {{"--json"}, "", "print one JSON object"}});
  if (!args.parse(argv)) return 0;
  if (!args.positionals().empty()) throw Error("keel plan: unexpected argument '" + args.positionals()[0] + "'", ErrorKind::usage);

  plan::ModelSpec spec;
  if (auto path = args.get("--model")) {
    if (args.has("--preset")) throw Error("keel plan: give -m or --preset, not both", ErrorKind::usage);
    spec = plan::describe_file(*path);
  } else if (auto preset = args.get("--preset")) {
    const std::string type_name = args.get_or("--type", "q8_0");
    auto type = model::file_type_from_name(type_name);
    if (!type) throw Error("keel plan: unknown --type '" + type_name + "' (e.g. q5_k_m, q4_k_m, q8_0, f16)", ErrorKind::usage);
    spec = plan::describe_preset(*preset, *type);
  } else {
    throw Error("keel plan: give a model with -m FILE (-m default: the embedded model) or --preset NAME --type TYPE", ErrorKind::usage);
  }

  plan::PlanRequest req;
  const int64_t train = spec.hp.n_ctx_train > 0 ? spec.hp.n_ctx_train : 4096;
  req.n_ctx = args.get_int("--ctx-size", std::min<int64_t>(4096, train));
  req.chunk = plan::parse_chunk(args.get_or("--chunk", "auto"));
  if (auto kv = args.get("--kv-type")) {
    auto t = runtime::kv_type_from_name(*kv);
    if (!t) throw Error("keel plan: unknown --kv-type '" + *kv + "' (use f16, q8_0 or f32)", ErrorKind::usage);
    req.kv_type = *t;
  }
  req.n_threads = static_cast<int>(args.get_int("--threads", 0));
  req.logits_every_token = args.has("--perplexity");
  req.n_seqs = static_cast<int>(args.get_int("--parallel", 1));
  if (const std::string snaps = args.get_or("--state-snapshots", "0"); snaps == "auto")
    req.state_snapshots = plan::kAutoStateSnapshots;
  else if ((req.state_snapshots = args.get_int("--state-snapshots", 0)) < 0)
    throw Error("keel plan: --state-snapshots must be auto or 0 or more", ErrorKind::usage);
  req.device = plan::device_from_flags(args.get("--device"), args.get("--budget"), args.get("--max-buffer"));

  const plan::Plan p = plan::make_plan(spec, req);
  if (args.has("--json")) {
    std::cout << plan::to_json(p) << "\n";
  } else {
    std::cout << plan::format_plan(p);
  }
  std::cout.flush();
  plan::check_fits(p);  // refused: main prints the message on stderr and exits 1
  return 0;
}

}  // namespace keel::cli
