// Whole models on the CUDA backend against oracles no one here wrote:
//   - stories260K: greedy ids equal llama.cpp's golden continuations exactly (f16 and q8_0 KV,
//     prefill in one chunk and token by token);
//   - the tiny qwen2/qwen3 fixtures (F32 weights and Q8_0/Q4_0/Q4_K/Q5_K/Q6_K variants): every
//     stored row within max |Δ log-softmax| 2e-2 of the Hugging Face float64 reference (the
//     issue's bound for f16/bf16 tensor-core arithmetic: f16 GEMM operands, f16 KV and
//     attention inputs), greedy tokens equal to the reference's outside near-ties (top-2 gap
//     < 1e-2), for chunks of 7 (GEMV path) and 64/1536 (f16 tensor-core GEMM path), with f32
//     activations in the GEMV (exact mode) and the
//     f16 KV cache (with a q8_0 cache the GEMV path measured 0.2 on tiny-qwen2: not held to this
//     bound; the q8_0 kernels are checked against the CPU's in test_cuda_attention);
//   - the quantized fixtures in the default mode (8-bit activations in the GEMV) no further from
//     the exact reference than llama.cpp is;
//   - decode steps replayed as CUDA graphs equal eager launches, bit for bit;
//   - several sequences decoded in one call give the logits each gives alone (bit-exact: the
//     decode path's arithmetic does not depend on the call's other tokens);
//   - no cudaMalloc and no device memory taken after session start.
// Data: ../shared beside the checkout (test_paths.h).
#include <cmath>
#include <cstdlib>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/memory.h"
#include "cuda_test_util.h"
#include "fixture_ref.h"
#include "keel/error.h"
#include "model/model.h"
#include "runtime/sampler.h"
#include "runtime/session.h"
#include "test_paths.h"

namespace {

using namespace keel;

runtime::SessionOptions cuda_options(int64_t n_ctx, int64_t chunk, backend::KvType kv) {
  runtime::SessionOptions o;
  o.n_ctx = n_ctx;
  o.chunk = chunk;
  o.kv_type = kv;
  o.n_threads = 2;
  o.device = backend::Device::cuda;
  return o;
}

TEST(CudaModels, Stories260kGreedyIdsEqualLlamaCpp) {
  KEEL_SKIP_WITHOUT_GPU();
  auto golden = test::read_json(test::shared("golden/stories260K.greedy.json"));
  auto model = model::Model::load(test::shared("models/stories260K.gguf"));
  for (auto kv : {backend::KvType::f16, backend::KvType::q8_0}) {
    if (kv == backend::KvType::q8_0 && model->hparams().head_dim % 32 != 0) continue;
    for (int64_t chunk : {int64_t{1}, int64_t{512}}) {
      runtime::SessionOptions o = cuda_options(256, chunk, kv);
      o.page_tokens = 16;
      runtime::Session session(model, o);
      int exact = 0;
      for (const auto& item : golden) {
        session.reset();
        auto prompt = item["prompt_ids"].get<std::vector<int32_t>>();
        auto want = item["greedy_ids"].get<std::vector<int32_t>>();
        std::vector<int32_t> got;
        const float* logits = session.prefill(prompt);
        for (size_t i = 0; i < want.size(); ++i) {
          got.push_back(runtime::argmax(logits, int32_t(model->hparams().n_vocab)));
          if (i + 1 < want.size()) logits = session.decode(got.back());
        }
        EXPECT_EQ(got, want) << item["prompt"] << " kv " << backend::kv_type_name(kv) << " chunk " << chunk;
        exact += got == want;
      }
      std::printf("[cuda] stories260K kv=%s chunk=%lld: %d of %zu prompts exact\n",
                  std::string(backend::kv_type_name(kv)).c_str(), (long long)chunk, exact, golden.size());
    }
  }
}

struct Rows {
  double max_diff = 0;
  int mismatches = 0;  // top-1 differs where the reference's top-2 gap is >= 1e-2
};

// top1_gap: a top-1 difference counts where the reference's top-2 gap is at least this.
void compare(const float* got_logits, const std::vector<float>& ref, Rows& acc, double top1_gap = 1e-2) {
  const int n = int(ref.size());
  auto got = test::log_softmax(got_logits, n);
  auto want = test::log_softmax(ref.data(), n);
  for (int i = 0; i < n; ++i) acc.max_diff = std::max(acc.max_diff, std::fabs(got[i] - want[i]));
  if (test::top_gap(want) >= top1_gap && test::top1(got) != test::top1(want)) ++acc.mismatches;
}

struct FixtureRun {
  Rows a, b, g;
  int id_mismatch = 0;  // greedy ids unlike the reference's where its top-2 gap is >= 1e-2
};

// One fixture on CUDA in chunks of `chunk`: prompt A's rows, prompt B's stored rows and the
// teacher-forced greedy rows against `ref` / `greedy_ref`.
FixtureRun run_fixture(const std::string& name, const test::Fixture& fx, const std::vector<std::vector<float>>& ref,
                       const std::vector<std::vector<float>>& greedy_ref, int64_t chunk, bool exact,
                       double top1_gap = 1e-2) {
  auto model = model::Model::load(test::shared("fixtures/" + name + ".gguf"));
  runtime::SessionOptions o = cuda_options(1536, chunk, backend::KvType::f16);
  o.max_logit_rows = chunk;
  o.page_tokens = 64;
  o.exact = exact;
  runtime::Session s(model, o);
  FixtureRun r;
  s.evaluate(fx.prompt_a, [&](int64_t i, const float* logits) { compare(logits, ref.at(size_t(i)), r.a, top1_gap); });
  s.reset();
  s.evaluate(fx.prompt_b, [&](int64_t i, const float* logits) {
    for (size_t k = 0; k < fx.positions_b.size(); ++k)
      if (fx.positions_b[k] == i) compare(logits, ref.at(48 + k), r.b, top1_gap);
  });
  s.reset();
  const float* logits = s.prefill(fx.prompt_a);
  for (size_t step = 0; step < fx.greedy.size(); ++step) {
    compare(logits, greedy_ref.at(step), r.g, top1_gap);
    const int32_t id = runtime::argmax(logits, fx.n_vocab);
    if (id != fx.greedy[step] && test::top_gap(test::log_softmax(greedy_ref.at(step).data(), fx.n_vocab)) >= 1e-2)
      ++r.id_mismatch;
    if (step + 1 < fx.greedy.size()) logits = s.decode(fx.greedy[step]);  // teacher-forced
  }
  return r;
}

// Each fixture (name, compared with the dequantized HF reference) within 2e-2 of transformers'
// log-softmax, in several chunk sizes, with f32 activations (exact: the oracle comparison; the
// 8-bit activation path has its own test below).
void fixtures_within_two_hundredths(std::initializer_list<std::pair<const char*, bool>> cases) {
  for (auto [name_c, dequant] : cases) {
    const std::string name = name_c;
    test::Fixture fx = test::load_fixture(name, dequant);
    const std::string stem = dequant ? name + ".hf_dequant" : name;
    auto ref = test::read_rows(stem + ".logits.f32", fx.n_vocab);
    auto greedy_ref = test::read_rows(stem + ".greedy.logits.f32", fx.n_vocab);
    for (int64_t chunk : {int64_t{7}, int64_t{64}, int64_t{1536}}) {
      const FixtureRun r = run_fixture(name, fx, ref, greedy_ref, chunk, true);
      const std::string what = name + " chunk " + std::to_string(chunk);
      EXPECT_LT(r.a.max_diff, 2e-2) << what << " prompt A";
      EXPECT_LT(r.b.max_diff, 2e-2) << what << " prompt B";
      EXPECT_LT(r.g.max_diff, 2e-2) << what << " greedy rows";
      EXPECT_EQ(r.a.mismatches + r.b.mismatches + r.g.mismatches, 0) << what;
      EXPECT_EQ(r.id_mismatch, 0) << what << ": greedy ids";
      std::printf("[cuda] %-16s exact chunk=%4lld max|dlogp| A %.2e B %.2e greedy %.2e\n", name.c_str(),
                  (long long)chunk, r.a.max_diff, r.b.max_diff, r.g.max_diff);
    }
  }
}

TEST(CudaModels, FixturesWithinTwoHundredthsOfHuggingFace) {
  KEEL_SKIP_WITHOUT_GPU();
  fixtures_within_two_hundredths({{"tiny-qwen2", false}, {"tiny-qwen3", false}});
}

// Quantized weights: the GEMM's f16 panels in prefill, the GEMV in decode.
TEST(CudaModels, QuantizedFixturesWithinTwoHundredthsOfHuggingFace) {
  KEEL_SKIP_WITHOUT_GPU();
  fixtures_within_two_hundredths({{"tiny-qwen3-q8_0", true},
                                  {"tiny-qwen3-q4_0", true},
                                  {"tiny-qwen3-q4_k", true},
                                  {"tiny-qwen3-q5_k", true},
                                  {"tiny-qwen3-q6_k", true}});
}

// The default (fast) mode: quantized weights times 8-bit activations in the GEMV, as llama.cpp's
// CUDA decode computes (activation blocks of 32; llama.cpp's CPU, whose outputs the fixtures
// store, quantizes K-quant activations in blocks of 256, so its rows are not this path's twin).
// Held to llama.cpp's own standard: keel's distance to the exact-dequantized float64 reference,
// worst |Δ log-prob| over prompts A and B, within llama.cpp's worst distance to it (the
// fixture's band); and top-1 agreement with it wherever the reference's top-2 gap is wider than
// that band (closer calls are within the noise 8-bit activations make, llama.cpp's included:
// on tiny-qwen3-q8_0 at the 1e-2 gap keel's CUDA fast path flipped 4 rows, llama.cpp 3). Chunks
// of 7 put every prompt row through the 8-bit GEMV. The distance to llama.cpp's own rows, the
// top-1 counts at the 1e-2 gap and the greedy rows (one-token decodes) are printed, not held.
TEST(CudaModels, QuantizedFixturesFastNoFurtherFromTheReferenceThanLlamaCpp) {
  KEEL_SKIP_WITHOUT_GPU();
  for (const char* name_c : {"tiny-qwen3-q8_0", "tiny-qwen3-q4_0", "tiny-qwen3-q4_k", "tiny-qwen3-q5_k", "tiny-qwen3-q6_k"}) {
    const std::string name = name_c;
    test::Fixture fx = test::load_fixture(name, true);
    const auto& band = fx.ref["agreement"]["hf_f64_vs_llama_cpp_fa_off"];
    const double band_ab = std::max(band["A"]["max_abs_dlogprob"].get<double>(), band["B"]["max_abs_dlogprob"].get<double>());
    const int band_top1 = band["A"]["rows"].get<int>() - band["A"]["top1_agree"].get<int>() +
                          band["B"]["rows"].get<int>() - band["B"]["top1_agree"].get<int>();
    const auto ref = test::read_rows(name + ".hf_dequant.logits.f32", fx.n_vocab);
    const auto greedy_ref = test::read_rows(name + ".hf_dequant.greedy.logits.f32", fx.n_vocab);
    const FixtureRun r = run_fixture(name, fx, ref, greedy_ref, 7, false);
    const FixtureRun clear = run_fixture(name, fx, ref, greedy_ref, 7, false, band_ab);
    const FixtureRun vs_llama = run_fixture(name, fx, test::read_rows(name + ".logits.f32", fx.n_vocab),
                                            test::read_rows(name + ".greedy.logits.f32", fx.n_vocab), 7, false);
    EXPECT_LE(std::max(r.a.max_diff, r.b.max_diff), band_ab) << name;
    EXPECT_EQ(clear.a.mismatches + clear.b.mismatches, 0) << name << ": top-1 differs where the gap exceeds the band";
    std::printf("[cuda fast] %-16s chunk=7 vs reference: A %.3e B %.3e greedy %.3e, top-1 flips at gap 1e-2: %d "
                "(llama.cpp: %.3e, %d); vs llama.cpp: A %.3e B %.3e\n",
                name.c_str(), r.a.max_diff, r.b.max_diff, r.g.max_diff, r.a.mismatches + r.b.mismatches, band_ab,
                band_top1, vs_llama.a.max_diff, vs_llama.b.max_diff);
  }
}

// Gated DeltaNet layers and gated attention (head size 128, partial RoPE) on the GPU.
TEST(CudaModels, HybridFixtureWithinTwoHundredthsOfHuggingFace) {
  KEEL_SKIP_WITHOUT_GPU();
  fixtures_within_two_hundredths({{"tiny-qwen35", false}});
}

// Attention only (tiny-qwen3) and hybrid with per-sequence recurrent state (tiny-qwen35).
void sequences_together_equal_each_alone(const std::string& name, bool dequant) {
  auto model = model::Model::load(test::shared("fixtures/" + name + ".gguf"));
  test::Fixture fx = test::load_fixture(name, dequant);
  const int n = 3;
  std::vector<std::vector<int32_t>> prompts = {
      std::vector<int32_t>(fx.prompt_a.begin(), fx.prompt_a.begin() + 40),
      std::vector<int32_t>(fx.prompt_b.begin(), fx.prompt_b.begin() + 300),
      std::vector<int32_t>(fx.prompt_a.begin() + 5, fx.prompt_a.begin() + 9)};
  const int steps = 6;
  const int n_vocab = fx.n_vocab;
  // Alone: each sequence in its own session.
  std::vector<std::vector<std::vector<float>>> alone(n);
  for (int s = 0; s < n; ++s) {
    runtime::Session one(model, cuda_options(1024, 64, backend::KvType::f16));
    const float* logits = one.prefill(prompts[s]);
    for (int i = 0; i < steps; ++i) {
      alone[s].emplace_back(logits, logits + n_vocab);
      logits = one.decode(int32_t((i * 37 + s) % n_vocab));
    }
  }
  // Together: the same prefills, then every decode step of the three in one call.
  runtime::SessionOptions o = cuda_options(1024, 64, backend::KvType::f16);
  o.n_seqs = n;
  runtime::Session all(model, o);
  std::vector<int32_t> ids = {0, all.add_sequence(), all.add_sequence()};
  std::vector<std::vector<float>> last(n);
  for (int s = 0; s < n; ++s) {
    const auto& p = prompts[s];
    for (size_t done = 0; done < p.size();) {
      const size_t m = std::min<size_t>(64, p.size() - done);
      runtime::SeqInput in{ids[s], std::span<const int32_t>(p.data() + done, m), done + m == p.size()};
      auto rows = all.step(std::span<const runtime::SeqInput>(&in, 1));
      if (in.logits) last[s].assign(rows[0], rows[0] + n_vocab);
      done += m;
    }
  }
  double worst = 0;
  for (int i = 0; i < steps; ++i) {
    for (int s = 0; s < n; ++s) worst = std::max(worst, [&] {
      double d = 0;
      for (int k = 0; k < n_vocab; ++k) d = std::max(d, std::fabs(double(last[s][k]) - alone[s][i][k]));
      return d;
    }());
    std::vector<int32_t> tok(n);
    std::vector<runtime::SeqInput> ins;
    for (int s = 0; s < n; ++s) {
      tok[s] = int32_t((i * 37 + s) % n_vocab);
      ins.push_back({ids[s], std::span<const int32_t>(&tok[s], 1), true});
    }
    auto rows = all.step(ins);
    for (int s = 0; s < n; ++s) last[s].assign(rows[s], rows[s] + n_vocab);
  }
  EXPECT_EQ(worst, 0.0) << name << ": max |logit difference| between together and alone";
  std::printf("[cuda] %s: 3 sequences together vs alone: max |dlogit| %.3g\n", name.c_str(), worst);
}

TEST(CudaModels, SequencesTogetherEqualEachAlone) {
  KEEL_SKIP_WITHOUT_GPU();
  sequences_together_equal_each_alone("tiny-qwen3-q8_0", true);
}

TEST(CudaModels, HybridSequencesTogetherEqualEachAlone) {
  KEEL_SKIP_WITHOUT_GPU();
  sequences_together_equal_each_alone("tiny-qwen35", false);
}

// Decode rows of two sequences: prefills, 40 steps of both (crossing 16-token pages: new graph
// keys), 8 steps of the first alone. graphs: CUDA graph replay on or off (KEEL_CUDA_GRAPHS).
std::vector<std::vector<float>> decode_rows(const std::string& name, bool graphs, uint64_t& replays) {
  if (graphs) unsetenv("KEEL_CUDA_GRAPHS");
  else setenv("KEEL_CUDA_GRAPHS", "0", 1);
  auto model = model::Model::load(test::shared("fixtures/" + name + ".gguf"));
  test::Fixture fx = test::load_fixture(name);
  runtime::SessionOptions o = cuda_options(1024, 64, backend::KvType::f16);
  o.n_seqs = 2;
  o.page_tokens = 16;
  runtime::Session s(model, o);
  unsetenv("KEEL_CUDA_GRAPHS");
  const std::vector<int32_t> ids = {0, s.add_sequence()};
  const std::vector<std::vector<int32_t>> prompts = {
      std::vector<int32_t>(fx.prompt_a.begin(), fx.prompt_a.begin() + 21),
      std::vector<int32_t>(fx.prompt_b.begin(), fx.prompt_b.begin() + 37)};
  std::vector<std::vector<float>> out;
  for (int q = 0; q < 2; ++q) {
    runtime::SeqInput in{ids[q], std::span<const int32_t>(prompts[q]), true};
    auto rows = s.step(std::span<const runtime::SeqInput>(&in, 1));
    out.emplace_back(rows[0], rows[0] + fx.n_vocab);
  }
  for (int i = 0; i < 48; ++i) {
    const int n = i < 40 ? 2 : 1;
    std::vector<int32_t> tok(2);
    std::vector<runtime::SeqInput> ins;
    for (int q = 0; q < n; ++q) {
      tok[q] = int32_t((i * 37 + q) % fx.n_vocab);
      ins.push_back({ids[q], std::span<const int32_t>(&tok[q], 1), true});
    }
    auto rows = s.step(ins);
    for (int q = 0; q < n; ++q) out.emplace_back(rows[q], rows[q] + fx.n_vocab);
  }
  replays = dynamic_cast<cuda::CudaBackend&>(s.backend()).graphs().replays();
  return out;
}

TEST(CudaModels, DecodeGraphsEqualEagerLaunches) {
  KEEL_SKIP_WITHOUT_GPU();
  for (const char* name : {"tiny-qwen3-q4_k", "tiny-qwen35"}) {
    uint64_t eager_replays = 0, replays = 0;
    const auto eager = decode_rows(name, false, eager_replays);
    const auto graphed = decode_rows(name, true, replays);
    EXPECT_EQ(eager_replays, 0u) << name;
    EXPECT_GT(replays, 30u) << name;
    ASSERT_EQ(eager.size(), graphed.size());
    int differ = 0;
    for (size_t r = 0; r < eager.size(); ++r) differ += eager[r] != graphed[r];
    EXPECT_EQ(differ, 0) << name << ": rows whose logits differ between graph replay and eager launches";
    std::printf("[cuda] %s: %zu decode rows, %llu steps replayed as graphs, %d rows differ\n", name, eager.size(),
                (unsigned long long)replays, differ);
  }
}

// A bad token id while decode steps are captured or replayed as graphs leaves the session as
// usable as eager launches do: the next steps give the same logits. (The Session refuses the id
// before the step begins; StepGraphs::abandon is the second line, for callers of the backend.)
TEST(CudaModels, BadTokenInAGraphedStepLeavesTheSessionUsable) {
  KEEL_SKIP_WITHOUT_GPU();
  auto model = model::Model::load(test::shared("fixtures/tiny-qwen3-q4_k.gguf"));
  test::Fixture fx = test::load_fixture("tiny-qwen3-q4_k", true);
  auto run = [&](bool graphs, int bad_at) {
    if (!graphs) setenv("KEEL_CUDA_GRAPHS", "0", 1);
    runtime::Session s(model, cuda_options(256, 64, backend::KvType::f16));
    unsetenv("KEEL_CUDA_GRAPHS");
    std::vector<std::vector<float>> rows;
    const float* logits = s.prefill(std::vector<int32_t>(fx.prompt_a.begin(), fx.prompt_a.begin() + 10));
    for (int i = 0; i < 8; ++i) {
      if (i == bad_at) {
        EXPECT_THROW(s.decode(fx.n_vocab + 5), Error);
      }
      logits = s.decode(int32_t((i * 31 + 7) % fx.n_vocab));
      rows.emplace_back(logits, logits + fx.n_vocab);
    }
    return rows;
  };
  for (int bad_at : {1, 2, 5})  // the shape's first (eager), second (captured) and a replayed step
    EXPECT_EQ(run(true, bad_at), run(false, bad_at)) << "bad token before step " << bad_at;
}

TEST(CudaModels, NoDeviceAllocationAfterStart) {
  KEEL_SKIP_WITHOUT_GPU();
  auto model = model::Model::load(test::shared("fixtures/tiny-qwen3-q4_k.gguf"));
  test::Fixture fx = test::load_fixture("tiny-qwen3-q4_k", true);
  runtime::Session s(model, cuda_options(1536, 64, backend::KvType::q8_0));
  const uint64_t mallocs = cuda::device_malloc_calls();
  auto run = [&] {
    s.reset();
    const float* logits = s.prefill(fx.prompt_b);
    for (int i = 0; i < 20; ++i) logits = s.decode(runtime::argmax(logits, fx.n_vocab));
  };
  // The first run loads the kernels it launches (the driver loads them lazily, on first launch,
  // into device memory of its own: how much depends on what the process loaded before). keel
  // allocates nothing in either run; the second leaves the device's free memory as it was.
  run();
  size_t free_before = 0, free_after = 0, total = 0;
  cuda::check(cudaMemGetInfo(&free_before, &total), "cudaMemGetInfo");
  run();
  cuda::check(cudaMemGetInfo(&free_after, &total), "cudaMemGetInfo");
  EXPECT_EQ(cuda::device_malloc_calls(), mallocs);
  EXPECT_EQ(free_after, free_before);
}

}  // namespace
