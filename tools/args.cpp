#include "args.h"

#include <cstdio>
#include <sstream>

#include "keel/error.h"

namespace keel::cli {

Args::Args(std::string command, std::string summary, std::vector<Option> options,
           std::string positional_help)
    : command_(std::move(command)), summary_(std::move(summary)),
      positional_help_(std::move(positional_help)), options_(std::move(options)) {}

const Option* Args::find(const std::string& flag) const {
  for (const Option& o : options_)
    for (const std::string& n : o.names)
      if (n == flag) return &o;
  return nullptr;
}

bool Args::parse(const std::vector<std::string>& argv) {
  for (size_t i = 0; i < argv.size(); ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(help().c_str(), stdout);
      return false;
    }
    if (arg.size() > 1 && arg[0] == '-' && !(arg.size() > 1 && std::isdigit(static_cast<unsigned char>(arg[1])))) {
      std::optional<std::string> inline_value;
      if (auto eq = arg.find('='); eq != std::string::npos && arg.rfind("--", 0) == 0) {
        inline_value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
      }
      const Option* opt = find(arg);
      if (!opt) throw Error("keel " + command_ + ": unknown option '" + arg + "' (see --help)", ErrorKind::usage);
      if (opt->value_name.empty()) {
        if (inline_value) throw Error("keel " + command_ + ": option '" + arg + "' takes no value", ErrorKind::usage);
        values_[key_of(*opt)] = std::string("1");  // not = "1": GCC 12's false -Wrestrict (bug 105329)
      } else if (inline_value) {
        values_[key_of(*opt)] = *inline_value;
      } else {
        if (i + 1 >= argv.size())
          throw Error("keel " + command_ + ": option '" + arg + "' needs a value (" + opt->value_name + ")", ErrorKind::usage);
        values_[key_of(*opt)] = argv[++i];
      }
    } else {
      positionals_.push_back(arg);
    }
  }
  return true;
}

bool Args::has(const std::string& name) const {
  const Option* opt = find(name);
  return opt && values_.count(key_of(*opt));
}

std::optional<std::string> Args::get(const std::string& name) const {
  const Option* opt = find(name);
  if (!opt) return std::nullopt;
  auto it = values_.find(key_of(*opt));
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string Args::get_or(const std::string& name, const std::string& fallback) const {
  return get(name).value_or(fallback);
}

int64_t Args::get_int(const std::string& name, int64_t fallback) const {
  auto v = get(name);
  if (!v) return fallback;
  try {
    size_t used = 0;
    int64_t x = std::stoll(*v, &used);
    if (used != v->size()) throw std::invalid_argument("trailing");
    return x;
  } catch (const std::exception&) {
    throw Error("keel " + command_ + ": option '" + name + "' expects an integer, got '" + *v + "'", ErrorKind::usage);
  }
}

double Args::get_double(const std::string& name, double fallback) const {
  auto v = get(name);
  if (!v) return fallback;
  try {
    size_t used = 0;
    double x = std::stod(*v, &used);
    if (used != v->size()) throw std::invalid_argument("trailing");
    return x;
  } catch (const std::exception&) {
    throw Error("keel " + command_ + ": option '" + name + "' expects a number, got '" + *v + "'", ErrorKind::usage);
  }
}

std::string Args::help() const {
  std::ostringstream os;
  os << "usage: keel " << command_ << " [options]" << (positional_help_.empty() ? "" : " " + positional_help_)
     << "\n\n" << summary_ << "\n\noptions:\n";
  for (const Option& o : options_) {
    std::string flags;
    for (const std::string& n : o.names) flags += (flags.empty() ? "" : ", ") + n;
    if (!o.value_name.empty()) flags += " " + o.value_name;
    os << "  " << flags;
    if (flags.size() < 28) os << std::string(28 - flags.size(), ' ');
    else os << "\n" << std::string(30, ' ');
    os << o.help << "\n";
  }
  os << "  -h, --help                  show this help\n";
  return os.str();
}

}  // namespace keel::cli
