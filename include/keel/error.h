// keel's error type: one message a user can act on, and the exit code the CLI maps it to.
#pragma once
#include <stdexcept>
#include <string>

namespace keel {

enum class ErrorKind {
  bad_input,  // malformed file, unsupported feature, invalid argument value (exit 1)
  refused,    // the plan does not fit the budget (exit 1)
  usage,      // command-line usage error (exit 2)
  cancelled,  // stopped by the user: SIGINT, Ctrl-C (exit 130)
  terminated, // stopped by SIGTERM (exit 143: 128 + the signal number, as shells report it)
};

class Error : public std::runtime_error {
 public:
  explicit Error(std::string message, ErrorKind kind = ErrorKind::bad_input)
      : std::runtime_error(std::move(message)), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace keel
