// Several sequences in one forward call (the backend seam's batches): N sequences of different
// lengths decoded together give the logits of each run alone; a call that mixes one sequence's
// prefill chunk with other sequences' decodes equals running them separately; a removed
// sequence's pages serve the next one. For a llama (stories260K, paged with small pages), qwen3
// and the qwen35 hybrid (per-sequence Gated DeltaNet state).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "keel/error.h"
#include "model/model.h"
#include "runtime/session.h"
#include "test_paths.h"

using namespace keel;

namespace {

constexpr int kDecodeSteps = 6;

std::shared_ptr<const model::Model> load(const std::string& rel) { return model::Model::load(test::shared(rel)); }

runtime::Session make_session(std::shared_ptr<const model::Model> m, int n_seqs, int64_t n_ctx = 96) {
  runtime::SessionOptions o;
  o.n_ctx = n_ctx;
  o.chunk = 16;
  o.n_seqs = n_seqs;
  o.n_threads = 2;
  o.page_tokens = 16;
  o.kv_type = runtime::KvType::f32;
  return runtime::Session(std::move(m), o);
}

// A prompt of `n` ids of sequence `s` (distinct per sequence, inside every fixture's vocabulary).
std::vector<int32_t> prompt(int s, size_t n) {
  std::vector<int32_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>(2 + (i * 37 + static_cast<size_t>(s) * 101) % 250);
  return ids;
}
int32_t decode_token(int s, int step) { return 5 + (s * 13 + step * 7) % 200; }

using Logits = std::vector<float>;

double max_diff(const float* a, const Logits& b) {
  double d = 0;
  for (size_t i = 0; i < b.size(); ++i) d = std::max(d, static_cast<double>(std::fabs(a[i] - b[i])));
  return d;
}

// Sequence s alone: its prompt, then kDecodeSteps decodes; the logits after each decode.
std::vector<Logits> alone(const std::shared_ptr<const model::Model>& m, int s, size_t len) {
  auto session = make_session(m, 1);
  session.prefill(prompt(s, len));
  const size_t n_vocab = m->hparams().n_vocab;
  std::vector<Logits> out;
  for (int step = 0; step < kDecodeSteps; ++step) {
    const float* l = session.decode(decode_token(s, step));
    out.emplace_back(l, l + n_vocab);
  }
  return out;
}

class MultiSequence : public ::testing::TestWithParam<const char*> {};

TEST_P(MultiSequence, DecodedTogetherEqualsEachAlone) {
  auto m = load(GetParam());
  const size_t lengths[] = {37, 5, 16, 60, 1};  // on and off page boundaries
  for (int n : {1, 2, 5}) {
    auto session = make_session(m, n, 192);  // the five sequences need 149 tokens in all
    std::vector<int32_t> ids = {0};
    for (int s = 1; s < n; ++s) ids.push_back(session.add_sequence());
    std::vector<std::vector<Logits>> want;
    for (int s = 0; s < n; ++s) {
      want.push_back(alone(m, s, lengths[s]));
      const auto p = prompt(s, lengths[s]);
      for (size_t done = 0; done < p.size(); done += 16) {  // each prompt on its own, in chunks
        const runtime::SeqInput in{ids[static_cast<size_t>(s)],
                                   std::span<const int32_t>(p).subspan(done, std::min<size_t>(16, p.size() - done)),
                                   false};
        session.step(std::span<const runtime::SeqInput>(&in, 1));
      }
    }
    std::vector<int32_t> tok(static_cast<size_t>(n));
    for (int step = 0; step < kDecodeSteps; ++step) {
      std::vector<runtime::SeqInput> inputs;
      for (int s = 0; s < n; ++s) {
        tok[static_cast<size_t>(s)] = decode_token(s, step);
        inputs.push_back({ids[static_cast<size_t>(s)], std::span<const int32_t>(&tok[static_cast<size_t>(s)], 1), true});
      }
      const auto rows = session.step(inputs);
      ASSERT_EQ(rows.size(), static_cast<size_t>(n));
      for (int s = 0; s < n; ++s)
        EXPECT_LE(max_diff(rows[static_cast<size_t>(s)], want[static_cast<size_t>(s)][static_cast<size_t>(step)]), 1e-5)
            << GetParam() << ": " << n << " sequences, sequence " << s << ", step " << step;
    }
    for (int s = 0; s < n; ++s) EXPECT_EQ(session.n_past(ids[static_cast<size_t>(s)]), static_cast<int64_t>(lengths[s] + kDecodeSteps));
  }
}

TEST_P(MultiSequence, PrefillChunkBesideDecodesEqualsSeparateRuns) {
  auto m = load(GetParam());
  const size_t n_vocab = m->hparams().n_vocab;
  // Separately: A decodes after its prompt; B prefills 16 tokens after its first 20 (16 + 4).
  auto a_alone = alone(m, 0, 30);
  auto b_alone = make_session(m, 1);
  const auto pb = prompt(1, 36);
  b_alone.prefill(std::span<const int32_t>(pb).first(20));
  const float* b_ref = b_alone.prefill(std::span<const int32_t>(pb).subspan(20));
  const Logits b_want(b_ref, b_ref + n_vocab);

  auto session = make_session(m, 3);
  const int32_t a = 0, b = session.add_sequence(), c = session.add_sequence();
  session.prefill(prompt(0, 30));
  const auto pc = prompt(2, 9);
  const runtime::SeqInput first_b[] = {{b, std::span<const int32_t>(pb).first(16), false},
                                       {c, std::span<const int32_t>(pc).first(1), false}};
  session.step(first_b);
  const runtime::SeqInput then[] = {{c, std::span<const int32_t>(pc).subspan(1), false},
                                    {b, std::span<const int32_t>(pb).subspan(16, 4), false}};
  session.step(then);
  // One call: A's decode, B's 16-token chunk, C's decode (the plan's largest call: chunk + 2).
  const int32_t ta = decode_token(0, 0), tc = 7;
  const runtime::SeqInput mixed[] = {{a, std::span<const int32_t>(&ta, 1), true},
                                     {b, std::span<const int32_t>(pb).subspan(20), true},
                                     {c, std::span<const int32_t>(&tc, 1), false}};
  const auto rows = session.step(mixed);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_LE(max_diff(rows[0], a_alone[0]), 1e-5) << GetParam();
  EXPECT_LE(max_diff(rows[1], b_want), 1e-5) << GetParam();
  EXPECT_EQ(session.n_past(b), 36);
  EXPECT_EQ(session.n_past(c), 10);
}

TEST_P(MultiSequence, RemovedSequencePagesServeTheNext) {
  auto m = load(GetParam());
  auto session = make_session(m, 2);
  const int32_t total = session.pages_total();
  EXPECT_EQ(total, 96 / 16 + 1);  // n_ctx tokens in pages, plus one page for the second sequence
  session.prefill(prompt(0, 40));  // 3 pages
  const int32_t b = session.add_sequence();
  const auto pb = prompt(1, 64);
  for (size_t done = 0; done < pb.size(); done += 16) {
    const runtime::SeqInput in{b, std::span<const int32_t>(pb).subspan(done, 16), false};
    session.step(std::span<const runtime::SeqInput>(&in, 1));
  }
  EXPECT_EQ(session.pages_free(), total - 3 - 4);
  // The pool is short: a third sequence's 40 tokens need 3 pages, 0 are free.
  EXPECT_THROW(session.add_sequence(), Error);  // and both slots are taken
  session.remove_sequence(b);
  EXPECT_EQ(session.pages_free(), total - 3);
  const int32_t c = session.add_sequence();
  EXPECT_EQ(c, b);  // the slot is reused, emptied
  EXPECT_EQ(session.n_past(c), 0);
  // Its state starts clean: the same prompt gives the logits of a fresh session.
  auto fresh = make_session(m, 1);
  const auto pc = prompt(2, 30);
  const float* want = fresh.prefill(pc);
  const Logits w(want, want + m->hparams().n_vocab);
  const runtime::SeqInput in{c, std::span<const int32_t>(pc).first(16), false};
  session.step(std::span<const runtime::SeqInput>(&in, 1));
  const runtime::SeqInput rest{c, std::span<const int32_t>(pc).subspan(16), true};
  const auto rows = session.step(std::span<const runtime::SeqInput>(&rest, 1));
  EXPECT_LE(max_diff(rows[0], w), 1e-5);
  EXPECT_EQ(session.pages_free(), total - 3 - 2);
}

TEST_P(MultiSequence, ExhaustedPoolIsRefusedWithNothingChanged) {
  auto m = load(GetParam());
  auto session = make_session(m, 2);
  const int32_t b = session.add_sequence();
  session.prefill(prompt(0, 96));  // sequence 0 holds the whole context: 6 of 7 pages
  const auto pb = prompt(1, 32);
  const runtime::SeqInput in{b, std::span<const int32_t>(pb).first(16), false};
  session.step(std::span<const runtime::SeqInput>(&in, 1));  // the spare page
  const runtime::SeqInput more{b, std::span<const int32_t>(pb).subspan(16), false};
  try {
    session.step(std::span<const runtime::SeqInput>(&more, 1));
    FAIL() << "expected the pool to be exhausted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("page pool"), std::string::npos) << e.what();
  }
  EXPECT_EQ(session.n_past(b), 16);
  EXPECT_EQ(session.pages_free(), 0);
  session.reset();  // sequence 0 gives its pages back
  EXPECT_NO_THROW(session.step(std::span<const runtime::SeqInput>(&more, 1)));
  EXPECT_EQ(session.n_past(b), 32);
}

INSTANTIATE_TEST_SUITE_P(Families, MultiSequence,
                         ::testing::Values("models/stories260K.gguf", "fixtures/tiny-qwen3.gguf",
                                           "fixtures/tiny-qwen35.gguf"),
                         [](const auto& info) {
                           std::string name = info.param;
                           name = name.substr(name.find('/') + 1);
                           name = name.substr(0, name.find('.'));
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
