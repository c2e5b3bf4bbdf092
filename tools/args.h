// A small command-line parser for keel's subcommands: llama.cpp-style flags (`-m FILE`,
// `--n-predict 64`, `--temp=0`), boolean switches, positionals and generated `--help`.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace keel::cli {

struct Option {
  std::vector<std::string> names;  // e.g. {"-m", "--model"}
  std::string value_name;          // empty for a switch
  std::string help;
};

class Args {
 public:
  Args(std::string command, std::string summary, std::vector<Option> options,
       std::string positional_help = "");

  // Parses argv (after the subcommand); throws keel::Error(usage) on unknown flags.
  // Returns false when --help was given (help already printed to stdout).
  bool parse(const std::vector<std::string>& argv);

  bool has(const std::string& name) const;  // any alias of the option
  std::optional<std::string> get(const std::string& name) const;
  std::string get_or(const std::string& name, const std::string& fallback) const;
  int64_t get_int(const std::string& name, int64_t fallback) const;
  double get_double(const std::string& name, double fallback) const;
  const std::vector<std::string>& positionals() const { return positionals_; }
  std::string help() const;

 private:
  const Option* find(const std::string& flag) const;
  std::string key_of(const Option& opt) const { return opt.names.back(); }
  std::string command_, summary_, positional_help_;
  std::vector<Option> options_;
  std::map<std::string, std::string> values_;
  std::vector<std::string> positionals_;
};

}  // namespace keel::cli
