#include "plan/plan.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>

#include "keel/error.h"
#include "model/model.h"
#include "model/presets.h"

namespace keel::plan {
namespace {

bool is_logits_buffer(const std::string& name) {
  return name == "logits" || name == "logit_index" || name == "logit_rows";
}

// KV pages: 256 tokens (or the smallest power of two holding a shorter context), halved until
// one page (K and V of one attention layer) fits the device's largest buffer.
uint32_t choose_page_tokens(const model::Hparams& hp, runtime::KvType type, int64_t n_ctx, uint64_t max_buffer) {
  runtime::KvGeometry g;
  g.type = type;
  g.n_layers = hp.n_attention_layers();
  g.n_kv_heads = hp.n_head_kv;
  g.head_dim = hp.head_dim;
  g.page_tokens = kDefaultPageTokens;
  while (g.page_tokens > 1 && g.page_tokens / 2 >= n_ctx) g.page_tokens /= 2;
  while (g.page_tokens > 1 && g.page_bytes() > max_buffer) g.page_tokens /= 2;
  return g.page_tokens;
}

// Everything about one model and device that does not depend on context, chunk or KV type.
struct Prepared {
  const ModelSpec& spec;
  DeviceProfile device;
  std::vector<runtime::MatrixInfo> matrices;
  std::vector<Buffer> weights;            // attached to the final plan only (re-plans skip the copy)
  uint64_t weight_bytes = 0;
  size_t largest_weight = SIZE_MAX;        // index into weights
  std::vector<size_t> weights_over_cap;   // indices into weights
};

Prepared prepare(const ModelSpec& spec, const DeviceProfile& device) {
  if (!spec.family) throw Error("internal: model spec without a family");
  Prepared p{spec, device, {}, {}, 0, SIZE_MAX, {}};
  const std::string weight_device = device.memory + " (mmap)";
  p.weights.reserve(spec.weights.size());
  for (const WeightTensor& w : spec.weights) {
    if (w.shape.size() >= 2) p.matrices.push_back({w.type, static_cast<int64_t>(w.shape[0])});
    p.weights.push_back({w.name, w.bytes, 1, Category::weights, weight_device});
  }
  for (size_t i = 0; i < p.weights.size(); ++i) {
    const uint64_t bytes = p.weights[i].bytes;
    p.weight_bytes += bytes;
    if (p.largest_weight == SIZE_MAX || bytes > p.weights[p.largest_weight].bytes) p.largest_weight = i;
    if (bytes > device.max_buffer_bytes) p.weights_over_cap.push_back(i);
  }
  return p;
}

// keel serve's default snapshot count: one per chunk of a full context (a snapshot every chunk of a
// long shared prompt) plus three per sequence (two cuts near the end of each prompt, and one
// being replaced), never more than the KV pages that could carry them, and at most half of the
// memory the rest of the plan leaves free on the device.
int64_t auto_state_snapshots(const runtime::SessionLayout& layout, int64_t n_ctx, uint64_t other_bytes,
                             uint64_t budget_bytes) {
  const uint64_t per = layout.state_bytes_per_sequence();
  if (per == 0) return 0;
  const model::SessionShape& s = layout.shape;
  const int64_t useful = std::min<int64_t>((n_ctx + s.chunk - 1) / s.chunk + 3 * s.n_seqs, s.kv.n_pages);
  const uint64_t left = budget_bytes > other_bytes ? budget_bytes - other_bytes : 0;
  return std::min<int64_t>(useful, static_cast<int64_t>(left / 2 / per));
}

void check_request(const PlanRequest& r) {
  if (r.n_ctx <= 0) throw Error("context size must be positive, got " + std::to_string(r.n_ctx), ErrorKind::usage);
  if (r.chunk && *r.chunk <= 0)
    throw Error("chunk size must be positive, got " + std::to_string(*r.chunk), ErrorKind::usage);
  if (r.page_tokens && *r.page_tokens == 0) throw Error("KV page size must be positive", ErrorKind::usage);
}

// The plan for one chunk size and KV page size.
Plan build(const Prepared& prep, const PlanRequest& req, int64_t chunk, uint32_t page_tokens) {
  const model::Hparams& hp = prep.spec.hp;
  const DeviceProfile& dev = prep.device;
  Plan plan;
  plan.model_source = prep.spec.source;
  plan.hp = hp;
  plan.request = req;
  plan.device = dev;
  plan.chunk_auto = !req.chunk.has_value();

  runtime::SessionOptions& o = plan.options;
  o.n_ctx = req.n_ctx;
  o.chunk = std::min(chunk, req.n_ctx);
  o.max_logit_rows = req.logits_every_token ? o.chunk : 1;
  o.kv_type = req.kv_type;
  o.page_tokens = page_tokens;
  o.n_threads = req.n_threads;
  o.n_seqs = req.n_seqs;
  o.exact = req.exact;
  o.device = dev.backend;
  o.device_ordinal = dev.ordinal;
  runtime::SessionLayout layout = runtime::layout_session(hp, *prep.spec.family, prep.matrices, o);
  if (req.state_snapshots != 0 && layout.state_bytes_per_sequence() > 0) {
    const uint64_t others = prep.weight_bytes + layout.kv_bytes() + layout.state_bytes() + layout.scratch_bytes();
    o.state_snapshots = static_cast<int>(req.state_snapshots == kAutoStateSnapshots
                                             ? auto_state_snapshots(layout, o.n_ctx, others, dev.budget_bytes)
                                             : req.state_snapshots);
    layout = runtime::layout_session(hp, *prep.spec.family, prep.matrices, o);
  }
  plan.kv = layout.shape.kv;

  // Weights are accounted here from prep's summary; make_plan attaches their buffers.
  plan.category_bytes[static_cast<size_t>(Category::weights)] = prep.weight_bytes;
  plan.total_bytes = prep.weight_bytes;
  if (prep.largest_weight != SIZE_MAX) {
    plan.largest_buffer = prep.weights[prep.largest_weight].name;
    plan.largest_buffer_bytes = prep.weights[prep.largest_weight].bytes;
  }
  std::vector<const Buffer*> over_cap;
  for (size_t i : prep.weights_over_cap) over_cap.push_back(&prep.weights[i]);
  const uint64_t n_pages = uint64_t{plan.kv.n_layers} * plan.kv.n_pages;
  if (n_pages > 0) plan.buffers.push_back({"kv pages", plan.kv.page_bytes(), n_pages, Category::kv, dev.memory});
  for (const model::BufferSpec& b : layout.state)
    plan.buffers.push_back({b.name, b.bytes, 1, Category::recurrent_state, dev.memory});
  for (const model::BufferSpec& b : layout.snapshots)
    plan.buffers.push_back({b.name, b.bytes, 1, Category::recurrent_state, dev.memory});
  for (const model::BufferSpec& b : layout.scratch)
    plan.buffers.push_back(
        {b.name, b.bytes, 1, is_logits_buffer(b.name) ? Category::logits : Category::activations, dev.memory});
  for (const model::BufferSpec& b : layout.workspaces)
    plan.buffers.push_back({b.name, b.bytes, 1, Category::activations, dev.memory});
  plan.buffers.push_back({layout.host.name, layout.host.bytes, 1, Category::activations, dev.memory});

  for (const Buffer& b : plan.buffers) {
    plan.category_bytes[static_cast<size_t>(b.category)] += b.total();
    plan.total_bytes += b.total();
    if (b.bytes > plan.largest_buffer_bytes || plan.largest_buffer.empty()) {
      plan.largest_buffer = b.name;
      plan.largest_buffer_bytes = b.bytes;
    }
    if (b.bytes > dev.max_buffer_bytes) over_cap.push_back(&b);
  }

  if (req.kv_type == runtime::KvType::q8_0 && hp.head_dim % 32 != 0)
    plan.reasons.push_back("a q8_0 KV cache needs a head size that is a multiple of 32; the model's is " +
                           std::to_string(hp.head_dim) + " (use --kv-type f16)");
  if (hp.n_ctx_train > 0 && req.n_ctx > static_cast<int64_t>(hp.n_ctx_train))
    plan.reasons.push_back("context " + std::to_string(req.n_ctx) + " exceeds the model's training context of " +
                           std::to_string(hp.n_ctx_train) + " tokens");
  if (plan.total_bytes > dev.budget_bytes)
    plan.reasons.push_back("the plan needs " + format_bytes(plan.total_bytes) + " in total; " + dev.name +
                           " offers " + format_bytes(dev.budget_bytes) + " (" + dev.budget_source + ")");
  for (size_t i = 0; i < over_cap.size() && i < 3; ++i)
    plan.reasons.push_back("buffer '" + over_cap[i]->name + "' (" + std::string(category_name(over_cap[i]->category)) +
                           ") is " + format_bytes(over_cap[i]->bytes) + ", above the device's largest buffer of " +
                           format_bytes(dev.max_buffer_bytes));
  if (over_cap.size() > 3)
    plan.reasons.push_back("... and " + std::to_string(over_cap.size() - 3) + " more buffers above the cap");
  plan.fits = plan.reasons.empty();
  return plan;
}

// Which ladder rungs `auto` may take: any of them (a session that only fits with small chunks
// still runs, slowly), or only useful ones, at least smallest_auto_chunk (what advice proposes).
enum class Rungs { any, useful };

// The plan with `auto` resolved: the largest chunk (a ladder rung never above the context, or
// the given one) and for it the largest KV page (the attention workspace grows with the page)
// that fit. When nothing fits: refused, shown at the given chunk or, under auto, at the smallest
// useful one (the advice is about that chunk), with the default page.
Plan plan_core(const Prepared& prep, const PlanRequest& req, Rungs rungs = Rungs::any) {
  check_request(req);
  const int64_t floor = rungs == Rungs::useful ? smallest_auto_chunk(req.n_ctx) : 1;
  std::vector<int64_t> chunks;
  if (req.chunk) chunks.push_back(*req.chunk);
  const int64_t top = largest_auto_chunk(prep.device, req);
  for (int64_t rung : kChunkLadder)
    if (!req.chunk && rung <= req.n_ctx && rung <= top && rung >= floor) chunks.push_back(rung);
  // Pages below 16 tokens only when a page's own bytes force it (attention loops per page).
  std::vector<uint32_t> pages;
  if (req.page_tokens) {
    pages.push_back(*req.page_tokens);
  } else {
    const uint32_t start = choose_page_tokens(prep.spec.hp, req.kv_type, req.n_ctx, prep.device.max_buffer_bytes);
    for (uint32_t p = start; p >= std::min<uint32_t>(start, 16) && p >= 1; p /= 2) pages.push_back(p);
  }
  for (int64_t chunk : chunks)
    for (uint32_t page : pages) {
      Plan plan = build(prep, req, chunk, page);
      if (plan.fits) return plan;
    }
  return build(prep, req, req.chunk ? *req.chunk : smallest_auto_chunk(req.n_ctx), pages.front());
}

// The largest context in [1, limit] whose plan fits (0 if none); fitting only shrinks as the
// context grows (more KV pages, never less scratch, a useful chunk never smaller), so a binary
// search finds it.
int64_t largest_fitting_context(const Prepared& prep, PlanRequest req, int64_t limit, Rungs rungs) {
  int64_t lo = 0, hi = limit;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    req.n_ctx = mid;
    if (plan_core(prep, req, rungs).fits) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

std::string ctx_flag(int64_t n) { return "-c " + std::to_string(n); }

// Re-plans alternatives for a refused plan; each suggestion is a plan that fits, and under auto
// one that prefills in useful chunks (Rungs::useful): 146K tokens in chunks of 2 is no plan.
void add_advice(const Prepared& prep, Plan& plan) {
  const PlanRequest& req = plan.request;
  const model::Hparams& hp = prep.spec.hp;
  const int64_t ctx_limit = std::min<int64_t>(req.n_ctx, hp.n_ctx_train > 0 ? hp.n_ctx_train : req.n_ctx);
  plan.max_context = largest_fitting_context(prep, req, ctx_limit, Rungs::any);
  plan.max_useful_context =
      req.chunk ? *plan.max_context : largest_fitting_context(prep, req, *plan.max_context, Rungs::useful);
  const auto useful_plan = [&](const Prepared& on, const PlanRequest& r) { return plan_core(on, r, Rungs::useful); };
  auto suggest = [&](std::string options, const Plan& p) {
    plan.suggestions.push_back({std::move(options), p.total_bytes, p.options.chunk, true});
  };

  // A smaller KV type at the same context, or else at the largest context it allows.
  std::vector<runtime::KvType> smaller;
  if (req.kv_type == runtime::KvType::f32) smaller = {runtime::KvType::f16, runtime::KvType::q8_0};
  if (req.kv_type == runtime::KvType::f16) smaller = {runtime::KvType::q8_0};
  for (runtime::KvType t : smaller) {
    PlanRequest alt = req;
    alt.kv_type = t;
    alt.n_ctx = ctx_limit;
    const std::string flag = "--kv-type " + std::string(runtime::kv_type_name(t));
    Plan p = useful_plan(prep, alt);
    if (p.fits) {
      suggest(ctx_limit != req.n_ctx ? flag + " " + ctx_flag(ctx_limit) : flag, p);
      break;
    }
    if (t == runtime::KvType::q8_0) {
      const int64_t n = largest_fitting_context(prep, alt, ctx_limit, Rungs::useful);
      if (n > *plan.max_useful_context) {
        alt.n_ctx = n;
        suggest(flag + " " + ctx_flag(n), useful_plan(prep, alt));
      }
    }
  }

  if (*plan.max_useful_context > 0) {
    PlanRequest alt = req;
    alt.n_ctx = *plan.max_useful_context;
    suggest(ctx_flag(*plan.max_useful_context), useful_plan(prep, alt));
  }

  if (req.chunk) {
    PlanRequest alt = req;
    alt.chunk.reset();
    alt.n_ctx = ctx_limit;
    Plan p = useful_plan(prep, alt);
    if (p.fits && ctx_limit == req.n_ctx) suggest("--chunk " + std::to_string(p.options.chunk), p);
  }

  // Another device: the smallest named profile where the same options fit (Apple profiles only
  // make sense as advice when planning for an Apple profile).
  if (plan.device.memory == "unified") {
    for (const DeviceProfile& d : apple_profiles()) {
      if (d.budget_bytes <= plan.device.budget_bytes) continue;
      Plan p = useful_plan(prepare(prep.spec, d), req);
      if (p.fits) {
        suggest("--device " + d.name, p);
        break;
      }
    }
  }

  uint64_t largest_weight = 0;
  for (const WeightTensor& w : prep.spec.weights) largest_weight = std::max(largest_weight, w.bytes);
  if (plan.bytes(Category::weights) >= plan.device.budget_bytes || largest_weight > plan.device.max_buffer_bytes)
    plan.suggestions.push_back({"a smaller quantization of the model (--type, or another file): the weights alone need " +
                                    format_bytes(plan.bytes(Category::weights)) + ", the largest tensor " +
                                    format_bytes(largest_weight),
                                0, 0, false});
}

}  // namespace

std::string_view category_name(Category c) {
  switch (c) {
    case Category::weights: return "weights";
    case Category::kv: return "kv";
    case Category::recurrent_state: return "recurrent_state";
    case Category::activations: return "activations";
    case Category::staging: return "staging";
    case Category::logits: return "logits";
  }
  return "?";
}

uint64_t ModelSpec::weight_bytes() const {
  uint64_t total = 0;
  for (const WeightTensor& w : weights) total += w.bytes;
  return total;
}

uint64_t Plan::session_bytes() const {
  return bytes(Category::kv) + bytes(Category::recurrent_state) + bytes(Category::activations) +
         bytes(Category::staging) + bytes(Category::logits);
}

ModelSpec describe_model(const model::Model& model) {
  ModelSpec spec;
  spec.source = model.file().path();
  spec.hp = model.hparams();
  spec.family = &model.family();
  for (const gguf::TensorInfo& t : model.file().tensors())
    spec.weights.push_back({t.name, t.type, std::vector<uint64_t>(t.ne, t.ne + t.n_dims), t.n_bytes});
  return spec;
}

ModelSpec describe_file(const std::string& path) { return describe_model(*model::Model::load(path)); }

ModelSpec describe_preset(std::string_view preset, model::FileType type) {
  ModelSpec spec;
  spec.source = "preset " + std::string(preset) + " " + std::string(model::file_type_name(type));
  spec.hp = model::require_preset(preset);
  spec.family = &model::family_for(spec.hp.arch);
  // The tensors such a file holds: the required ones, plus output.weight unless it is tied.
  std::vector<model::TensorSpec> specs;
  for (model::TensorSpec& s : spec.family->tensor_specs(spec.hp)) {
    const bool wanted = !s.optional || (s.role == model::TensorRole::output && !spec.hp.tied_output);
    if (wanted) specs.push_back(std::move(s));
  }
  const std::vector<quant::Type> types = model::recipe_types(type, specs);
  for (size_t i = 0; i < specs.size(); ++i) {
    uint64_t rows = 1;
    for (size_t d = 1; d < specs[i].shape.size(); ++d) rows *= specs[i].shape[d];
    const uint64_t bytes = quant::row_bytes(types[i], specs[i].shape[0]) * rows;
    spec.weights.push_back({specs[i].name, types[i], specs[i].shape, bytes});
  }
  return spec;
}

int64_t largest_auto_chunk(const DeviceProfile& device, const PlanRequest& request) {
  if (request.max_auto_chunk > 0) return request.max_auto_chunk;
  if (device.backend != backend::Device::cuda) return 1024;
  return request.n_seqs <= 1 && !request.logits_every_token ? 16384 : 4096;
}

int64_t smallest_auto_chunk(int64_t n_ctx) {
  for (int64_t rung : kChunkLadder)
    if (rung <= std::min(n_ctx, kMinUsefulChunk)) return rung;
  return 1;
}

std::optional<int64_t> parse_chunk(std::string_view text) {
  if (text == "auto") return std::nullopt;
  try {
    size_t used = 0;
    const long long n = std::stoll(std::string(text), &used);
    if (used == text.size() && n > 0) return n;
  } catch (const std::logic_error&) {
  }
  throw Error("--chunk expects a positive number of tokens or 'auto', got '" + std::string(text) + "'", ErrorKind::usage);
}

Plan make_plan(const ModelSpec& model, const PlanRequest& request) {
  const Prepared prep = prepare(model, request.device ? *request.device : cpu_profile());
  Plan plan = plan_core(prep, request);
  if (!plan.fits) add_advice(prep, plan);
  plan.buffers.insert(plan.buffers.begin(), prep.weights.begin(), prep.weights.end());
  return plan;
}

Plan plan_for_model(const model::Model& model, const PlanRequest& request) {
  return make_plan(describe_model(model), request);
}

void check_fits(const Plan& plan) {
  if (!plan.fits) throw Error(refusal_text(plan), ErrorKind::refused);
}

}  // namespace keel::plan
