// The planner: device profiles and byte sizes, invariants over many presets / devices / contexts
// (every buffer under the cap, total under the budget, auto chunk is the largest fitting rung,
// KV bytes = tokens × bytes per token rounded up to pages), refusals whose suggestions re-plan
// to fits, and `keel plan` end to end on the Qwen3.5-27B / M4 Max 36 GB case of ANCHORS.md.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "keel/error.h"
#include "model/model.h"
#include "plan/plan.h"
#include "test_paths.h"

using namespace keel;

namespace {

struct Output {
  int code;
  std::string text;
};

Output run_keel(const std::string& args) {
  const std::string cmd = test::keel_binary() + " " + args;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return {-1, ""};
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) text.append(buf, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, text};
}

bool has_qwen35() {
  try {
    model::family_for("qwen35");
    return true;
  } catch (const Error&) {
    return false;
  }
}

// A CUDA device for the planner alone (no GPU needed): the CUDA backend, this budget, no buffer
// cap below it. Only a build with CUDA can plan for it (the CUDA workspace sizes are its own).
plan::DeviceProfile planned_cuda(uint64_t budget) {
  plan::DeviceProfile d = plan::with_overrides(plan::cpu_profile(), budget, budget);
  d.name = "cuda (planned)";
  d.backend = backend::Device::cuda;
  return d;
}

plan::PlanRequest request(int64_t n_ctx, runtime::KvType kv, const plan::DeviceProfile& device,
                          std::optional<int64_t> chunk = std::nullopt) {
  plan::PlanRequest r;
  r.n_ctx = n_ctx;
  r.kv_type = kv;
  r.device = device;
  r.chunk = chunk;
  r.n_threads = 4;  // fixed, so per-thread scratch does not depend on the test machine
  return r;
}

// A request with a suggestion's flags applied ("--kv-type q8_0 -c 1234", "--device NAME", ...).
plan::PlanRequest apply(plan::PlanRequest r, const std::string& options) {
  std::istringstream in(options);
  std::string flag, value;
  while (in >> flag >> value) {
    if (flag == "--kv-type") r.kv_type = *runtime::kv_type_from_name(value);
    else if (flag == "-c") r.n_ctx = std::stoll(value);
    else if (flag == "--chunk") r.chunk = plan::parse_chunk(value);
    else if (flag == "--device") r.device = plan::require_device(value);
    else ADD_FAILURE() << "unexpected flag in a suggestion: " << flag;
  }
  return r;
}

const plan::DeviceProfile& m4_max() {
  static const plan::DeviceProfile d = *plan::find_device("apple-m4-max-36g");
  return d;
}

constexpr uint64_t kM4MaxWorkingSet = 28'991'029'248ull;  // 27.0 GiB

}  // namespace

TEST(PlanDevice, ParsesByteSizes) {
  EXPECT_EQ(plan::parse_bytes("1048576"), 1048576u);
  EXPECT_EQ(plan::parse_bytes("24MiB"), 24ull << 20);
  EXPECT_EQ(plan::parse_bytes("1MiB"), 1ull << 20);
  EXPECT_EQ(plan::parse_bytes("1.5GiB"), 3ull << 29);
  EXPECT_EQ(plan::parse_bytes("27GB"), 27'000'000'000ull);
  EXPECT_EQ(plan::parse_bytes("16G"), 16ull << 30);
  EXPECT_EQ(plan::parse_bytes("512kb"), 512'000u);
  for (const char* bad : {"", "MiB", "12XB", "-5", "1.2.3GB", "0"}) {
    try {
      plan::parse_bytes(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::usage) << bad;
    }
  }
}

TEST(PlanDevice, ProfilesCarryTheAnchorFigures) {
  EXPECT_EQ(m4_max().budget_bytes, kM4MaxWorkingSet);
  EXPECT_EQ(m4_max().max_buffer_bytes, 22'613'000'192ull);
  EXPECT_EQ(plan::find_device("apple-m4-pro-48g")->budget_bytes, 40'200'896'512ull);
  EXPECT_EQ(plan::find_device("apple-m1-16g")->max_buffer_bytes, 8'589'934'592ull);
  EXPECT_EQ(plan::find_device("apple-m3-ultra-256g")->budget_bytes, 223'338'299'392ull);
  EXPECT_NEAR(plan::find_device("apple-m4-pro-24g")->budget_bytes / double(1ull << 30), 17.8, 0.01);
  EXPECT_FALSE(plan::find_device("apple-m9"));
  const plan::DeviceProfile cpu = plan::cpu_profile();
  EXPECT_GT(cpu.budget_bytes, 0u);
  EXPECT_LE(cpu.max_buffer_bytes, cpu.budget_bytes);
  const plan::DeviceProfile tiny = plan::with_overrides(cpu, 24ull << 20, 1ull << 20);
  EXPECT_EQ(tiny.budget_bytes, 24ull << 20);
  EXPECT_EQ(tiny.max_buffer_bytes, 1ull << 20);
  try {
    plan::require_device("nope");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("apple-m4-max-36g"), std::string::npos);
  }
}

// The invariants, over dense presets of several sizes (and Qwen3.5 when its family is built),
// every device profile and a tiny one, all KV types and contexts from 1 to far beyond a page.
// --device defaults to auto: the GPU when this keel has CUDA and the machine one, else the CPU;
// "auto" by name means the same.
TEST(PlanDevice, DefaultIsAutoGpuWhenPresentElseCpu) {
  const std::string chosen = plan::auto_device_name();
  EXPECT_TRUE(chosen == "cpu" || chosen.rfind("cuda:", 0) == 0) << chosen;
  const char* env = std::getenv("KEEL_DEVICE");  // ctest sets cpu for this suite
  const std::string saved = env ? env : "";
  ::unsetenv("KEEL_DEVICE");
  EXPECT_EQ(plan::device_from_flags(std::nullopt, std::nullopt, std::nullopt).name, chosen);
  ::setenv("KEEL_DEVICE", "cpu", 1);
  EXPECT_EQ(plan::device_from_flags(std::nullopt, std::nullopt, std::nullopt).name, "cpu");
  if (env) ::setenv("KEEL_DEVICE", saved.c_str(), 1);
  else ::unsetenv("KEEL_DEVICE");
  EXPECT_EQ(plan::device_from_flags(std::string("auto"), std::nullopt, std::nullopt).name, chosen);
  EXPECT_EQ(plan::device_from_flags(std::string("cpu"), std::nullopt, std::nullopt).name, "cpu");
}

// keel's CUDA kernels are built for compute capability 9.0: an older GPU is no device for a
// session (refused before anything loads, with the way out) and --device auto passes it by.
TEST(PlanDevice, GpusBeforeHopperAreRefusedWithTheReason) {
  EXPECT_EQ(plan::gpu_unsupported("NVIDIA H100 80GB HBM3", 9, 0), "");
  EXPECT_EQ(plan::gpu_unsupported("NVIDIA H200", 9, 0), "");
  EXPECT_EQ(plan::gpu_unsupported("a later GPU", 10, 0), "");  // runs the compute_90 PTX
  EXPECT_NE(plan::gpu_unsupported("NVIDIA A100-SXM4-80GB", 8, 0), "");
  const std::string why = plan::gpu_unsupported("NVIDIA GeForce RTX 4090", 8, 9);
  EXPECT_NE(why.find("NVIDIA GeForce RTX 4090 (compute capability 8.9)"), std::string::npos) << why;
  EXPECT_NE(why.find("9.0"), std::string::npos) << why;
  plan::DeviceProfile gpu;
  gpu.name = "cuda:0";
  gpu.absent = why;
  try {
    plan::require_present(gpu);
    ADD_FAILURE() << "an unsupported GPU was accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("--device cuda:0: NVIDIA GeForce RTX 4090"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--device cpu runs on the CPU"), std::string::npos) << msg;
  }
}

// A plan for a device no session can start on (no such GPU, one too old, no CUDA in this build)
// says so under its device line; a plan for one that can run has no such note.
TEST(PlanDevice, PlanForAnAbsentDeviceSaysSo) {
  const plan::ModelSpec spec = plan::describe_preset("qwen3-0.6b", model::FileType::q8_0);
  const std::string note = "\nnote     a plan only: no session can start here: ";
#ifdef KEEL_HAS_CUDA  // only a build with CUDA plans for its workspaces
  const plan::DeviceProfile here = plan::with_overrides(plan::cuda_profile(0), 80ull << 30, std::nullopt);
  const std::string text = plan::format_plan(plan::make_plan(spec, request(4096, runtime::KvType::f16, here)));
  if (here.absent.empty()) EXPECT_EQ(text.find(note), std::string::npos) << text;
  else EXPECT_NE(text.find(note + here.absent + "\n"), std::string::npos) << text;
#endif
  plan::DeviceProfile cpu = plan::cpu_profile();
  EXPECT_EQ(plan::format_plan(plan::make_plan(spec, request(4096, runtime::KvType::f16, cpu))).find(note), std::string::npos);
  cpu.absent = "planted";
  EXPECT_NE(plan::format_plan(plan::make_plan(spec, request(4096, runtime::KvType::f16, cpu))).find(note + "planted\n"),
            std::string::npos);
}

TEST(PlanInvariants, HoldAcrossPresetsDevicesAndContexts) {
  std::vector<std::pair<std::string, model::FileType>> presets = {
      {"qwen3-0.6b", model::FileType::q8_0}, {"qwen3-8b", model::FileType::q5_k_m},
      {"llama-3.1-8b", model::FileType::q4_k_m}, {"qwen3-32b", model::FileType::q5_k_m}};
  if (has_qwen35()) presets.push_back({"qwen35-27b", model::FileType::q5_k_m});
  std::vector<plan::DeviceProfile> devices = plan::apple_profiles();
  devices.push_back(plan::with_overrides(plan::cpu_profile(), 24ull << 20, 1ull << 20));
  devices.push_back(plan::with_overrides(plan::cpu_profile(), 3ull << 30, 16ull << 20));
#ifdef KEEL_HAS_CUDA
  devices.push_back(planned_cuda(40ull << 30));
#endif
  int n_fits = 0, n_refused = 0;
  for (const auto& [name, type] : presets) {
    const plan::ModelSpec spec = plan::describe_preset(name, type);
    for (const plan::DeviceProfile& device : devices)
      for (auto kv : {runtime::KvType::f16, runtime::KvType::q8_0})
        for (int64_t ctx : {int64_t{1}, int64_t{100}, int64_t{4096}, int64_t{32768}, int64_t{40000}}) {
          const plan::Plan p = plan::make_plan(spec, request(ctx, kv, device));
          SCOPED_TRACE(name + " on " + device.name + " ctx " + std::to_string(ctx));
          // KV: whole pages, at least the context, less than one page more.
          const uint64_t bpt = p.kv.bytes_per_token();
          const uint64_t pages = (static_cast<uint64_t>(ctx) + p.kv.page_tokens - 1) / p.kv.page_tokens;
          EXPECT_EQ(p.bytes(plan::Category::kv), pages * p.kv.page_tokens * bpt);
          EXPECT_EQ(p.kv.n_pages, pages);
          EXPECT_GE(p.bytes(plan::Category::kv), static_cast<uint64_t>(ctx) * bpt);
          EXPECT_LT(p.bytes(plan::Category::kv), (static_cast<uint64_t>(ctx) + p.kv.page_tokens) * bpt);
          // Totals are the sum of the buffers, and of the categories.
          uint64_t sum = 0, cats = 0, largest = 0;
          for (const plan::Buffer& b : p.buffers) sum += b.total(), largest = std::max(largest, b.bytes);
          for (uint64_t c : p.category_bytes) cats += c;
          EXPECT_EQ(sum, p.total_bytes);
          EXPECT_EQ(cats, p.total_bytes);
          EXPECT_EQ(largest, p.largest_buffer_bytes);
          EXPECT_LE(p.options.chunk, ctx);
          if (!p.fits) {
            EXPECT_EQ(p.options.chunk, plan::smallest_auto_chunk(ctx));  // the table's chunk
          }
          if (p.fits) {
            ++n_fits;
            EXPECT_LE(p.total_bytes, device.budget_bytes);
            for (const plan::Buffer& b : p.buffers) EXPECT_LE(b.bytes, device.max_buffer_bytes) << b.name;
            EXPECT_LE(p.kv.page_bytes(), device.max_buffer_bytes);
            EXPECT_TRUE(p.reasons.empty());
            // Auto chose the largest rung that fits: the next larger rung (within the context and
            // the device's top rung) does not.
            const auto rung = std::find(plan::kChunkLadder.begin(), plan::kChunkLadder.end(), p.options.chunk);
            ASSERT_NE(rung, plan::kChunkLadder.end());
            const int64_t top = plan::largest_auto_chunk(device, request(ctx, kv, device));
            EXPECT_LE(p.options.chunk, top);
            if (rung != plan::kChunkLadder.begin() && *(rung - 1) <= ctx && *(rung - 1) <= top) {
              EXPECT_FALSE(plan::make_plan(spec, request(ctx, kv, device, *(rung - 1))).fits);
            }
          } else {
            ++n_refused;
            EXPECT_FALSE(p.reasons.empty());
            ASSERT_TRUE(p.max_context.has_value());
            // Every verified suggestion is a plan that fits; the largest context is exact.
            if (*p.max_context > 0) {
              EXPECT_TRUE(plan::make_plan(spec, request(*p.max_context, kv, device)).fits);
              EXPECT_LT(*p.max_context, ctx);
            }
            if (*p.max_context < ctx && *p.max_context < static_cast<int64_t>(spec.hp.n_ctx_train)) {
              EXPECT_FALSE(plan::make_plan(spec, request(*p.max_context + 1, kv, device)).fits);
            }
            for (const plan::Suggestion& s : p.suggestions) {
              if (!s.verified) continue;
              const plan::Plan again = plan::make_plan(spec, apply(request(ctx, kv, device), s.options));
              EXPECT_TRUE(again.fits) << s.options;
              EXPECT_EQ(again.total_bytes, s.total_bytes) << s.options;
              EXPECT_EQ(again.options.chunk, s.chunk) << s.options;
              EXPECT_GE(s.chunk, plan::smallest_auto_chunk(again.options.n_ctx)) << s.options;
            }
          }
        }
  }
  EXPECT_GT(n_fits, 50);
  EXPECT_GT(n_refused, 20);
}

// Auto's largest chunk: 1024 on a CPU; on a CUDA device 16384 for one sequence, 4096 for several
// sequences and for perplexity; an explicit cap; a budget too small for the top rung
// steps down the ladder.
TEST(PlanInvariants, AutoChunkTopsOutPerDevice) {
  const plan::ModelSpec spec = plan::describe_preset("qwen3-8b", model::FileType::q4_k_m);
  const plan::DeviceProfile cpu = plan::with_overrides(plan::cpu_profile(), 80ull << 30, std::nullopt);
  EXPECT_EQ(plan::make_plan(spec, request(32768, runtime::KvType::f16, cpu)).options.chunk, 1024);
#ifndef KEEL_HAS_CUDA
  GTEST_SKIP() << "the CUDA cases need a build with CUDA";
#endif
  const plan::DeviceProfile gpu = planned_cuda(80ull << 30);
  EXPECT_EQ(plan::make_plan(spec, request(32768, runtime::KvType::f16, gpu)).options.chunk, 16384);
  EXPECT_EQ(plan::make_plan(spec, request(12000, runtime::KvType::f16, gpu)).options.chunk, 8192);  // within the context
  plan::PlanRequest two = request(32768, runtime::KvType::f16, gpu);
  two.n_seqs = 2;
  EXPECT_EQ(plan::make_plan(spec, two).options.chunk, 4096);
  plan::PlanRequest scored = request(32768, runtime::KvType::f16, gpu);
  scored.logits_every_token = true;
  EXPECT_EQ(plan::make_plan(spec, scored).options.chunk, 4096);
  plan::PlanRequest capped = request(32768, runtime::KvType::f16, gpu);
  capped.max_auto_chunk = 8192;
  EXPECT_EQ(plan::make_plan(spec, capped).options.chunk, 8192);
  // A budget between the 8192 and 16384 plans takes 8192.
  const uint64_t at_8192 = plan::make_plan(spec, request(32768, runtime::KvType::f16, gpu, 8192)).total_bytes;
  const uint64_t at_16384 = plan::make_plan(spec, request(32768, runtime::KvType::f16, gpu, 16384)).total_bytes;
  ASSERT_LT(at_8192, at_16384);
  const plan::DeviceProfile tight = plan::with_overrides(gpu, (at_8192 + at_16384) / 2, std::nullopt);
  EXPECT_EQ(plan::make_plan(spec, request(32768, runtime::KvType::f16, tight)).options.chunk, 8192);
}

TEST(PlanInvariants, PagesShrinkToFitTheCap) {
  const plan::ModelSpec spec = plan::describe_preset("qwen3-8b", model::FileType::q8_0);
  // f16 KV of one qwen3-8b layer: 8 heads × 128 × 2 B × 2 (K, V) = 4 KiB per token; 256 tokens = 1 MiB.
  const plan::DeviceProfile small = plan::with_overrides(plan::cpu_profile(), 64ull << 30, 300ull << 10);
  const plan::Plan p = plan::make_plan(spec, request(4096, runtime::KvType::f16, small));
  EXPECT_EQ(p.kv.page_tokens, 64u);
  EXPECT_LE(p.kv.page_bytes(), 300u << 10);
  // A token-matrix weight above the cap is a refusal reason, whatever the chunk.
  EXPECT_FALSE(p.fits);
  bool weight_reason = false;
  for (const std::string& r : p.reasons) weight_reason |= r.find("weights") != std::string::npos;
  EXPECT_TRUE(weight_reason);
}

// The attention workspace grows with the page: under a small cap auto takes smaller pages.
TEST(PlanInvariants, PagesShrinkForTheAttentionWorkspace) {
  auto model = model::Model::load(test::shared("fixtures/tiny-qwen3-q4_k.gguf"));
  const plan::DeviceProfile device = plan::with_overrides(plan::cpu_profile(), 64ull << 20, 256ull << 10);
  plan::PlanRequest req = request(1024, runtime::KvType::f16, device);
  const plan::Plan p = plan::plan_for_model(*model, req);
  EXPECT_TRUE(p.fits) << plan::refusal_text(p);
  EXPECT_LT(p.kv.page_tokens, plan::kDefaultPageTokens);
  for (const plan::Buffer& b : p.buffers) EXPECT_LE(b.bytes, device.max_buffer_bytes) << b.name;
  req.page_tokens = plan::kDefaultPageTokens;  // a fixed page is kept, and then refused
  EXPECT_FALSE(plan::plan_for_model(*model, req).fits);
}

TEST(PlanInvariants, PlanOfAFileEqualsItsHeader) {
  auto model = model::Model::load(test::shared("fixtures/tiny-qwen3-q5_k.gguf"));
  const plan::Plan p = plan::plan_for_model(*model, request(1024, runtime::KvType::f16, plan::cpu_profile()));
  EXPECT_TRUE(p.fits);
  EXPECT_EQ(p.bytes(plan::Category::weights), model->file().tensor_bytes());
  uint64_t n_weights = 0;
  for (const plan::Buffer& b : p.buffers) n_weights += b.category == plan::Category::weights;
  EXPECT_EQ(n_weights, model->file().tensors().size());
  EXPECT_EQ(p.options.chunk, 1024);
  EXPECT_EQ(p.options.max_logit_rows, 1);
  plan::PlanRequest ppl = request(1024, runtime::KvType::f16, plan::cpu_profile());
  ppl.logits_every_token = true;
  EXPECT_EQ(plan::plan_for_model(*model, ppl).options.max_logit_rows, 1024);
}

// --parallel N: N recurrent-state slots, one spare KV page per extra sequence, a call of a chunk
// plus N - 1 decodes, N logits rows; weights and the per-token KV cost unchanged.
TEST(PlanInvariants, ParallelSequencesScaleStateAndCall) {
  if (!has_qwen35()) GTEST_SKIP() << "the qwen35 family is not registered in this build";
  const plan::ModelSpec spec = plan::describe_preset("qwen35-0.8b", model::FileType::q8_0);
  plan::PlanRequest req = request(8192, runtime::KvType::f16, plan::cpu_profile(), 512);
  const plan::Plan one = plan::make_plan(spec, req);
  req.n_seqs = 4;
  const plan::Plan four = plan::make_plan(spec, req);
  ASSERT_TRUE(one.fits && four.fits);
  EXPECT_EQ(four.bytes(plan::Category::weights), one.bytes(plan::Category::weights));
  EXPECT_EQ(four.bytes(plan::Category::recurrent_state), 4 * one.bytes(plan::Category::recurrent_state));
  EXPECT_EQ(four.kv.n_pages, one.kv.n_pages + 3);
  EXPECT_EQ(four.options.n_seqs, 4);
  EXPECT_GT(four.bytes(plan::Category::activations), one.bytes(plan::Category::activations));  // 515-token calls
  EXPECT_EQ(four.bytes(plan::Category::logits), 4 * one.bytes(plan::Category::logits));
  // Too many sequences for a budget is a refusal like any other.
  req.device = plan::with_overrides(plan::cpu_profile(), one.total_bytes + one.total_bytes / 100, std::nullopt);
  req.n_seqs = 64;
  EXPECT_FALSE(plan::make_plan(spec, req).fits);
}

TEST(PlanInvariants, RequestsThatMakeNoSenseAreUsageErrors) {
  const plan::ModelSpec spec = plan::describe_preset("qwen3-0.6b", model::FileType::q8_0);
  for (auto [ctx, chunk] : {std::pair<int64_t, int64_t>{0, 8}, {16, 0}, {-3, 8}}) {
    try {
      plan::make_plan(spec, request(ctx, runtime::KvType::f16, plan::cpu_profile(), chunk));
      ADD_FAILURE() << ctx << " " << chunk;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::usage);
    }
  }
  // Above the training context: a refusal that suggests the model's limit.
  const plan::Plan p = plan::make_plan(spec, request(100000, runtime::KvType::f16, plan::cpu_profile()));
  EXPECT_FALSE(p.fits);
  ASSERT_TRUE(p.max_context.has_value());
  EXPECT_LE(*p.max_context, 40960);
}

// ANCHORS.md: Qwen3.5-27B Q5_K_M, 173,000 tokens, M4 Max 36 GB. f16 KV: weights ≈ 19.2–19.6 GB,
// KV ≈ 11.3 GB, over the 27.0 GiB working set: refused, and q8_0 KV is named as the fix.
TEST(PlanQwen35_27B, F16RefusedQ8Fits) {
  if (!has_qwen35()) GTEST_SKIP() << "the qwen35 family is not registered in this build";
  const plan::ModelSpec spec = plan::describe_preset("qwen35-27b", model::FileType::q5_k_m);
  const plan::Plan f16 = plan::make_plan(spec, request(173000, runtime::KvType::f16, m4_max()));
  EXPECT_GE(f16.bytes(plan::Category::weights), 19'200'000'000ull);
  EXPECT_LE(f16.bytes(plan::Category::weights), 19'600'000'000ull);
  EXPECT_NEAR(f16.bytes(plan::Category::kv) / 1e9, 11.34, 0.02);
  EXPECT_NEAR(f16.bytes(plan::Category::recurrent_state) / 1e6, 156.9, 0.1);  // 149.6 MiB
  EXPECT_EQ(f16.kv.bytes_per_token(), 65536u);
  EXPECT_FALSE(f16.fits);
  EXPECT_GT(f16.total_bytes, kM4MaxWorkingSet);
  bool q8_named = false;
  for (const plan::Suggestion& s : f16.suggestions) q8_named |= s.options == "--kv-type q8_0" && s.verified;
  EXPECT_TRUE(q8_named);
  ASSERT_TRUE(f16.max_context.has_value());
  EXPECT_GT(*f16.max_context, 100000);
  EXPECT_LT(*f16.max_context, 173000);

  const plan::Plan q8 = plan::make_plan(spec, request(173000, runtime::KvType::q8_0, m4_max()));
  EXPECT_TRUE(q8.fits) << plan::refusal_text(q8);
  EXPECT_NEAR(q8.bytes(plan::Category::kv) / 1e9, 6.02, 0.02);
  EXPECT_EQ(q8.kv.bytes_per_token(), 34816u);
  EXPECT_LE(q8.total_bytes, kM4MaxWorkingSet);
  EXPECT_GE(q8.options.chunk, 512);
}

TEST(PlanCli, Qwen35_27BOnM4MaxText) {
  if (!has_qwen35()) GTEST_SKIP() << "the qwen35 family is not registered in this build";
  const std::string base = "plan --preset qwen35-27b --type q5_k_m --ctx 173000 --device apple-m4-max-36g";
  const Output f16 = run_keel(base + " 2>&1");
  EXPECT_EQ(f16.code, 1) << f16.text;
  EXPECT_NE(f16.text.find("weights          19.22 GB"), std::string::npos) << f16.text;
  EXPECT_NE(f16.text.find("11.34 GB"), std::string::npos) << f16.text;
  EXPECT_NE(f16.text.find("refused"), std::string::npos) << f16.text;
  EXPECT_NE(f16.text.find("--kv-type q8_0"), std::string::npos) << f16.text;
  EXPECT_NE(f16.text.find("largest context that fits"), std::string::npos) << f16.text;

  const Output q8 = run_keel(base + " --kv-type q8_0 2>&1");
  EXPECT_EQ(q8.code, 0) << q8.text;
  EXPECT_NE(q8.text.find("verdict: fits"), std::string::npos) << q8.text;
  EXPECT_NE(q8.text.find("(auto)"), std::string::npos) << q8.text;
}

// The seed case's refusal proposes only useful runs: every suggestion prefills in chunks of at
// least kMinUsefulChunk tokens, the largest context is the largest at that chunk, and the
// refused table shows the chunk it tried (not "chunk 1").
TEST(PlanCli, Qwen35_27BRefusalSuggestsNoChunkBelowTheMinimum) {
  if (!has_qwen35()) GTEST_SKIP() << "the qwen35 family is not registered in this build";
  const plan::ModelSpec spec = plan::describe_preset("qwen35-27b", model::FileType::q5_k_m);
  const plan::Plan p = plan::make_plan(spec, request(173000, runtime::KvType::f16, m4_max()));
  ASSERT_FALSE(p.fits);
  EXPECT_EQ(plan::kMinUsefulChunk, 256);
  EXPECT_EQ(p.options.chunk, plan::kMinUsefulChunk);
  int verified = 0;
  for (const plan::Suggestion& s : p.suggestions) {
    if (!s.verified) continue;
    ++verified;
    EXPECT_GE(s.chunk, plan::kMinUsefulChunk) << s.options;
  }
  EXPECT_GE(verified, 2);
  // The largest useful context: fits at chunk 256, one token more does not; it is proposed.
  ASSERT_TRUE(p.max_useful_context.has_value());
  const int64_t useful = *p.max_useful_context;
  EXPECT_GT(useful, 100000);
  EXPECT_LE(useful, *p.max_context);
  EXPECT_TRUE(plan::make_plan(spec, request(useful, runtime::KvType::f16, m4_max(), 256)).fits);
  EXPECT_FALSE(plan::make_plan(spec, request(useful + 1, runtime::KvType::f16, m4_max(), 256)).fits);
  bool proposed = false, any_context_proposed = false;
  for (const plan::Suggestion& s : p.suggestions) {
    proposed |= s.options == "-c " + std::to_string(useful);
    any_context_proposed |= s.options == "-c " + std::to_string(*p.max_context) && *p.max_context != useful;
  }
  EXPECT_TRUE(proposed);
  EXPECT_FALSE(any_context_proposed);

  const Output text = run_keel("plan --preset qwen35-27b --type q5_k_m --ctx 173000 --device apple-m4-max-36g 2>&1");
  EXPECT_EQ(text.code, 1) << text.text;
  EXPECT_EQ(text.text.find("chunk 1 (auto)"), std::string::npos) << text.text;
  EXPECT_NE(text.text.find("chunk 256 (auto: tried 1024 down to 1, none fits)"), std::string::npos) << text.text;
  for (size_t at = text.text.find(", chunk "); at != std::string::npos; at = text.text.find(", chunk ", at + 1))
    EXPECT_GE(std::stoll(text.text.substr(at + 8)), plan::kMinUsefulChunk) << text.text.substr(at, 40);

  const Output json = run_keel("plan --preset qwen35-27b --type q5_k_m --ctx 173000 --device apple-m4-max-36g --json");
  const auto j = nlohmann::json::parse(json.text);
  EXPECT_EQ(j["min_useful_chunk"], 256);
  EXPECT_EQ(j["chunk"], 256);
  for (const auto& s : j["suggestions"])
    if (s["verified"].get<bool>()) {
      EXPECT_GE(s["chunk"].get<int64_t>(), 256) << s.dump();
    }
}

// keel serve's recurrent-state snapshots in the plan: one sequence's state each, in the
// recurrent_state category, listed beside the state buffers.
TEST(PlanCli, StateSnapshotsAreCountedAndShown) {
  if (!has_qwen35()) GTEST_SKIP() << "the qwen35 family is not registered in this build";
  const std::string base = "plan --preset qwen35-27b --type q4_k_m --ctx 32768 --parallel 4 --device apple-m5-max-128g";
  const auto none = nlohmann::json::parse(run_keel(base + " --json").text);
  const auto six = nlohmann::json::parse(run_keel(base + " --state-snapshots 6 --json").text);
  EXPECT_EQ(none["state_snapshots"], 0);
  EXPECT_EQ(six["state_snapshots"], 6);
  const auto state = [](const nlohmann::json& j) { return j["bytes"]["recurrent_state"].get<uint64_t>(); };
  EXPECT_EQ(state(six) - state(none), 6 * (state(none) / 4));  // 4 sequence slots planned without them
  const auto automatic = nlohmann::json::parse(run_keel(base + " --state-snapshots auto --json").text);
  EXPECT_EQ(automatic["state_snapshots"], 32768 / automatic["chunk"].get<int64_t>() + 3 * 4);
  const Output text = run_keel(base + " --state-snapshots 6 2>&1");
  EXPECT_NE(text.text.find("4 sequence slots and 6 prefix-cache snapshots of"), std::string::npos) << text.text;
  EXPECT_NE(text.text.find("gdn_state_snapshots.*"), std::string::npos) << text.text;
}

TEST(PlanCli, Qwen35_27BOnM4MaxJson) {
  if (!has_qwen35()) GTEST_SKIP() << "the qwen35 family is not registered in this build";
  const std::string base = "plan --preset qwen35-27b --type q5_k_m --ctx 173000 --device apple-m4-max-36g --json";
  const Output f16 = run_keel(base + " 2>/dev/null");
  EXPECT_EQ(f16.code, 1);
  const auto j = nlohmann::json::parse(f16.text);
  EXPECT_FALSE(j["fits"].get<bool>());
  const double weights = j["bytes"]["weights"].get<double>(), kv = j["bytes"]["kv"].get<double>();
  EXPECT_GE(weights, 19.2e9);
  EXPECT_LE(weights, 19.6e9);
  EXPECT_NEAR(kv / 1e9, 11.34, 0.02);
  EXPECT_GT(j["total_bytes"].get<uint64_t>(), kM4MaxWorkingSet);
  EXPECT_EQ(j["device"]["budget_bytes"].get<uint64_t>(), kM4MaxWorkingSet);
  EXPECT_FALSE(j["reasons"].empty());
  EXPECT_GT(j["max_context"].get<int64_t>(), 100000);
  bool q8 = false;
  for (const auto& s : j["suggestions"]) q8 |= s["options"] == "--kv-type q8_0" && s["verified"].get<bool>();
  EXPECT_TRUE(q8) << j["suggestions"].dump();

  const Output fit = run_keel(base + " --kv-type q8_0 2>/dev/null");
  EXPECT_EQ(fit.code, 0);
  const auto k = nlohmann::json::parse(fit.text);
  EXPECT_TRUE(k["fits"].get<bool>());
  EXPECT_EQ(k["bytes"]["weights"], j["bytes"]["weights"]);
  EXPECT_NEAR(k["bytes"]["kv"].get<double>() / 1e9, 6.02, 0.02);
  EXPECT_TRUE(k["chunk_auto"].get<bool>());
  EXPECT_GE(k["chunk"].get<int64_t>(), 512);
  EXPECT_LE(k["total_bytes"].get<uint64_t>(), kM4MaxWorkingSet);
}

// The tiny artificial profile from the CLI: a file that fits, and a context that cannot fit,
// refused (exit 1) from the header alone.
TEST(PlanCli, TinyProfileOnAFile) {
  const std::string model = "-m " + test::shared("fixtures/tiny-qwen3.gguf");
  const Output fits = run_keel("plan " + model + " -c 1024 --budget 24MiB --max-buffer 1MiB -t 2 --json 2>/dev/null");
  EXPECT_EQ(fits.code, 0) << fits.text;
  const auto j = nlohmann::json::parse(fits.text);
  EXPECT_TRUE(j["fits"].get<bool>());
  for (const auto& b : j["buffers"]) EXPECT_LE(b["bytes"].get<uint64_t>(), 1u << 20) << b.dump();

  const Output refused = run_keel("plan " + model + " -c 4096 --budget 12MiB --max-buffer 1MiB -t 2 2>&1");
  EXPECT_EQ(refused.code, 1) << refused.text;
  EXPECT_NE(refused.text.find("largest context that fits"), std::string::npos) << refused.text;
  EXPECT_NE(refused.text.find("--kv-type q8_0"), std::string::npos) << refused.text;

  const Output usage = run_keel("plan " + model + " --budget lots 2>&1");
  EXPECT_EQ(usage.code, 2) << usage.text;
}
