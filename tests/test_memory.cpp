// The session allocates its plan once and nothing after: allocation hooks count every malloc and
// operator new between session start and the end of prefill + decode; peak RSS of a long prefill
// stays within the plan plus a stated slack; a tiny device profile (24 MiB budget, 1 MiB largest
// buffer) runs a multi-chunk prefill with no allocation above the cap.
//
// The hooks replace malloc & co. (forwarding to glibc's __libc_* entry points) and the global
// operator new/delete for the whole test binary. They count only while a window is open, so
// other tests see plain malloc. Under sanitizers (which own malloc) they are compiled out and
// these tests skip.
#include <gtest/gtest.h>

#include <malloc.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <new>
#include <string>

#include "keel/error.h"
#include "model/model.h"
#include "plan/plan.h"
#include "runtime/session.h"
#include "sanitizers.h"
#include "test_paths.h"

#if KEEL_TEST_UNDER_ASAN || defined(__SANITIZE_THREAD__)
#define KEEL_ALLOC_HOOKS 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define KEEL_ALLOC_HOOKS 0
#endif
#endif
#if !defined(KEEL_ALLOC_HOOKS) && defined(__GLIBC__)
#define KEEL_ALLOC_HOOKS 1
#endif
#if !defined(KEEL_ALLOC_HOOKS)
#define KEEL_ALLOC_HOOKS 0
#endif

namespace {

inline void trap_here() { raise(SIGTRAP); }

constinit std::atomic<bool> g_counting{false};
constinit std::atomic<uint64_t> g_mallocs{0};   // malloc, calloc, realloc, aligned allocations
constinit std::atomic<uint64_t> g_news{0};      // global operator new (all forms)
constinit std::atomic<uint64_t> g_frees{0};
constinit std::atomic<uint64_t> g_largest{0};   // largest single request while counting

constinit std::atomic<bool> g_trap{false};     // KEEL_TRAP_ALLOC=1: SIGTRAP at a counted allocation (run under gdb)

[[maybe_unused]] inline void note_alloc(std::atomic<uint64_t>& counter, size_t bytes) {
  if (!g_counting.load(std::memory_order_relaxed)) return;
  if (g_trap.load(std::memory_order_relaxed)) trap_here();
  counter.fetch_add(1, std::memory_order_relaxed);
  uint64_t seen = g_largest.load(std::memory_order_relaxed);
  while (bytes > seen && !g_largest.compare_exchange_weak(seen, bytes, std::memory_order_relaxed)) {
  }
}
[[maybe_unused]] inline void note_free(void* p) {
  if (p && g_counting.load(std::memory_order_relaxed)) g_frees.fetch_add(1, std::memory_order_relaxed);
}

struct AllocCounts {
  uint64_t mallocs, news, frees, largest;
  uint64_t allocations() const { return mallocs + news; }
};

// Counts allocations made by any thread between construction and stop().
class AllocWindow {
 public:
  AllocWindow() {
    g_trap = std::getenv("KEEL_TRAP_ALLOC") != nullptr;
    g_mallocs = 0;
    g_news = 0;
    g_frees = 0;
    g_largest = 0;
    g_counting = true;
  }
  ~AllocWindow() { g_counting = false; }
  AllocCounts stop() {
    g_counting = false;
    return {g_mallocs.load(), g_news.load(), g_frees.load(), g_largest.load()};
  }
};

}  // namespace

#if KEEL_ALLOC_HOOKS
extern "C" {
void* __libc_malloc(size_t);
void __libc_free(void*);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);

void* malloc(size_t n) {
  note_alloc(g_mallocs, n);
  return __libc_malloc(n);
}
void free(void* p) {
  note_free(p);
  __libc_free(p);
}
void* calloc(size_t count, size_t size) {
  note_alloc(g_mallocs, count * size);
  return __libc_calloc(count, size);
}
void* realloc(void* p, size_t n) {
  note_alloc(g_mallocs, n);
  return __libc_realloc(p, n);
}
void* memalign(size_t align, size_t n) {
  note_alloc(g_mallocs, n);
  return __libc_memalign(align, n);
}
void* aligned_alloc(size_t align, size_t n) {
  note_alloc(g_mallocs, n);
  return __libc_memalign(align, n);
}
int posix_memalign(void** out, size_t align, size_t n) {
  if (align < sizeof(void*) || (align & (align - 1)) != 0) return EINVAL;
  note_alloc(g_mallocs, n);
  void* p = __libc_memalign(align, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
}  // extern "C"

namespace {
void* counted_new(size_t n, size_t align) {
  note_alloc(g_news, n);  // glibc's entry points directly: counted once, as a new
  return align <= alignof(std::max_align_t) ? __libc_malloc(n ? n : 1) : __libc_memalign(align, n ? n : 1);
}
void* throwing_new(size_t n, size_t align) {
  void* p = counted_new(n, align);
  if (!p) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(size_t n) { return throwing_new(n, 0); }
void* operator new[](size_t n) { return throwing_new(n, 0); }
void* operator new(size_t n, const std::nothrow_t&) noexcept { return counted_new(n, 0); }
void* operator new[](size_t n, const std::nothrow_t&) noexcept { return counted_new(n, 0); }
void* operator new(size_t n, std::align_val_t a) { return throwing_new(n, static_cast<size_t>(a)); }
void* operator new[](size_t n, std::align_val_t a) { return throwing_new(n, static_cast<size_t>(a)); }
void* operator new(size_t n, std::align_val_t a, const std::nothrow_t&) noexcept { return counted_new(n, static_cast<size_t>(a)); }
void* operator new[](size_t n, std::align_val_t a, const std::nothrow_t&) noexcept { return counted_new(n, static_cast<size_t>(a)); }
void operator delete(void* p) noexcept { free(p); }
void operator delete[](void* p) noexcept { free(p); }
void operator delete(void* p, size_t) noexcept { free(p); }
void operator delete[](void* p, size_t) noexcept { free(p); }
void operator delete(void* p, std::align_val_t) noexcept { free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { free(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { free(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { free(p); }
#endif  // KEEL_ALLOC_HOOKS

using namespace keel;

namespace {

std::vector<int32_t> some_tokens(size_t n, uint32_t n_vocab, uint32_t seed) {
  std::vector<int32_t> ids(n);
  uint32_t x = seed;
  for (auto& id : ids) {
    x = x * 1664525u + 1013904223u;
    id = static_cast<int32_t>(1 + (x >> 8) % (n_vocab - 1));
  }
  return ids;
}

plan::PlanRequest request(int64_t n_ctx, std::optional<int64_t> chunk, const plan::DeviceProfile& device) {
  plan::PlanRequest req;
  req.n_ctx = n_ctx;
  req.chunk = chunk;
  req.n_threads = 2;
  req.device = device;
  return req;
}

plan::DeviceProfile tiny_profile(uint64_t budget = 24ull << 20, uint64_t max_buffer = 1ull << 20) {
  return plan::with_overrides(plan::cpu_profile(), budget, max_buffer);
}

// Runs prefill (several chunks), decode and evaluate with the hooks counting.
void expect_no_allocations(const std::string& path, int64_t n_ctx, int64_t chunk) {
  auto model = model::Model::load(path);
  plan::PlanRequest req = request(n_ctx, chunk, plan::cpu_profile());
  req.logits_every_token = true;  // evaluate() below returns a logits row per token
  const plan::Plan p = plan::plan_for_model(*model, req);
  ASSERT_TRUE(p.fits) << plan::refusal_text(p);
  runtime::Session session(model, p.options);
  const uint32_t n_vocab = model->hparams().n_vocab;
  const std::vector<int32_t> prompt = some_tokens(static_cast<size_t>(chunk * 3 + 5), n_vocab, 7);
  const std::vector<int32_t> more = some_tokens(static_cast<size_t>(chunk + 3), n_vocab, 9);
  int64_t progress_calls = 0;
  const runtime::ProgressFn progress = [&](const runtime::ChunkProgress&) { return ++progress_calls > 0; };
  double checksum = 0;
  const std::function<void(int64_t, const float*)> on_logits = [&](int64_t, const float* l) { checksum += l[0]; };

  AllocWindow window;
  const float* logits = session.prefill(prompt, progress);
  int32_t next = 1;
  for (int i = 0; i < 4; ++i) {
    next = static_cast<int32_t>(1 + static_cast<uint32_t>(std::fabs(logits[0]) * 1000) % (n_vocab - 1));
    logits = session.decode(next);
  }
  session.evaluate(more, on_logits, progress);
  const AllocCounts counts = window.stop();

  EXPECT_GE(progress_calls, 4);
  EXPECT_TRUE(std::isfinite(checksum));
  const char* how = "; to see the sites: KEEL_TRAP_ALLOC=1 gdb -ex run -ex bt --args keel_tests --gtest_filter=<this test>";
  EXPECT_EQ(counts.mallocs, 0u) << path << ": malloc-family calls after session start (largest " << counts.largest
                                << " bytes)" << how;
  EXPECT_EQ(counts.news, 0u) << path << ": operator new calls after session start" << how;
  EXPECT_EQ(counts.frees, 0u) << path << ": frees after session start";
}

// Several sequences: adding, mixed calls (a prefill chunk beside decodes), removing and reusing a
// slot, resetting, all with the hooks counting.
void expect_no_allocations_parallel(const std::string& path, int64_t n_ctx, int64_t chunk) {
  auto model = model::Model::load(path);
  plan::PlanRequest req = request(n_ctx, chunk, plan::cpu_profile());
  req.n_seqs = 3;
  const plan::Plan p = plan::plan_for_model(*model, req);
  ASSERT_TRUE(p.fits) << plan::refusal_text(p);
  runtime::Session session(model, p.options);
  const uint32_t n_vocab = model->hparams().n_vocab;
  const std::vector<int32_t> a = some_tokens(static_cast<size_t>(chunk + 3), n_vocab, 3);
  const std::vector<int32_t> b = some_tokens(static_cast<size_t>(chunk * 2), n_vocab, 5);
  const int32_t decodes[3] = {11, 12, 13};
  double checksum = 0;

  AllocWindow window;
  const int32_t s1 = session.add_sequence(), s2 = session.add_sequence();
  session.prefill(a);
  for (int round = 0; round < 2; ++round) {
    const runtime::SeqInput mixed[] = {{0, std::span<const int32_t>(&decodes[0], 1), true},
                                       {s1, std::span<const int32_t>(b).subspan(static_cast<size_t>(round * chunk),
                                                                                static_cast<size_t>(chunk)),
                                        round == 1},
                                       {s2, std::span<const int32_t>(&decodes[2], 1), true}};
    for (const float* row : session.step(mixed)) checksum += row[0];
  }
  const runtime::SeqInput all[] = {{0, std::span<const int32_t>(&decodes[0], 1), true},
                                   {s1, std::span<const int32_t>(&decodes[1], 1), true},
                                   {s2, std::span<const int32_t>(&decodes[2], 1), true}};
  for (const float* row : session.step(all)) checksum += row[0];
  session.remove_sequence(s1);
  const int32_t s3 = session.add_sequence();
  const runtime::SeqInput again{s3, std::span<const int32_t>(a).first(5), true};
  checksum += session.step(std::span<const runtime::SeqInput>(&again, 1))[0][0];
  session.reset_sequence(s2);
  const AllocCounts counts = window.stop();

  EXPECT_TRUE(std::isfinite(checksum));
  EXPECT_EQ(counts.mallocs, 0u) << path << ": malloc-family calls in multi-sequence calls (largest " << counts.largest
                                << " bytes)";
  EXPECT_EQ(counts.news, 0u) << path << ": operator new calls in multi-sequence calls";
  EXPECT_EQ(counts.frees, 0u) << path << ": frees in multi-sequence calls";
}

uint64_t status_bytes(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string prefix = std::string(key) + ":";
  while (std::getline(in, line))
    if (line.rfind(prefix, 0) == 0) return std::stoull(line.substr(prefix.size())) * 1024;
  return 0;
}

// Resident bytes of this process's mappings of the file at `path` (/proc/self/smaps: a mapping's
// header line starts with its address range, "start-end", then its fields, "Rss:  N kB").
uint64_t mapped_file_rss(const std::string& path) {
  const std::string file = std::filesystem::canonical(path).string();
  std::ifstream in("/proc/self/smaps");
  std::string line;
  bool ours = false;
  uint64_t total = 0;
  while (std::getline(in, line)) {
    const std::string first = line.substr(0, line.find(' '));
    if (first.find('-') != std::string::npos && first.back() != ':') {
      ours = line.size() >= file.size() && line.compare(line.size() - file.size(), file.size(), file) == 0;
    } else if (ours && first == "Rss:") {
      total += std::stoull(line.substr(first.size())) * 1024;
    }
  }
  return total;
}

}  // namespace

TEST(MemoryAllocations, HooksSeeAllocations) {
  if (!KEEL_ALLOC_HOOKS) GTEST_SKIP() << "allocation hooks are compiled out under sanitizers";
  AllocWindow window;
  void* p = std::malloc(100);
  auto* q = new std::string(64, 'x');
  const AllocCounts counts = window.stop();
  delete q;
  std::free(p);
  EXPECT_GE(counts.mallocs, 1u);
  EXPECT_GE(counts.news, 1u);
}

TEST(MemoryAllocations, NoneAfterSessionStartStories260K) {
  if (!KEEL_ALLOC_HOOKS) GTEST_SKIP() << "allocation hooks are compiled out under sanitizers";
  expect_no_allocations(test::shared("models/stories260K.gguf"), 256, 16);
}

TEST(MemoryAllocations, NoneAfterSessionStartTinyQwen3) {
  if (!KEEL_ALLOC_HOOKS) GTEST_SKIP() << "allocation hooks are compiled out under sanitizers";
  expect_no_allocations(test::shared("fixtures/tiny-qwen3.gguf"), 512, 32);
}

TEST(MemoryAllocations, NoneAfterSessionStartTinyQwen3Q5K) {
  if (!KEEL_ALLOC_HOOKS) GTEST_SKIP() << "allocation hooks are compiled out under sanitizers";
  expect_no_allocations(test::shared("fixtures/tiny-qwen3-q5_k.gguf"), 512, 32);
}

TEST(MemoryAllocations, NoneAfterSessionStartTinyQwen35) {
  if (!KEEL_ALLOC_HOOKS) GTEST_SKIP() << "allocation hooks are compiled out under sanitizers";
  try {
    model::family_for("qwen35");
  } catch (const Error&) {
    GTEST_SKIP() << "the qwen35 family is not registered in this build";
  }
  expect_no_allocations(test::shared("fixtures/tiny-qwen35.gguf"), 512, 32);
}

TEST(MemoryAllocations, NoneInMultiSequenceCalls) {
  if (!KEEL_ALLOC_HOOKS) GTEST_SKIP() << "allocation hooks are compiled out under sanitizers";
  expect_no_allocations_parallel(test::shared("models/stories260K.gguf"), 256, 16);
  expect_no_allocations_parallel(test::shared("fixtures/tiny-qwen3-q5_k.gguf"), 512, 32);
  expect_no_allocations_parallel(test::shared("fixtures/tiny-qwen35.gguf"), 512, 32);
}

// What the session allocates is exactly what the plan lists (KV pages, state, scratch).
TEST(MemoryPlan, SessionAllocatesExactlyThePlan) {
  for (const char* rel : {"models/stories260K.gguf", "fixtures/tiny-qwen3.gguf", "fixtures/tiny-qwen3-q4_k.gguf"}) {
    auto model = model::Model::load(test::shared(rel));
    for (auto kv : {runtime::KvType::f16, runtime::KvType::q8_0}) {
      plan::PlanRequest req = request(1000, std::nullopt, plan::cpu_profile());
      req.kv_type = kv;
      const plan::Plan p = plan::plan_for_model(*model, req);
      if (kv == runtime::KvType::q8_0 && model->hparams().head_dim % 32 != 0) {
        EXPECT_FALSE(p.fits) << rel << ": q8_0 KV needs head_dim % 32 == 0; the plan must refuse it";
        continue;
      }
      ASSERT_TRUE(p.fits) << rel;
      runtime::Session session(model, p.options);
      EXPECT_EQ(session.allocated_bytes(), p.session_bytes()) << rel;
      EXPECT_EQ(session.layout().kv_bytes(), p.bytes(plan::Category::kv)) << rel;
      EXPECT_EQ(session.layout().state_bytes(), p.bytes(plan::Category::recurrent_state)) << rel;
      EXPECT_EQ(session.layout().scratch_bytes(), p.bytes(plan::Category::activations) + p.bytes(plan::Category::logits))
          << rel;
      EXPECT_EQ(p.bytes(plan::Category::weights), model->file().tensor_bytes()) << rel;
    }
  }
}

// A 4096-token prefill of tiny-qwen3 (auto chunk on this machine) in a forked child: the child's
// peak RSS grows from its baseline by no more than the plan's total (weights are the mmapped
// file, every session buffer is zeroed at start so it is resident) plus a fixed slack. The code
// pages the child faults in (the program's and its libraries') are file pages too, but no part
// of a plan: they are counted and left out of the growth, as the child's file-backed RSS growth
// less the weights file's resident pages (keel maps no other file; anonymous memory is all
// counted).
TEST(MemoryPeakRss, LongPrefillStaysWithinPlan) {
  if (!KEEL_ALLOC_HOOKS) GTEST_SKIP() << "RSS under sanitizers includes shadow memory and quarantine";
  // Slack: what the child touches beyond the plan, code pages left out. Measured (Release,
  // 2 threads): 0.5 MiB of anonymous memory (GGUF metadata and tensor table, the Model, the
  // workers' stacks, page rounding of each buffer) and the GGUF header's pages: 0.6 MiB in all.
  // 1.5 MiB allowed. (The code pages measured 2.3-2.6 MiB, and 3.5 MiB on the first run after the
  // test binary was linked, as in CI: with them counted, the 4 MiB slack allowed 1.4-1.7 MiB
  // beyond them, and one CI run failed by 94 KB.)
  constexpr uint64_t kSlackBytes = 3ull << 19;
  struct Report {
    uint64_t baseline_rss, peak_rss, code_pages, plan_total, plan_weights, plan_session;
    int64_t chunk;
    int ok;
  } report{};
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    Report r{};
    try {
      // Hand the heap that earlier tests freed back to the kernel, so that the session's
      // buffers cannot reuse resident pages unseen; then reset VmHWM to the current RSS.
      malloc_trim(0);
      { std::ofstream("/proc/self/clear_refs") << "5"; }
      r.baseline_rss = status_bytes("VmRSS");
      const uint64_t baseline_file = status_bytes("RssFile");
      const std::string weights_file = test::shared("fixtures/tiny-qwen3.gguf");
      auto model = model::Model::load(weights_file);
      const plan::Plan p = plan::plan_for_model(*model, request(4096, std::nullopt, plan::cpu_profile()));
      plan::check_fits(p);
      runtime::Session session(model, p.options);
      session.prefill(some_tokens(4090, model->hparams().n_vocab, 3));
      session.decode(5);
      r.peak_rss = status_bytes("VmHWM");
      const uint64_t file_growth = status_bytes("RssFile") - baseline_file, weights_rss = mapped_file_rss(weights_file);
      r.code_pages = file_growth > weights_rss ? file_growth - weights_rss : 0;
      r.plan_total = p.total_bytes;
      r.plan_weights = p.bytes(plan::Category::weights);
      r.plan_session = p.session_bytes();
      r.chunk = p.options.chunk;
      r.ok = 1;
    } catch (...) {
      r.ok = 0;
    }
    (void)!write(fds[1], &r, sizeof r);
    _exit(0);
  }
  close(fds[1]);
  ASSERT_EQ(read(fds[0], &report, sizeof report), static_cast<ssize_t>(sizeof report));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_EQ(report.ok, 1) << "the child failed to plan or prefill";
  const uint64_t growth = report.peak_rss - report.baseline_rss - report.code_pages;
  std::printf("[ peak rss ] baseline %.1f MiB, peak %.1f MiB, code pages %.1f MiB, growth without them %.1f MiB; plan "
              "%.1f MiB (weights %.1f, session %.1f), chunk %lld, slack allowed %.1f MiB\n",
              report.baseline_rss / 1048576.0, report.peak_rss / 1048576.0, report.code_pages / 1048576.0,
              growth / 1048576.0, report.plan_total / 1048576.0, report.plan_weights / 1048576.0,
              report.plan_session / 1048576.0, static_cast<long long>(report.chunk), kSlackBytes / 1048576.0);
  EXPECT_LE(growth, report.plan_total + kSlackBytes);
  // And the session really was resident: the peak covers at least the session's own buffers.
  EXPECT_GE(growth + (1ull << 20), report.plan_session);
}

// Under a tiny profile, auto picks a chunk below the prompt length, the session allocates
// nothing above the cap (session start included), and the chunked logits equal a one-chunk
// prefill's. The profile (24 MiB, 1 MiB) on stories260K; tiny-qwen35 (21 MiB of f32
// weights, GDN layers) under 64 MiB / 512 KiB.
void multi_chunk_under_cap(const std::string& path, uint64_t budget, uint64_t cap, size_t n_prompt) {
  auto model = model::Model::load(path);
  const plan::DeviceProfile device = tiny_profile(budget, cap);
  const plan::Plan p = plan::plan_for_model(*model, request(2048, std::nullopt, device));
  ASSERT_TRUE(p.fits) << plan::refusal_text(p);
  for (const plan::Buffer& b : p.buffers) EXPECT_LE(b.bytes, device.max_buffer_bytes) << b.name;
  EXPECT_LE(p.total_bytes, device.budget_bytes);
  const std::vector<int32_t> prompt = some_tokens(n_prompt, model->hparams().n_vocab, 11);
  ASSERT_LT(p.options.chunk, static_cast<int64_t>(prompt.size())) << "the prompt must span several chunks";

  std::vector<float> chunked;
  {
    AllocWindow window;
    runtime::Session session(model, p.options);
    const float* logits = session.prefill(prompt);
    const AllocCounts counts = window.stop();
    if (KEEL_ALLOC_HOOKS) {
      EXPECT_LE(counts.largest, device.max_buffer_bytes);
    }
    chunked.assign(logits, logits + model->hparams().n_vocab);
  }
  runtime::SessionOptions one = p.options;
  one.chunk = static_cast<int64_t>(prompt.size());
  runtime::Session whole(model, one);
  const float* logits = whole.prefill(prompt);
  for (uint32_t i = 0; i < model->hparams().n_vocab; ++i) ASSERT_NEAR(chunked[i], logits[i], 2e-4f) << i;
}

TEST(MemoryTinyProfile, MultiChunkPrefillUnderTheCap) {
  multi_chunk_under_cap(test::shared("models/stories260K.gguf"), 24ull << 20, 1ull << 20, 1100);
}

TEST(MemoryTinyProfile, MultiChunkPrefillUnderTheCapQwen35) {
  try {
    model::family_for("qwen35");
  } catch (const Error&) {
    GTEST_SKIP() << "the qwen35 family is not registered in this build";
  }
  multi_chunk_under_cap(test::shared("fixtures/tiny-qwen35.gguf"), 64ull << 20, 512ull << 10, 300);
}

// Budget 12 MiB for tiny-qwen3 (10.5 MB of f32 weights): 4096 tokens do not fit; refused from
// the header alone, with the largest context that fits, which re-plans and runs.
TEST(MemoryTinyProfile, ContextThatCannotFitIsRefused) {
  auto model = model::Model::load(test::shared("fixtures/tiny-qwen3.gguf"));
  const plan::DeviceProfile device = tiny_profile(12ull << 20);
  const plan::Plan p = plan::plan_for_model(*model, request(4096, std::nullopt, device));
  ASSERT_FALSE(p.fits);
  try {
    plan::check_fits(p);
    FAIL() << "check_fits did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::refused);
    EXPECT_NE(std::string(e.what()).find("largest context that fits"), std::string::npos) << e.what();
  }
  ASSERT_TRUE(p.max_context.has_value());
  ASSERT_GT(*p.max_context, 0);
  const plan::Plan smaller = plan::plan_for_model(*model, request(*p.max_context, std::nullopt, device));
  ASSERT_TRUE(smaller.fits);
  for (const plan::Buffer& b : smaller.buffers) EXPECT_LE(b.bytes, device.max_buffer_bytes) << b.name;
  runtime::Session session(model, smaller.options);
  session.prefill(some_tokens(static_cast<size_t>(*p.max_context), model->hparams().n_vocab, 5));
  EXPECT_EQ(session.n_past(), *p.max_context);
}
