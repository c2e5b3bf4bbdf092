// keel's subcommands: each takes the arguments after its name and returns the exit code.
#pragma once
#include <cstdio>
#include <string>
#include <vector>

namespace keel::cli {

using CommandArgs = std::vector<std::string>;

int cmd_run(const CommandArgs& args);
int cmd_inspect(const CommandArgs& args);
int cmd_tokenize(const CommandArgs& args);
int cmd_perplexity(const CommandArgs& args);
int cmd_bench(const CommandArgs& args);
int cmd_plan(const CommandArgs& args);
int cmd_quantize(const CommandArgs& args);
int cmd_synth(const CommandArgs& args);
int cmd_convert(const CommandArgs& args);

// `keel --version`: version, git commit, build type, kernel paths compiled in and selected.
void print_version(FILE* out);

}  // namespace keel::cli
