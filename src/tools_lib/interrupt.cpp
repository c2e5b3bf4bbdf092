#include "tools_lib/interrupt.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "keel/error.h"

namespace keel::tools {
namespace {

// Signal handlers can only reach process-wide state; this is the one place the tools keep it.
volatile sig_atomic_t g_signals = 0;
char g_cleanup_path[4096] = {};
std::atomic<int> g_depth{0};  // nested scopes: only the outermost installs handlers
struct sigaction g_old_int, g_old_term;

void on_signal(int sig) {
  if (g_signals != 0) {
    if (g_cleanup_path[0] != '\0') ::unlink(g_cleanup_path);  // async-signal-safe
    ::_exit(128 + sig);
  }
  g_signals = sig;
}

}  // namespace

InterruptScope::InterruptScope() {
  if (g_depth++ > 0) return;
  g_signals = 0;
  g_cleanup_path[0] = '\0';
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, &g_old_int);
  sigaction(SIGTERM, &sa, &g_old_term);
}

InterruptScope::~InterruptScope() {
  if (--g_depth > 0) return;
  sigaction(SIGINT, &g_old_int, nullptr);
  sigaction(SIGTERM, &g_old_term, nullptr);
  g_cleanup_path[0] = '\0';
}

void InterruptScope::set_cleanup_path(const std::string& path) {
  g_cleanup_path[0] = '\0';  // never let the handler see a half-copied path
  if (path.size() + 1 > sizeof g_cleanup_path) return;
  std::memcpy(g_cleanup_path + 1, path.c_str() + 1, path.size());  // all but the first byte
  std::atomic_signal_fence(std::memory_order_seq_cst);
  g_cleanup_path[0] = path.empty() ? '\0' : path[0];
}

bool interrupted() { return g_signals != 0; }

void throw_if_interrupted() {
  if (g_signals == SIGTERM) throw Error("terminated (SIGTERM): no output was written", ErrorKind::terminated);
  if (interrupted()) throw Error("interrupted: no output was written", ErrorKind::cancelled);
}

}  // namespace keel::tools
