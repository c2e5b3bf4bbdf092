// `keel synth --preset NAME --type TYPE -o FILE`: a GGUF with a real model's shapes and random
// weights, for benchmarks of models that cannot be downloaded here.
#include <cstdio>
#include <string>

#include "args.h"
#include "commands.h"
#include "keel/error.h"
#include "tools_lib/interrupt.h"
#include "model/presets.h"
#include "tools_lib/synth.h"

namespace keel::cli {

int cmd_synth(const CommandArgs& argv) {
  std::string presets;
  for (const auto& n : model::preset_names()) presets += (presets.empty() ? "" : ", ") + n;
  Args args("synth", "Write a GGUF with a real model's shapes, tensor types and metadata, and seeded random weights.",
            {{{"--preset"}, "NAME", "model shape (required): " + presets},
             {{"--arch"}, "ARCH", "llama, qwen2, qwen3 or qwen35 (checked against the preset)"},
             {{"--type"}, "TYPE", "q8_0, q4_0, q4_k, q5_k, q6_k, q4_k_m, q5_k_m, f16, bf16, f32 (default q8_0)"},
             {{"-o", "--output"}, "FILE", "the GGUF to write (required unless --dry-run)"},
             {{"--seed"}, "N", "random seed (default 0)"},
             {{"--tokenizer"}, "FILE", "a GGUF or tokenizer.json to take the vocabulary from (default: the embedded model)"},
             {{"--pre"}, "NAME", "pre-tokenizer name for a tokenizer.json keel does not recognise"},
             {{"--layers"}, "N", "override the number of layers (small test files)"},
             {{"--dims"}, "K=V,...", "override dimensions, " + tools::synth_dims_help()},
             {{"-t", "--threads"}, "N", "threads (default: all cores)"},
             {{"--dry-run"}, "", "print the tensor table and sizes, write nothing"},
             {{"--no-progress"}, "", "no progress bar"}});
  if (!args.parse(argv)) return 0;
  tools::InterruptScope interrupt;  // Ctrl-C while planning or writing: exit 130, no file
  if (!args.positionals().empty()) throw Error("keel synth: unexpected argument " + args.positionals()[0], ErrorKind::usage);
  tools::SynthOptions options;
  const auto preset = args.get("--preset");
  if (!preset) throw Error("keel synth: --preset NAME is required (" + presets + ")", ErrorKind::usage);
  options.preset = *preset;
  options.arch = args.get_or("--arch", "");
  options.type = args.get_or("--type", "q8_0");
  options.seed = static_cast<uint64_t>(args.get_int("--seed", 0));
  options.tokenizer = args.get_or("--tokenizer", "");
  options.pre = args.get_or("--pre", "");
  options.layers = static_cast<uint32_t>(args.get_int("--layers", 0));
  options.dims = args.get_or("--dims", "");
  const auto out = args.get("--output");
  if (!out && !args.has("--dry-run")) throw Error("keel synth: -o FILE is required", ErrorKind::usage);

  tools::SynthPlan plan = tools::plan_synth(options);
  for (const std::string& note : plan.notes) std::fprintf(stderr, "note: %s\n", note.c_str());
  if (args.has("--dry-run")) {
    tools::print_tensor_table(stdout, plan.metadata, plan.jobs);
    return 0;
  }
  tools::WriteOptions wo;
  wo.n_threads = static_cast<int>(args.get_int("--threads", 0));
  wo.progress = !args.has("--no-progress");
  const tools::WriteSummary s = tools::write_model(*out, plan.metadata, plan.jobs, wo);
  std::fprintf(stderr, "wrote %s: %s %s, %zu tensors, %s, %.3f bits per weight, %.1f s (%.0f MB/s, %d threads)\n",
               out->c_str(), options.preset.c_str(), options.type.c_str(), plan.jobs.size(),
               tools::format_bytes(s.file_bytes).c_str(), s.bits_per_weight(), s.seconds,
               s.seconds > 0 ? s.file_bytes / s.seconds / 1e6 : 0.0, s.n_threads);
  std::fprintf(stderr, "  peak RSS %s\n", tools::format_bytes(tools::peak_rss_bytes()).c_str());
  return 0;
}

}  // namespace keel::cli
