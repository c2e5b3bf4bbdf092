// Prompt-cache reader (Session::load_state, src/runtime/state_file.cpp) on any file, with a
// session made once per process over one of two models (KV pages of 4 tokens), then the session
// used as `keel run --prompt-cache` uses it: the rest of the prompt prefilled, a token sampled
// (greedy and with the default sampler) and decoded. The models: the embedded default
// (stories260K, 5 layers), and a tiny hybrid qwen35 synthesized at start (3 Gated DeltaNet layers
// and one attention layer, 512-token vocabulary), whose files carry a recurrent state and
// checkpoints of it. A keel::Error is a clean refusal. Checks: a refused file leaves the sequence
// empty with every page back in the pool; an accepted one restores at most the prompt, exactly
// n_reused tokens and their pages, and the session goes on working; sampled ids are inside the
// vocabulary.
// Input: byte 0 holds flags, the rest is the file. Bits 0 and 1 rewrite the header's and the
// body's XXH3 checksums to match the bytes (so the fuzzer gets past them, as a hand-made file
// would); bits 2-4 pick the prompt the file is restored for (see prompt_for); bit 5 picks the
// hybrid model.
// Seeds: `KEEL_FUZZ_WRITE_SEEDS=fuzz/corpus/prompt_cache build-fuzz/fuzz/fuzz_prompt_cache` writes
// real files (save_state of kSaved in each session; the hybrid's with checkpoints at 4 and 8),
// one per model and prompt choice, and exits.
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "keel/error.h"
#include "model/model.h"
#include "runtime/sampler.h"
#include "runtime/session.h"
#include "tools_lib/model_writer.h"
#include "tools_lib/synth.h"

namespace {

using keel::runtime::Session;

constexpr size_t kHeaderBytes = 80;       // StateHeader
constexpr size_t kHeaderHashAt = 72;      // its last field
constexpr uint32_t kPageTokens = 4;
// The tokens the seeds saved.
const std::vector<int32_t> kSaved = {1, 403, 52, 29, 7, 260, 88, 121, 3, 450};

keel::runtime::SessionOptions session_options() {
  keel::runtime::SessionOptions o;
  o.n_ctx = 32;
  o.chunk = 8;
  o.page_tokens = kPageTokens;
  o.n_threads = 1;
  return o;
}

std::vector<int32_t> prompt_for(unsigned choice) {
  std::vector<int32_t> p = kSaved;
  switch (choice) {
    case 0: break;                                         // the saved tokens: the file's logits are used
    case 1: p.insert(p.end(), {9, 17, 300}); break;        // longer: the rest is computed
    case 2: p[6] = 5; break;                               // diverges at 6
    case 3: p.resize(5); break;                            // a prefix of the saved tokens
    case 4: p.clear(); break;                              // empty
    case 5: p.resize(1); break;                            // one token
    case 6: p = {2, 2, 2}; break;                          // nothing in common
    default: p.resize(31, 11); break;                      // fills the context but one
  }
  return p;
}

void fix_checksums(std::vector<uint8_t>& file, unsigned flags) {
  if ((flags & 1) && file.size() >= kHeaderBytes) {
    const uint64_t h = XXH3_64bits(file.data(), kHeaderHashAt);
    std::memcpy(file.data() + kHeaderHashAt, &h, sizeof h);
  }
  if ((flags & 2) && file.size() >= kHeaderBytes + 8) {
    const uint64_t h = XXH3_64bits(file.data() + kHeaderBytes, file.size() - kHeaderBytes - 8);
    std::memcpy(file.data() + file.size() - 8, &h, sizeof h);
  }
}

void check(bool ok) {
  if (!ok) __builtin_trap();
}

int32_t pages_for(int64_t tokens) { return static_cast<int32_t>((tokens + kPageTokens - 1) / kPageTokens); }

// The session after load_state, used as keel run does: prefill what was not restored, sample
// and decode one token.
void continue_run(Session& session, const std::vector<int32_t>& prompt, int64_t reused, const float* logits) {
  const int32_t n_vocab = static_cast<int32_t>(session.model().hparams().n_vocab);
  if (!logits) {
    if (reused == static_cast<int64_t>(prompt.size())) return;  // an empty prompt: nothing to continue
    logits = session.prefill(std::span<const int32_t>(prompt).subspan(static_cast<size_t>(reused)));
  }
  check(session.n_past() == static_cast<int64_t>(prompt.size()));
  const int32_t greedy = keel::runtime::argmax(logits, n_vocab);
  keel::runtime::SamplerScratch scratch(n_vocab);
  keel::runtime::Sampler sampler(keel::runtime::SamplerOptions{});  // top-k 40: a partial sort
  keel::runtime::SamplerOptions all;
  all.top_k = 0;  // every candidate: a full sort
  keel::runtime::Sampler sampler_all(all);
  const int32_t sampled = sampler.sample(logits, prompt, prompt.size(), scratch),
                sampled_all = sampler_all.sample(logits, prompt, prompt.size(), scratch);
  check(greedy >= 0 && greedy < n_vocab && sampled >= 0 && sampled < n_vocab && sampled_all >= 0 && sampled_all < n_vocab);
  (void)session.decode(sampled);
  check(session.n_past() == static_cast<int64_t>(prompt.size()) + 1);
}

constexpr unsigned kHybridFlag = 1u << 5;

// A qwen35 small enough that its state files stay a few kB: the recurrent state is 4 value heads
// of 16×16 per Gated DeltaNet layer.
std::shared_ptr<const keel::model::Model> tiny_hybrid_model() {
  keel::tools::SynthOptions o;
  o.preset = "qwen35-0.8b";
  o.type = "q8_0";
  o.seed = 7;
  o.layers = 4;
  o.dims = "n_embd=64,n_ff=128,n_head=2,n_head_kv=1,head_dim=32,n_rot=16,n_vocab=512,"
           "ssm_k_heads=2,ssm_v_heads=4,ssm_head_dim=16";
  const keel::tools::SynthPlan plan = keel::tools::plan_synth(o);
  const keel::fuzz::InputFile file("tiny-qwen35.gguf");
  keel::tools::WriteOptions wo;
  wo.n_threads = 1;
  wo.progress = false;
  keel::tools::write_model(file.path(), plan.metadata, plan.jobs, wo);
  return keel::model::Model::load(file.path());  // mapped: the file may go once it is open
}

struct Fixture {
  std::shared_ptr<const keel::model::Model> model;
  Session session;
  explicit Fixture(std::shared_ptr<const keel::model::Model> m) : model(std::move(m)), session(model, session_options()) {}
};

Fixture& fixture(bool hybrid) {
  if (hybrid) {
    static Fixture f(tiny_hybrid_model());
    return f;
  }
  static Fixture f(keel::model::Model::load("default"));
  return f;
}

void write_seeds(const std::string& dir, bool hybrid) {
  Session& session = fixture(hybrid).session;
  session.reset();
  const std::string state = dir + "/saved.state";
  if (hybrid) {  // as keel run does, snapshots at chunk boundaries
    keel::runtime::StateCheckpoints checkpoints(state);
    const std::span<const int32_t> saved(kSaved);
    (void)session.prefill(saved.first(4));
    session.checkpoint_state(0, checkpoints);
    (void)session.prefill(saved.subspan(4, 4));
    session.checkpoint_state(0, checkpoints);
    session.save_state(0, kSaved, session.prefill(saved.subspan(8)), state, &checkpoints);
  } else {
    session.save_state(0, kSaved, session.prefill(kSaved), state);
  }
  std::ifstream in(state, std::ios::binary);
  const std::string bytes{std::istreambuf_iterator<char>(in), {}};
  std::remove(state.c_str());
  for (unsigned choice = 0; choice < 8; ++choice) {
    std::ofstream out(dir + (hybrid ? "/hybrid-prompt" : "/prompt") + std::to_string(choice) + ".state", std::ios::binary);
    out.put(static_cast<char>((choice << 2) | (hybrid ? kHybridFlag : 0)));
    out << bytes;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("KEEL_FUZZ_WRITE_SEEDS")) {
    write_seeds(dir, false);
    write_seeds(dir, true);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const keel::fuzz::InputFile input("prompt.cache");
  if (size == 0) return 0;
  const unsigned flags = data[0];
  Session& session = fixture(flags & kHybridFlag).session;
  std::vector<uint8_t> file(data + 1, data + size);
  fix_checksums(file, flags);
  const std::string& path = input.write(file.data(), file.size());
  const std::vector<int32_t> prompt = prompt_for((flags >> 2) & 7);

  session.reset();
  const int32_t pages_total = session.pages_total();
  Session::LoadedState loaded;
  try {
    loaded = session.load_state(0, path, prompt);
  } catch (const keel::Error&) {
    check(session.n_past() == 0 && session.pages_free() == pages_total);
    return 0;
  }
  check(loaded.n_reused >= 0 && loaded.n_reused <= static_cast<int64_t>(prompt.size()));
  check(session.n_past() == loaded.n_reused);
  check(session.pages_free() == pages_total - pages_for(loaded.n_reused));
  check(!loaded.logits || loaded.n_reused == static_cast<int64_t>(prompt.size()));
  try {
    continue_run(session, prompt, loaded.n_reused, loaded.logits);
  } catch (const keel::Error&) {
    __builtin_trap();  // a restored session must go on working
  }
  return 0;
}
