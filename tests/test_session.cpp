// Session behaviour around prefill: progress per chunk, cancel at a chunk boundary, clear errors
// when the context is full, and chunked prefill equal to one-shot prefill.
#include <gtest/gtest.h>

#include <cmath>

#include "keel/error.h"
#include "model/model.h"
#include "runtime/session.h"
#include "test_paths.h"

using namespace keel;

namespace {

runtime::Session make_session(int64_t n_ctx, int64_t chunk) {
  runtime::SessionOptions o;
  o.exact = true;  // f32 activations: the exact-math oracle
  o.n_ctx = n_ctx;
  o.chunk = chunk;
  o.n_threads = 2;
  o.page_tokens = 16;
  o.kv_type = runtime::KvType::f32;
  return runtime::Session(model::Model::load(test::shared("fixtures/tiny-qwen3.gguf")), o);
}

std::vector<int32_t> tokens(size_t n) {
  std::vector<int32_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>(3 + (i * 37) % 500);
  return ids;
}

}  // namespace

TEST(Session, ProgressIsReportedPerChunk) {
  auto s = make_session(256, 32);
  std::vector<int64_t> seen;
  s.prefill(tokens(100), [&](const runtime::ChunkProgress& p) {
    EXPECT_EQ(p.total, 100);
    seen.push_back(p.done);
    return true;
  });
  EXPECT_EQ(seen, (std::vector<int64_t>{32, 64, 96, 100}));
  EXPECT_EQ(s.n_past(), 100);
}

TEST(Session, CancelStopsAtAChunkBoundary) {
  auto s = make_session(256, 32);
  int calls = 0;
  try {
    s.prefill(tokens(200), [&](const runtime::ChunkProgress&) { return ++calls < 2; });
    FAIL() << "expected a cancellation";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::cancelled);
  }
  EXPECT_EQ(s.n_past(), 64);  // two whole chunks, nothing half-done
  s.reset();
  EXPECT_NO_THROW(s.prefill(tokens(10)));
}

TEST(Session, FullContextIsAClearError) {
  auto s = make_session(64, 16);
  s.prefill(tokens(60));
  for (int i = 0; i < 4; ++i) s.decode(5);
  try {
    s.decode(5);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("context"), std::string::npos) << e.what();
  }
}

TEST(Session, ChunkedPrefillEqualsOneShot) {
  const auto prompt = tokens(150);
  auto one = make_session(256, 256);
  const float* ref = one.prefill(prompt);
  std::vector<float> want(ref, ref + 512);
  for (int64_t chunk : {1, 7, 64, 100}) {
    auto s = make_session(256, chunk);
    const float* got = s.prefill(prompt);
    double max_diff = 0;
    for (int i = 0; i < 512; ++i) max_diff = std::max(max_diff, static_cast<double>(std::fabs(got[i] - want[i])));
    EXPECT_LT(max_diff, 1e-4) << "chunk " << chunk;
  }
}

// Refused before the call changes anything: no page taken, no position used, and the session
// then continues exactly as one that never saw the bad ids.
TEST(Session, TokenOutsideTheVocabularyIsRefused) {
  auto s = make_session(64, 16);
  auto fresh = make_session(64, 16);
  const int32_t pages = s.pages_free();
  for (const std::vector<int32_t>& bad : {std::vector<int32_t>{1, 2, 100000}, std::vector<int32_t>{-1}}) {
    try {
      s.prefill(bad);
      ADD_FAILURE() << "no error for a token id outside the vocabulary";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("outside the vocabulary"), std::string::npos) << e.what();
    }
    EXPECT_THROW(s.evaluate(bad, [](int64_t, const float*) {}), Error);
  }
  EXPECT_EQ(s.pages_free(), pages);
  EXPECT_EQ(s.n_past(0), 0);
  const std::vector<int32_t> good = {1, 2, 3};
  const float* a = s.prefill(good);
  const float* b = fresh.prefill(good);
  EXPECT_EQ(std::vector<float>(a, a + 512), std::vector<float>(b, b + 512));
}
