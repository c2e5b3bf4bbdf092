// Where tests find ../shared (fixtures, golden files, vocab vectors) and the keel binary.
#pragma once
#include <string>

namespace keel::test {

inline std::string shared(const std::string& rel) { return std::string(KEEL_SHARED_DIR) + "/" + rel; }
inline std::string keel_binary() { return KEEL_BINARY; }

}  // namespace keel::test
