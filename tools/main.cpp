// keel: one binary, subcommands (docs/CLI.md). Errors go to stderr with exit code 1 (bad input,
// refusal), 2 (usage), 130 (cancelled by SIGINT/Ctrl-C) or 143 (SIGTERM).
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "commands.h"
#include "keel/error.h"

namespace {

struct Subcommand {
  const char* name;
  const char* summary;
  std::function<int(const keel::cli::CommandArgs&)> run;
};

const std::vector<Subcommand>& subcommands() {
  using namespace keel::cli;
  static const std::vector<Subcommand> table = {
      {"run", "generate text from a prompt", cmd_run},
      {"plan", "print the memory plan and verdict without loading weights", cmd_plan},
      {"perplexity", "mean NLL and perplexity of a text or of token ids", cmd_perplexity},
      {"bench", "prefill and decode throughput, like llama-bench", cmd_bench},
      {"tokenize", "print the token ids (or pieces) of a text", cmd_tokenize},
      {"inspect", "print a GGUF file's metadata and tensors", cmd_inspect},
      {"quantize", "requantize a GGUF", cmd_quantize},
      {"synth", "write a GGUF of a real model's shape with random weights", cmd_synth},
      {"convert", "convert a Hugging Face folder to GGUF", cmd_convert},
  };
  return table;
}

void print_usage(FILE* out) {
  std::fprintf(out, "usage: keel <command> [options]   (keel --version: version and kernels)\n\ncommands:\n");
  for (const auto& s : subcommands()) std::fprintf(out, "  %-12s %s\n", s.name, s.summary);
  std::fprintf(out, "\n`keel <command> --help` shows a command's options.\n");
}

int exit_code(keel::ErrorKind kind) {
  switch (kind) {
    case keel::ErrorKind::usage: return 2;
    case keel::ErrorKind::cancelled: return 130;
    case keel::ErrorKind::terminated: return 143;
    default: return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  std::string name = argv[1];
  if (name == "-h" || name == "--help" || name == "help") {
    print_usage(stdout);
    return 0;
  }
  if (name == "--version" || name == "version") {
    keel::cli::print_version(stdout);
    return 0;
  }
  // A file-size limit (ulimit -f) then fails the write like a full disk, and the writer removes
  // its temp file, instead of SIGXFSZ killing keel with a partial file left behind.
  std::signal(SIGXFSZ, SIG_IGN);
  keel::cli::CommandArgs rest(argv + 2, argv + argc);
  for (const auto& s : subcommands()) {
    if (name != s.name) continue;
    try {
      return s.run(rest);
    } catch (const keel::Error& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      return exit_code(e.kind());
    } catch (const std::bad_alloc&) {
      std::fprintf(stderr, "error: out of memory\n");
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "keel: unknown command '%s'\n\n", name.c_str());
  print_usage(stderr);
  return 2;
}
