// Where tests find ../shared (fixtures, golden files, vocab vectors) and the keel binary.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

namespace keel::test {

// ../shared beside the checkout, or $KEEL_SHARED where the data lies elsewhere (a GPU machine that
// got a build and the data from scripts/gpu_bundle.sh).
inline std::string shared_dir() {
  const char* env = std::getenv("KEEL_SHARED");
  return env && *env ? env : KEEL_SHARED_DIR;
}
inline std::string shared(const std::string& rel) { return shared_dir() + "/" + rel; }
inline std::string keel_binary() { return KEEL_BINARY; }
// keel's own test data (tests/data), e.g. ids computed by Hugging Face tokenizers.
inline std::string data(const std::string& rel) { return std::string(KEEL_TEST_DATA_DIR) + "/" + rel; }

// A scratch folder of this test process's own, ending in '/'. ctest runs each test in its own
// process, several at once, so two tests writing "keel_case_x.json" into one shared TempDir
// would read each other's half-written files. Removed when the process that made it exits
// (not when a forked child does).
inline const std::string& temp_dir() {
  struct Owned {
    pid_t owner = getpid();
    std::string path = testing::TempDir() + "keel." + std::to_string(getpid()) + "/";
    Owned() { std::filesystem::create_directories(path); }
    ~Owned() {
      std::error_code ignored;
      if (getpid() == owner) std::filesystem::remove_all(path, ignored);
    }
  };
  static const Owned dir;
  return dir.path;
}

// A shell command's exit code (-1 when it did not exit) and standard output.
struct Ran {
  int code;
  std::string out;
};
inline Ran run_command(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  Ran r{-1, ""};
  if (!p) return r;  // no shell to run it: a failed run, not a crash
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace keel::test
