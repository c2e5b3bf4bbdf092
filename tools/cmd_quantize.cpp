// `keel quantize IN.gguf OUT.gguf TYPE [-t N]`: requantize a GGUF with llama-quantize's
// per-tensor rules (docs/specs/quants.md §4-5), multithreaded, written atomically.
#include <cstdio>

#include "args.h"
#include "commands.h"
#include "gguf/gguf.h"
#include "keel/error.h"
#include "tools_lib/interrupt.h"
#include "tools_lib/requantize.h"

namespace keel::cli {

int cmd_quantize(const CommandArgs& argv) {
  Args args("quantize", "Requantize a GGUF file: TYPE is one of " + tools::quantize_type_list() + ".",
            {{{"-t", "--threads"}, "N", "threads (default: all cores)"},
             {{"--dry-run"}, "", "print the tensor table and sizes, write nothing"},
             {{"--no-progress"}, "", "no progress bar"}},
            "IN.gguf OUT.gguf TYPE");
  if (!args.parse(argv)) return 0;
  tools::InterruptScope interrupt;  // Ctrl-C while planning or writing: exit 130, no file
  if (args.positionals().size() != 3)
    throw Error("keel quantize: expected IN.gguf OUT.gguf TYPE", ErrorKind::usage);
  const std::string& in_path = args.positionals()[0];
  const std::string& out_path = args.positionals()[1];
  const model::FileType type = tools::parse_quantize_type(args.positionals()[2]);
  if (in_path == out_path) throw Error("keel quantize: OUT must differ from IN", ErrorKind::usage);

  gguf::File in = gguf::File::open(in_path);
  tools::RequantizePlan plan = tools::plan_requantize(in, type);
  for (const std::string& note : plan.notes) std::fprintf(stderr, "note: %s\n", note.c_str());
  if (args.has("--dry-run")) {
    tools::print_tensor_table(stdout, plan.metadata, plan.jobs);
    return 0;
  }
  tools::WriteOptions options;
  options.n_threads = static_cast<int>(args.get_int("--threads", 0));
  options.progress = !args.has("--no-progress");
  const tools::WriteSummary s = tools::write_model(out_path, plan.metadata, plan.jobs, options);
  const uint64_t in_bytes = in.tensor_bytes();
  std::fprintf(stderr, "quantized %s -> %s (%s) in %.1f s\n", in_path.c_str(), out_path.c_str(),
               std::string(model::file_type_name(type)).c_str(), s.seconds);
  std::fprintf(stderr, "  input:  %s of tensors, %.3f bits per weight (file %s)\n", tools::format_bytes(in_bytes).c_str(),
               s.n_elements ? 8.0 * in_bytes / s.n_elements : 0.0, tools::format_bytes(in.file_size()).c_str());
  std::fprintf(stderr, "  output: %s of tensors, %.3f bits per weight (file %s)\n",
               tools::format_bytes(s.tensor_bytes).c_str(), s.bits_per_weight(), tools::format_bytes(s.file_bytes).c_str());
  std::fprintf(stderr, "  peak RSS %s\n", tools::format_bytes(tools::peak_rss_bytes()).c_str());
  return 0;
}

}  // namespace keel::cli
