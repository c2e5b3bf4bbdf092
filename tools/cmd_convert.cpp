// `keel convert DIR -o OUT.gguf [--type T] [--vocab-from FILE]`: a Hugging Face folder → GGUF.
#include <cstdio>

#include "args.h"
#include "commands.h"
#include "keel/error.h"
#include "tools_lib/interrupt.h"
#include "tools_lib/convert.h"

namespace keel::cli {

int cmd_convert(const CommandArgs& argv) {
  Args args("convert",
            "Convert a Hugging Face folder (config.json, *.safetensors) of a llama, qwen2, qwen3 or qwen35 model to GGUF.",
            {{{"-o", "--output"}, "FILE", "the GGUF to write (required)"},
             {{"--type"}, "TYPE", "auto (the checkpoint's float type; default), f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, "
                                  "q6_k, q4_k_m, q5_k_m"},
             {{"--vocab-from"}, "FILE", "take the tokenizer from a GGUF or a tokenizer.json (default: DIR/tokenizer.json)"},
             {{"--pre"}, "NAME", "pre-tokenizer name for a tokenizer.json keel does not recognise"},
             {{"--name"}, "NAME", "general.name (default: the folder's name)"},
             {{"-t", "--threads"}, "N", "threads (default: all cores)"},
             {{"--dry-run"}, "", "print the tensor table and sizes, write nothing"},
             {{"--no-progress"}, "", "no progress bar"}},
            "DIR");
  if (!args.parse(argv)) return 0;
  tools::InterruptScope interrupt;  // Ctrl-C while planning or writing: exit 130, no file
  if (args.positionals().size() != 1) throw Error("keel convert: expected one DIR", ErrorKind::usage);
  tools::ConvertOptions options;
  options.dir = args.positionals()[0];
  options.type = args.get_or("--type", "auto");
  options.vocab_from = args.get_or("--vocab-from", "");
  options.pre = args.get_or("--pre", "");
  options.name = args.get_or("--name", "");
  const auto out = args.get("--output");
  if (!out && !args.has("--dry-run")) throw Error("keel convert: -o OUT.gguf is required", ErrorKind::usage);

  tools::ConvertPlan plan = tools::plan_convert(options);
  for (const std::string& note : plan.notes) std::fprintf(stderr, "note: %s\n", note.c_str());
  if (args.has("--dry-run")) {
    tools::print_tensor_table(stdout, plan.metadata, plan.jobs);
    return 0;
  }
  tools::WriteOptions wo;
  wo.n_threads = static_cast<int>(args.get_int("--threads", 0));
  wo.progress = !args.has("--no-progress");
  const tools::WriteSummary s = tools::write_model(*out, plan.metadata, plan.jobs, wo);
  std::fprintf(stderr, "converted %s -> %s: %zu tensors, %s, %.3f bits per weight, %.1f s\n", options.dir.c_str(),
               out->c_str(), plan.jobs.size(), tools::format_bytes(s.file_bytes).c_str(), s.bits_per_weight(), s.seconds);
  std::fprintf(stderr, "  peak RSS %s\n", tools::format_bytes(tools::peak_rss_bytes()).c_str());
  return 0;
}

}  // namespace keel::cli
