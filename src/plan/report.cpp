// Printing a plan: the table (`keel plan`, --memory-report), the refusal message and JSON.
#include <algorithm>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "plan/plan.h"

namespace keel::plan {
namespace {

std::string printf_string(const char* fmt, auto... args) {
  char buf[512];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return buf;
}

std::string chunk_text(const Plan& p) {
  if (!p.chunk_auto) return std::to_string(p.options.chunk);
  if (p.fits) return std::to_string(p.options.chunk) + " (auto)";
  // Refused under auto: every rung within the context was tried; the table is at the smallest
  // useful one, the chunk the advice is about.
  int64_t largest_tried = 1;
  for (int64_t rung : kChunkLadder)
    if (rung <= p.options.n_ctx && rung <= largest_auto_chunk(p.device, p.request))
      largest_tried = std::max(largest_tried, rung);
  return std::to_string(p.options.chunk) + " (auto: tried " + std::to_string(largest_tried) + " down to " +
         std::to_string(kChunkLadder.back()) + ", none fits)";
}

std::string kv_text(const Plan& p) {
  return std::string(runtime::kv_type_name(p.kv.type)) + ", " + std::to_string(p.kv.bytes_per_token()) +
         " B/token, pages of " + std::to_string(p.kv.page_tokens) + " tokens";
}

std::string model_line(const Plan& p) {
  const model::Hparams& hp = p.hp;
  std::string layers = std::to_string(hp.n_layer) + " layers";
  if (hp.n_recurrent_layers() > 0)
    layers += " (" + std::to_string(hp.n_attention_layers()) + " attention, " +
              std::to_string(hp.n_recurrent_layers()) + " recurrent)";
  return p.model_source + " [" + hp.arch + ", " + layers + ", vocab " + std::to_string(hp.n_vocab) + "]";
}

std::string device_line(const Plan& p) {
  return p.device.name + ": budget " + format_bytes(p.device.budget_bytes) + " (" + p.device.budget_source +
         "), largest buffer " + format_bytes(p.device.max_buffer_bytes);
}

// One line per category with what its bytes are made of.
std::string category_detail(const Plan& p, Category c) {
  size_t n = 0;
  for (const Buffer& b : p.buffers) n += b.category == c ? b.count : 0;
  switch (c) {
    case Category::weights: {
      const Buffer* largest = nullptr;
      for (const Buffer& b : p.buffers)
        if (b.category == c && (!largest || b.bytes > largest->bytes)) largest = &b;
      return std::to_string(n) + " tensors" +
             (largest ? ", largest " + largest->name + " " + format_bytes(largest->bytes) : "");
    }
    case Category::kv:
      return std::to_string(p.kv.n_layers) + " attention layers × " + std::to_string(p.kv.n_pages) + " pages of " +
             format_bytes(p.kv.page_bytes()) + " (" + std::to_string(p.kv.capacity_tokens()) + " tokens)";
    case Category::recurrent_state:
      if (p.options.state_snapshots > 0) {
        const uint64_t per_seq = p.bytes(c) / static_cast<uint64_t>(p.options.n_seqs + p.options.state_snapshots);
        return std::to_string(n) + " buffers: " + std::to_string(p.options.n_seqs) + " sequence slots and " +
               std::to_string(p.options.state_snapshots) + " prefix-cache snapshots of " + format_bytes(per_seq) + " each";
      }
      return std::to_string(n) + (n == 1 ? " buffer" : " buffers");
    default:
      return std::to_string(n) + (n == 1 ? " buffer" : " buffers");
  }
}

// Table lines: non-weight buffers, with per-layer buffers of equal size ("gdn_state.0",
// "gdn_state.1", ...) folded into one line "gdn_state.*: 48 × 3145728".
struct Line {
  std::string name;   // the first buffer's name; "stem.*" once a second one joins
  std::string stem;   // name without a trailing ".<layer>"
  uint64_t bytes;
  uint64_t count;
  Category category;
  const std::string* device;
};

std::string layer_stem(const std::string& name) {
  const size_t dot = name.find_last_of('.');
  if (dot == std::string::npos || dot + 1 == name.size()) return name;
  if (name.find_first_not_of("0123456789", dot + 1) != std::string::npos) return name;
  return name.substr(0, dot);
}

std::vector<Line> aggregate(const std::vector<Buffer>& buffers) {
  std::vector<Line> lines;
  for (const Buffer& b : buffers) {
    if (b.category == Category::weights) continue;
    const std::string stem = layer_stem(b.name);
    auto it = std::find_if(lines.begin(), lines.end(), [&](const Line& l) {
      return stem != b.name && l.stem == stem && l.bytes == b.bytes && l.category == b.category;
    });
    if (it == lines.end()) {
      lines.push_back({b.name, stem, b.bytes, b.count, b.category, &b.device});
    } else {
      it->count += b.count;
      it->name = stem + ".*";
    }
  }
  return lines;
}

}  // namespace

std::string format_plan(const Plan& p) {
  std::string out;
  out += "model    " + model_line(p) + "\n";
  out += "device   " + device_line(p) + "\n";
  if (!p.device.absent.empty()) out += "note     a plan only: no session can start here: " + p.device.absent + "\n";
  out += "session  context " + std::to_string(p.options.n_ctx) + ", chunk " + chunk_text(p) + ", KV " + kv_text(p) +
         ", " + std::to_string(runtime::resolve_threads(p.options.n_threads)) + " threads\n\n";

  out += printf_string("  %-16s %-24s %s\n", "category", "bytes", "made of");
  for (size_t i = 0; i < kCategoryCount; ++i) {
    const Category c = static_cast<Category>(i);
    out += printf_string("  %-16s %-24s %s\n", std::string(category_name(c)).c_str(),
                         format_bytes(p.bytes(c)).c_str(), category_detail(p, c).c_str());
  }
  const double used = 100.0 * static_cast<double>(p.total_bytes) / static_cast<double>(p.device.budget_bytes);
  out += printf_string("  %-16s %-24s %.1f%% of the budget\n\n", "total", format_bytes(p.total_bytes).c_str(), used);

  out += "buffers (weights aggregated, one line per kind)\n";
  uint64_t n_weights = 0;
  for (const Buffer& b : p.buffers) n_weights += b.category == Category::weights;
  if (n_weights > 0)
    out += printf_string("  %-40s %14llu  %s\n",
                         ("weights: " + std::to_string(n_weights) + " tensors").c_str(),
                         static_cast<unsigned long long>(p.bytes(Category::weights)),
                         p.buffers.front().device.c_str());
  for (const Line& l : aggregate(p.buffers)) {
    const std::string label = l.count > 1 ? l.name + ": " + std::to_string(l.count) + " × " + std::to_string(l.bytes)
                                          : l.name;
    out += printf_string("  %-40s %14llu  %s, %s\n", label.c_str(), static_cast<unsigned long long>(l.bytes * l.count),
                         std::string(category_name(l.category)).c_str(), l.device->c_str());
  }
  out += "  largest single buffer: " + p.largest_buffer + ", " + format_bytes(p.largest_buffer_bytes) + "\n\n";
  out += p.fits ? "verdict: fits (" + format_bytes(p.total_bytes) + " of " + format_bytes(p.device.budget_bytes) + ")\n"
                : "verdict: refused\n";
  if (p.fits && p.chunk_auto && p.options.chunk < smallest_auto_chunk(p.options.n_ctx))
    out += "note: only chunks of " + std::to_string(p.options.chunk) + " tokens fit, below the useful minimum of " +
           std::to_string(smallest_auto_chunk(p.options.n_ctx)) +
           " (each chunk reads all the weights): prefill will be slow; a smaller -c leaves room for larger chunks\n";
  return out;
}

std::string refusal_text(const Plan& p) {
  std::string out = "refused: " + p.model_source + " with a context of " + std::to_string(p.options.n_ctx) +
                    " tokens and " + std::string(runtime::kv_type_name(p.kv.type)) + " KV does not fit " +
                    p.device.name + "\n";
  for (const std::string& r : p.reasons) out += "  - " + r + "\n";
  out += "  needed:    ";
  for (size_t i = 0; i < kCategoryCount; ++i) {
    const Category c = static_cast<Category>(i);
    out += std::string(category_name(c)) + " " + format_bytes(p.bytes(c));
    if (c == Category::kv)
      out += " (" + std::to_string(p.kv.capacity_tokens()) + " tokens × " + std::to_string(p.kv.bytes_per_token()) +
             " B)";
    if (c == Category::activations) out += " (chunk " + std::to_string(p.options.chunk) + ")";
    out += ", ";
  }
  out += "total " + format_bytes(p.total_bytes) + "; largest buffer " + p.largest_buffer + " " +
         format_bytes(p.largest_buffer_bytes) + "\n";
  out += "  available: " + format_bytes(p.device.budget_bytes) + " for all categories together (" +
         p.device.budget_source + "), at most " + format_bytes(p.device.max_buffer_bytes) + " per buffer\n";
  if (p.max_context && p.max_useful_context) {
    const std::string kv = std::string(runtime::kv_type_name(p.kv.type)) + " KV";
    const std::string at_chunk = p.chunk_auto ? " and chunks of " + std::to_string(kMinUsefulChunk) + "+ tokens"
                                              : " and chunk " + std::to_string(p.options.chunk);
    out += *p.max_useful_context > 0 ? "  the largest context that fits with " + kv + at_chunk + ": " +
                                           std::to_string(*p.max_useful_context) + " tokens"
                                     : "  no context fits with " + kv + at_chunk;
    if (*p.max_context > *p.max_useful_context)
      out += " (" + std::to_string(*p.max_context) + " with smaller chunks, too slow a prefill to propose)";
    out += "\n";
  }
  bool any = false;
  for (const Suggestion& s : p.suggestions) {
    if (!any) out += "  what would fit (each re-planned):\n";
    any = true;
    if (s.verified)
      out += printf_string("    %-34s total %s, chunk %lld\n", s.options.c_str(), format_bytes(s.total_bytes).c_str(),
                           static_cast<long long>(s.chunk));
    else
      out += "    " + s.options + "\n";
  }
  if (!any) out += "  nothing found that fits: try a smaller model or a device with more memory\n";
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string to_json(const Plan& p) {
  using nlohmann::json;
  json j;
  j["fits"] = p.fits;
  j["model"] = {{"source", p.model_source},
                {"arch", p.hp.arch},
                {"n_layer", p.hp.n_layer},
                {"n_attention_layers", p.hp.n_attention_layers()},
                {"n_recurrent_layers", p.hp.n_recurrent_layers()},
                {"n_vocab", p.hp.n_vocab},
                {"n_ctx_train", p.hp.n_ctx_train}};
  j["device"] = {{"name", p.device.name},
                 {"memory", p.device.memory},
                 {"budget_bytes", p.device.budget_bytes},
                 {"max_buffer_bytes", p.device.max_buffer_bytes},
                 {"budget_source", p.device.budget_source}};
  j["ctx"] = p.options.n_ctx;
  j["chunk"] = p.options.chunk;
  j["chunk_auto"] = p.chunk_auto;
  j["min_useful_chunk"] = kMinUsefulChunk;  // suggestions never propose an auto chunk below it
  j["kv_type"] = std::string(runtime::kv_type_name(p.kv.type));
  j["kv"] = {{"bytes_per_token", p.kv.bytes_per_token()},
             {"page_tokens", p.kv.page_tokens},
             {"page_bytes", p.kv.page_bytes()},
             {"pages_per_layer", p.kv.n_pages},
             {"attention_layers", p.kv.n_layers},
             {"capacity_tokens", p.kv.capacity_tokens()}};
  j["threads"] = runtime::resolve_threads(p.options.n_threads);
  j["max_logit_rows"] = p.options.max_logit_rows;
  j["state_snapshots"] = p.options.state_snapshots;
  json cats = json::object();
  for (size_t i = 0; i < kCategoryCount; ++i) cats[std::string(category_name(static_cast<Category>(i)))] = p.category_bytes[i];
  j["bytes"] = cats;
  j["total_bytes"] = p.total_bytes;
  j["largest_buffer"] = {{"name", p.largest_buffer}, {"bytes", p.largest_buffer_bytes}};
  json buffers = json::array();
  for (const Buffer& b : p.buffers)
    buffers.push_back({{"name", b.name},
                       {"bytes", b.bytes},
                       {"count", b.count},
                       {"category", std::string(category_name(b.category))},
                       {"device", b.device}});
  j["buffers"] = buffers;
  j["reasons"] = p.reasons;
  j["max_context"] = p.max_context ? json(*p.max_context) : json(nullptr);
  j["max_useful_context"] = p.max_useful_context ? json(*p.max_useful_context) : json(nullptr);
  json sugg = json::array();
  for (const Suggestion& s : p.suggestions)
    sugg.push_back({{"options", s.options},
                    {"verified", s.verified},
                    {"total_bytes", s.verified ? json(s.total_bytes) : json(nullptr)},
                    {"chunk", s.verified ? json(s.chunk) : json(nullptr)}});
  j["suggestions"] = sugg;
  return j.dump(1);
}

}  // namespace keel::plan
