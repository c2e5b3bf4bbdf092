// The layers point one way: tools -> runtime -> model / plan -> backend -> quant / gguf. A family
// sees only backend.h (no CPU kernel header), and the backends include nothing from runtime/ or
// model/. Checked on the source tree's #include lines.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

struct Include {
  std::string file, target;
};

std::vector<Include> includes_under(const std::string& folder) {
  std::vector<Include> out;
  for (const auto& entry : fs::recursive_directory_iterator(fs::path(KEEL_SOURCE_DIR) / folder)) {
    if (!entry.is_regular_file()) continue;
    const std::string ext = entry.path().extension().string();
    if (ext != ".h" && ext != ".cpp" && ext != ".cu" && ext != ".cuh") continue;
    std::ifstream in(entry.path());
    std::string line;
    while (std::getline(in, line)) {
      const auto at = line.find("#include \"");
      if (at == std::string::npos) continue;
      const auto start = at + 10, end = line.find('"', start);
      out.push_back({fs::relative(entry.path(), KEEL_SOURCE_DIR).string(), line.substr(start, end - start)});
    }
  }
  return out;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

}  // namespace

TEST(Layering, FamiliesSeeOnlyTheBackendSeam) {
  const auto incs = includes_under("src/model");
  ASSERT_FALSE(incs.empty());
  for (const Include& i : incs) {
    EXPECT_FALSE(starts_with(i.target, "backend/cpu/") || starts_with(i.target, "backend/cuda/"))
        << i.file << " includes " << i.target;
    EXPECT_FALSE(starts_with(i.target, "runtime/")) << i.file << " includes " << i.target;
  }
}

TEST(Layering, BackendsIncludeNothingAbove) {
  const auto incs = includes_under("src/backend");
  ASSERT_FALSE(incs.empty());
  for (const Include& i : incs)
    for (const char* above : {"runtime/", "model/", "plan/", "tokenizer/", "tools/"})
      EXPECT_FALSE(starts_with(i.target, above)) << i.file << " includes " << i.target;
}

TEST(Layering, ModelAndPlanSitBelowTheRuntime) {
  for (const char* folder : {"src/model", "src/plan"})
    for (const Include& i : includes_under(folder))
      EXPECT_FALSE(starts_with(i.target, "runtime/") || starts_with(i.target, "tools/")) << i.file << " includes " << i.target;
}

TEST(Layering, RuntimeSeesNoKernels) {
  for (const Include& i : includes_under("src/runtime"))
    EXPECT_FALSE(starts_with(i.target, "backend/cpu/") || starts_with(i.target, "backend/cuda/"))
        << i.file << " includes " << i.target;
}
