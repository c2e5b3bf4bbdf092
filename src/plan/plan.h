// The memory plan: every buffer a session will own (weights, KV pages, recurrent state,
// activations, staging, logits), computed from a model's header alone, against a device profile
// (total budget and per-buffer cap). It either fits, or says why not and what would fit.
//
// The KV, state and scratch buffers come from runtime::layout_session, the very function the
// Session allocates from, so a plan and the session it describes cannot disagree.
//
// Using it from a command that runs a model (keel run / perplexity / bench):
//
//   plan::PlanRequest req;
//   req.n_ctx = 8192;                       // tokens the session must hold
//   req.kv_type = runtime::KvType::f16;
//   req.n_threads = 0;
//   req.logits_every_token = false;         // true for perplexity (a logits row per chunk token)
//   req.chunk = plan::parse_chunk(args.get_or("--chunk", "auto"));
//   req.device = plan::device_from_flags(args.get("--device"), args.get("--budget"), args.get("--max-buffer"));
//   plan::Plan p = plan::plan_for_model(*model, req);   // header only: no weights read
//   plan::check_fits(p);                    // throws keel::Error(refused) with the full refusal
//   runtime::Session session(model, p.options);   // allocates exactly p's KV/state/scratch
//
// plan::format_plan(p) prints the table (for --memory-report), plan::to_json(p) the JSON.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/family.h"
#include "model/hparams.h"
#include "model/recipe.h"
#include "plan/device.h"
#include "quant/types.h"
#include "plan/layout.h"

namespace keel::model { class Model; }

namespace keel::plan {

enum class Category { weights, kv, recurrent_state, activations, staging, logits };
inline constexpr size_t kCategoryCount = 6;
std::string_view category_name(Category c);  // "weights", "kv", "recurrent_state", ...

struct Buffer {
  std::string name;       // tensor name, "kv pages", "hidden", "matmul", ...
  uint64_t bytes = 0;     // one buffer
  uint64_t count = 1;     // identical buffers of this name (KV: attention layers × pages)
  Category category = Category::activations;
  std::string device;     // "host", "host (mmap)", "unified", "unified (mmap)"
  uint64_t total() const { return bytes * count; }
};

// One weight tensor as the header describes it (no data).
struct WeightTensor {
  std::string name;
  quant::Type type;
  std::vector<uint64_t> shape;  // ggml order
  uint64_t bytes;
};

// What the planner knows of a model: hparams, family and the tensor table.
struct ModelSpec {
  std::string source;                     // the GGUF path, or "preset qwen35-27b q5_k_m"
  model::Hparams hp;
  const model::Family* family = nullptr;
  std::vector<WeightTensor> weights;
  uint64_t weight_bytes() const;
};
ModelSpec describe_model(const model::Model& model);  // from a loaded (header-only) model
ModelSpec describe_file(const std::string& path);     // opens the GGUF, reads its header
// A model that is not on this machine: preset hparams, the family's tensor list, and the types
// llama-quantize's recipe gives each tensor. Throws keel::Error naming presets / the family.
ModelSpec describe_preset(std::string_view preset, model::FileType type);

// The KV page ladder and prefill chunk ladder `auto` chooses from (largest first; its top rungs
// only where largest_auto_chunk allows them).
inline constexpr uint32_t kDefaultPageTokens = 256;
inline constexpr std::array<int64_t, 15> kChunkLadder = {16384, 8192, 4096, 2048, 1024, 512, 256, 128,
                                                         64,    32,   16,   8,    4,    2,   1};
// The smallest prefill chunk worth proposing: every chunk reads all the weights once, so a
// 146K-token prompt in chunks of 2 is 73K passes over the weights, no plan at all. A refusal's
// suggestions (and its largest context) only use auto chunks of at least this size; `auto`
// itself still takes a smaller rung when nothing larger fits (and the plan says so).
inline constexpr int64_t kMinUsefulChunk = 256;
// kMinUsefulChunk, or for a shorter context the largest ladder rung within it.
int64_t smallest_auto_chunk(int64_t n_ctx);

struct PlanRequest {
  int64_t n_ctx = 4096;                   // tokens the session must hold
  std::optional<int64_t> chunk;           // nullopt: auto, the largest ladder rung that fits
  int64_t max_auto_chunk = 0;             // the largest rung auto may take; 0: largest_auto_chunk's rule
  runtime::KvType kv_type = runtime::KvType::f16;
  std::optional<uint32_t> page_tokens;    // nullopt: 256 (or less for a short context), halved until a page fits the cap
  int n_threads = 0;                      // 0: all cores (the CPU scratch is per thread)
  bool logits_every_token = false;        // perplexity: max_logit_rows = chunk
  int n_seqs = 1;                         // sequences held at once (--parallel): state slots, logits rows, call size
  bool exact = false;                     // f32 activations in every matmul (--exact)
  std::optional<DeviceProfile> device;    // nullopt: cpu_profile()
  // Recurrent-state snapshots of a hybrid model (keel serve's prefix cache, --state-snapshots):
  // kAutoStateSnapshots: auto_state_snapshots(); ignored for models without recurrent state.
  int64_t state_snapshots = 0;
};
inline constexpr int64_t kAutoStateSnapshots = -1;

// The largest chunk `auto` takes: the request's max_auto_chunk when set, else on a CUDA device
// 16384 for one sequence, where longer calls keep the tensor cores busier (H200, prefill tok/s
// with chunks of 4096 / 8192 / 16384: Qwen3.5-27B Q5_K_M pp16384 7,278 / 7,521 / 7,681;
// Qwen3-8B Q4_K_M pp32768 16,124 / 16,565 / 16,882), and no more: the 27B's 173,000-token
// prompt on an H100 (keel run, chunks of 4096 / 8192 / 16384 / 32768 / 65536) 5,683 / 5,829 and
// 5,851 / 5,935 to 5,968 / 5,875 / 5,824 tok/s, the card at its power cap throughout, and 32768
// plans 7.3 GB more. 4096 for several sequences (a longer prefill piece would hold up the others'
// decode steps) or perplexity (its logits rows grow with the chunk). On a CPU 1024: its GEMMs
// already run in blocks of 512 (8-bit) or 768 (f32) tokens, and the ops between them stream the
// whole call's activations, which stay in the caches only for short calls (Sapphire Rapids VM, 2
// threads, Qwen3-0.6B-shaped pp4096 tok/s with chunks of 4096 / 1024 / 512, two rounds: Q8_0 437,
// 430 / 441, 443 / 440, 450; Q4_K_M 416, 414 / 423, 431 / 420, 431).
int64_t largest_auto_chunk(const DeviceProfile& device, const PlanRequest& request);

// An option set that was re-planned and fits (or, for `hint`s, advice that cannot be verified).
struct Suggestion {
  std::string options;      // e.g. "--kv-type q8_0", "-c 146432", "--device apple-m4-pro-48g"
  uint64_t total_bytes = 0; // the re-planned total
  int64_t chunk = 0;        // the chunk that re-plan chose
  bool verified = true;     // false: advice only (e.g. "a smaller quantization")
};

struct Plan {
  std::string model_source;
  model::Hparams hp;
  PlanRequest request;
  DeviceProfile device;
  runtime::SessionOptions options;   // what to hand runtime::Session: chunk and page size resolved
  bool chunk_auto = false;           // refused under auto: shown at smallest_auto_chunk(n_ctx)
  runtime::KvGeometry kv;            // pages per attention layer, page size, bytes per token
  std::vector<Buffer> buffers;       // weights (one per tensor), KV pages (one aggregated entry), state, scratch
  std::array<uint64_t, kCategoryCount> category_bytes{};
  uint64_t total_bytes = 0;
  std::string largest_buffer;        // name of the largest single buffer
  uint64_t largest_buffer_bytes = 0;

  bool fits = false;
  std::vector<std::string> reasons;       // why it does not fit (empty when it fits)
  std::optional<int64_t> max_context;     // refused: the largest context that fits with this KV type (0: none)
  std::optional<int64_t> max_useful_context;  // refused: the same with useful chunks (auto: >= kMinUsefulChunk)
  std::vector<Suggestion> suggestions;    // refused: what would fit, each re-planned

  uint64_t bytes(Category c) const { return category_bytes[static_cast<size_t>(c)]; }
  uint64_t session_bytes() const;         // what the Session allocates: kv + state + scratch
};

// "--chunk auto" -> nullopt, "--chunk 512" -> 512; throws keel::Error(usage) otherwise.
std::optional<int64_t> parse_chunk(std::string_view text);

// The plan for a request; `auto` chunk resolved. Never throws for "does not fit" (see fits);
// throws keel::Error(usage) for impossible requests (context or chunk <= 0).
Plan make_plan(const ModelSpec& model, const PlanRequest& request);
Plan plan_for_model(const model::Model& model, const PlanRequest& request);

// Throws keel::Error(refusal_text(plan), ErrorKind::refused) unless plan.fits.
void check_fits(const Plan& plan);

// Printing (plan/report.cpp).
std::string format_plan(const Plan& plan);     // the table and the verdict line
std::string refusal_text(const Plan& plan);    // the one refusal message: needs, has, fixes
std::string to_json(const Plan& plan);         // one JSON object, `"fits"` included

}  // namespace keel::plan
