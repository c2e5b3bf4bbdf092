// Helpers shared by the fuzz targets.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace keel::fuzz {

// The readers take paths: each input is written to `name` inside a private folder of this
// process (made under $TMPDIR or /tmp, removed at exit), overwritten by the next input.
class InputFile {
 public:
  explicit InputFile(const std::string& name) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/keel-fuzz-XXXXXX";
    if (!::mkdtemp(pattern.data())) std::abort();
    dir_ = pattern;
    path_ = dir_ + "/" + name;
  }
  ~InputFile() {
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  const std::string& path() const { return path_; }
  const std::string& write(const uint8_t* data, size_t size) const {
    FILE* f = std::fopen(path_.c_str(), "wb");
    if (!f) std::abort();
    if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
    std::fclose(f);
    return path_;
  }

 private:
  std::string dir_, path_;
};

inline std::string shared(const std::string& rel) { return std::string(KEEL_SHARED_DIR) + "/" + rel; }

}  // namespace keel::fuzz
