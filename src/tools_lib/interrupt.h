// Ctrl-C for the model tools (quantize, synth, convert): while an InterruptScope lives, the first
// SIGINT/SIGTERM sets a flag that the work loops poll (throw_if_interrupted() raises
// keel::Error(cancelled), exit code 130, for SIGINT and keel::Error(terminated), exit code 143,
// for SIGTERM) so the GGUF writer's destructor removes its temp file. A second signal does not
// wait: it unlinks the registered temp file and exits with 128 + its number.
#pragma once
#include <string>

namespace keel::tools {

class InterruptScope {
 public:
  InterruptScope();   // installs the handlers; a scope inside another changes nothing
  ~InterruptScope();  // restores the previous handlers
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;

  // The temp file a second signal removes before exiting (empty: none).
  void set_cleanup_path(const std::string& path);
};

bool interrupted();
void throw_if_interrupted();

}  // namespace keel::tools
