// Where tests find ../shared (fixtures, golden files, vocab vectors) and the keel binary.
#pragma once
#include <string>

namespace keel::test {

inline std::string shared(const std::string& rel) { return std::string(KEEL_SHARED_DIR) + "/" + rel; }
inline std::string keel_binary() { return KEEL_BINARY; }
// keel's own test data (tests/data), e.g. ids computed by Hugging Face tokenizers.
inline std::string data(const std::string& rel) { return std::string(KEEL_TEST_DATA_DIR) + "/" + rel; }

}  // namespace keel::test
