// A `keel serve` child process on a free port, for tests that need the real binary (an outside
// client, the process's RSS). Started with `--port 0`; the port is read from the line it prints
// when it listens. Stopped with SIGTERM (then SIGKILL) when the object goes away.
#pragma once
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_paths.h"

namespace keel::test {

class ServeProcess {
 public:
  // as_background_job: the child starts with SIGINT ignored, as a shell's background job (`&` in
  // a script) does.
  explicit ServeProcess(const std::vector<std::string>& args, bool as_background_job = false) {
    int err[2];
    if (pipe(err) != 0) throw std::runtime_error("pipe failed");
    std::vector<std::string> argv = {keel_binary(), "serve", "--port", "0"};
    argv.insert(argv.end(), args.begin(), args.end());
    // Everything the child needs is made before fork: between fork and exec it calls only
    // async-signal-safe functions (another thread of this process may hold malloc's lock).
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      dup2(err[1], STDERR_FILENO);
      close(err[0]);
      close(err[1]);
      if (as_background_job) sigaction(SIGINT, &ignore, nullptr);
      execv(cargv[0], cargv.data());
      _exit(127);
    }
    close(err[1]);
    stderr_fd_ = err[0];
    // Read stderr until "listening on http://HOST:PORT" (or the child dies, or 120 s pass).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    std::string seen;
    while (port_ == 0 && std::chrono::steady_clock::now() < deadline) {
      pollfd p{stderr_fd_, POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;
      char buf[512];
      const ssize_t n = read(stderr_fd_, buf, sizeof buf);
      if (n <= 0) break;
      seen.append(buf, static_cast<size_t>(n));
      const size_t at = seen.find("listening on http://");
      if (at == std::string::npos) continue;
      const size_t colon = seen.find(':', at + 20), end = seen.find_first_not_of("0123456789", colon + 1);
      if (colon != std::string::npos && end != std::string::npos) port_ = std::atoi(seen.substr(colon + 1, end - colon - 1).c_str());
    }
    stderr_ = seen;
    if (port_ == 0) {
      stop();
      throw std::runtime_error("keel serve did not start: " + seen);
    }
    drain_ = std::thread([this] {  // keep its stderr flowing (and kept) until it exits
      char buf[512];
      ssize_t n;
      while ((n = read(stderr_fd_, buf, sizeof buf)) > 0) {
        std::lock_guard<std::mutex> lock(mutex_);
        stderr_.append(buf, static_cast<size_t>(n));
      }
    });
  }
  ~ServeProcess() { stop(); }
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  // Sends `sig` and waits (up to 30 s) for the exit; returns the exit status (-1: it did not exit).
  int signal_and_wait(int sig) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    int status = 0;
    for (int i = 0; i < 600; ++i) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        stop();
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string stderr_text() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stderr_;
  }
  bool running() {
    if (pid_ > 0 && waitpid(pid_, nullptr, WNOHANG) != 0) pid_ = -1;  // it exited (now reaped)
    return pid_ > 0;
  }

 private:
  void stop() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      for (int i = 0; i < 100 && waitpid(pid_, &status, WNOHANG) == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (waitpid(pid_, &status, WNOHANG) == 0) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
      }
      pid_ = -1;
    }
    if (drain_.joinable()) drain_.join();
    if (stderr_fd_ >= 0) close(stderr_fd_);
    stderr_fd_ = -1;
  }

  pid_t pid_ = -1;
  int stderr_fd_ = -1;
  int port_ = 0;
  std::mutex mutex_;
  std::string stderr_;
  std::thread drain_;
};

}  // namespace keel::test
