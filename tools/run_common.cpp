#include "run_common.h"

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "embedded/default_model.h"
#ifdef KEEL_HAS_CUDA
#include "backend/cuda/device_info.h"
#endif
#include "keel/error.h"

namespace keel::cli {
namespace {
std::atomic<int> g_interrupts{0};  // the CLI process's Ctrl-C count (signal handlers need a global)
std::atomic<int> g_first_signal{0};

extern "C" void on_sigint(int sig) {
  if (g_interrupts.fetch_add(1) >= 1) _exit(128 + sig);
  g_first_signal = sig;
}
}  // namespace

std::vector<Option> model_options() {
  return {
      {{"-m", "--model"}, "FILE", "GGUF model (default: the embedded stories260K)"},
      {{"-c", "--ctx-size"}, "N", "context size in tokens (default: prompt + generation, within the model's limit)"},
      {{"-t", "--threads"}, "N", "threads (default: all cores)"},
      {{"--chunk"}, "N|auto", "prefill chunk size in tokens (default auto: the largest that fits the plan)"},
      {{"--kv-type"}, "TYPE", "KV cache element type: f16 (default), q8_0, f32"},
      {{"--exact"}, "", "f32 activations in every matmul (default: 8-bit activations for quantized weights)"},
      {{"--device"}, "NAME", "where to run: auto (default: cuda when there is a GPU, else cpu), cpu, cuda, cuda:N, or an Apple profile to plan for (see keel plan --help)"},
      {{"--budget"}, "BYTES", "memory budget override, e.g. 24GiB"},
      {{"--max-buffer"}, "BYTES", "largest single buffer override, e.g. 1GiB"},
      {{"--memory-report"}, "", "print the plan and the measured peak memory at the end"},
  };
}

LoadedModel load_model(const Args& args) {
  std::string path = args.get_or("-m", std::string(embedded::kDefaultModelName));
  auto model = model::Model::load(path);
  return {model, tokenizer::Tokenizer::from_gguf(model->file())};
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<int32_t> read_ids_file(const std::string& path) {
  std::istringstream in(read_text_file(path));
  std::vector<int32_t> ids;
  std::string word;
  while (in >> word) {
    try {
      size_t used = 0;
      long long v = std::stoll(word, &used);
      if (used != word.size() || v < 0 || v > INT32_MAX) throw std::invalid_argument(word);
      ids.push_back(static_cast<int32_t>(v));
    } catch (const std::exception&) {
      throw Error(path + ": '" + word + "' is not a token id");
    }
  }
  return ids;
}

std::vector<int32_t> read_prompt_tokens(const Args& args, const tokenizer::Tokenizer& tok) {
  int sources = args.has("-p") + args.has("-f") + args.has("--ids-file");
  if (sources > 1) throw Error("give only one of -p, -f and --ids-file", ErrorKind::usage);
  std::vector<int32_t> ids;
  if (auto path = args.get("--ids-file")) {
    ids = read_ids_file(*path);
    for (int32_t id : ids)
      if (id >= tok.n_vocab())
        throw Error(*path + ": token id " + std::to_string(id) + " is outside the vocabulary (" +
                    std::to_string(tok.n_vocab()) + " tokens)");
    return ids;
  }
  std::string text = args.has("-f") ? read_text_file(*args.get("-f")) : args.get_or("-p", "");
  const bool bos = tok.add_bos_by_default() && !args.has("--no-bos");
  return tok.encode(text, bos, /*parse_special=*/false);
}

runtime::KvType kv_type_flag(const Args& args) {
  const std::string name = args.get_or("--kv-type", "f16");
  auto t = runtime::kv_type_from_name(name);
  if (!t) throw Error("unknown --kv-type '" + name + "' (use f16, q8_0 or f32)", ErrorKind::usage);
  return *t;
}

plan::Plan plan_session(const Args& args, const model::Model& model, int64_t prompt_tokens, bool logits_every_token,
                        int n_seqs, int64_t state_snapshots, int64_t max_auto_chunk) {
  plan::PlanRequest req;
  req.max_auto_chunk = max_auto_chunk;
  req.n_seqs = n_seqs;
  req.state_snapshots = state_snapshots;
  const int64_t train = model.hparams().n_ctx_train > 0 ? model.hparams().n_ctx_train : 4096;
  if (args.has("-c")) {
    req.n_ctx = args.get_int("-c", 0);
    if (req.n_ctx <= 0) req.n_ctx = train;  // llama.cpp: 0 = the model's context
  } else {
    const int64_t n_predict = args.get_int("-n", -1);
    req.n_ctx = std::min(train, std::max<int64_t>(prompt_tokens + (n_predict >= 0 ? n_predict : 512), 4096));
    req.n_ctx = std::max(req.n_ctx, prompt_tokens);
  }
  if (req.n_ctx > train)
    throw Error("context " + std::to_string(req.n_ctx) + " exceeds the model's training context of " +
                std::to_string(train) + " tokens" + (prompt_tokens > train ? " (the prompt has " + std::to_string(prompt_tokens) + " tokens)" : ""));
  if (prompt_tokens > req.n_ctx)
    throw Error("the prompt has " + std::to_string(prompt_tokens) + " tokens but the context holds " +
                std::to_string(req.n_ctx) + "; raise -c (the model supports " + std::to_string(train) + ")");
  req.n_threads = static_cast<int>(args.get_int("-t", 0));
  req.chunk = plan::parse_chunk(args.get_or("--chunk", "auto"));
  req.kv_type = kv_type_flag(args);
  if (args.has("--kv-page-tokens")) {  // (keel serve's: prefix reuse shares whole pages)
    const int64_t page = args.get_int("--kv-page-tokens", 0);
    if (page < 1 || page > 4096) throw Error("--kv-page-tokens must be 1..4096", ErrorKind::usage);
    req.page_tokens = static_cast<uint32_t>(page);
  }
  req.exact = args.has("--exact");
  req.logits_every_token = logits_every_token;
  req.device = plan::device_from_flags(args.get("--device"), args.get("--budget"), args.get("--max-buffer"));
  plan::require_present(*req.device);
  plan::Plan p = plan::plan_for_model(model, req);
  // auto never needs a chunk much longer than the prompt: take the smallest rung that holds it.
  if (!req.chunk && p.fits && !logits_every_token) {
    int64_t rung = plan::kChunkLadder.front();
    for (int64_t r : plan::kChunkLadder)
      if (r >= prompt_tokens) rung = r;
    if (rung < p.options.chunk) {
      req.chunk = rung;
      p = plan::plan_for_model(model, req);
      p.chunk_auto = true;
    }
  }
  plan::check_fits(p);
  return p;
}

void print_memory_report(const plan::Plan& plan, const runtime::Session& session) {
  std::fprintf(stderr, "%s", plan::format_plan(plan).c_str());
  print_measured_memory(plan, measure_memory(plan, session));
}

MeasuredMemory measure_memory(const plan::Plan& plan, const runtime::Session& session) {
  MeasuredMemory m;
  m.session_allocated = session.allocated_bytes();
  m.peak_rss = peak_rss_bytes();
#ifdef KEEL_HAS_CUDA
  uint64_t free_bytes = 0, total_bytes = 0;
  if (plan.device.backend == backend::Device::cuda &&
      cuda::device_memory(plan.device.ordinal, free_bytes, total_bytes, m.gpu)) {
    m.device_in_use = total_bytes - free_bytes;
    m.device_total = total_bytes;
  }
#endif
  return m;
}

void print_measured_memory(const plan::Plan& plan, const MeasuredMemory& m) {
  std::fprintf(stderr, "measured: session allocated %s (planned %s); peak resident memory %s (plan total %s)\n",
               plan::format_bytes(m.session_allocated).c_str(), plan::format_bytes(plan.session_bytes()).c_str(),
               plan::format_bytes(m.peak_rss).c_str(), plan::format_bytes(plan.total_bytes).c_str());
#ifdef KEEL_HAS_CUDA
  if (m.device_total)
    std::fprintf(stderr, "measured: %s (%s) has %s in use of %s (cudaMemGetInfo; the plan's %s plus the context, for which it reserves %s)\n",
                 plan.device.name.c_str(), m.gpu.c_str(), plan::format_bytes(m.device_in_use).c_str(),
                 plan::format_bytes(m.device_total).c_str(), plan::format_bytes(plan.total_bytes).c_str(),
                 plan::format_bytes(cuda::kContextReserveBytes).c_str());
#endif
}

CancelGuard::CancelGuard() {
  g_interrupts = 0;
  g_first_signal = 0;
  std::signal(SIGINT, on_sigint);
  std::signal(SIGTERM, on_sigint);
}
CancelGuard::~CancelGuard() {
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
}
bool CancelGuard::requested() const { return g_interrupts.load() > 0; }
int CancelGuard::exit_code() const { return g_first_signal.load() == SIGTERM ? 143 : 130; }

ProgressBar::ProgressBar(bool enabled) : enabled_(enabled && isatty(STDERR_FILENO)) {}

void ProgressBar::update(const runtime::ChunkProgress& p) {
  if (!enabled_ || p.total <= 0) return;
  const double frac = static_cast<double>(p.done) / static_cast<double>(p.total);
  const double rate = p.seconds > 0 ? p.done / p.seconds : 0;
  const double eta = rate > 0 ? (p.total - p.done) / rate : 0;
  const int width = 30, filled = static_cast<int>(frac * width);
  std::fprintf(stderr, "\rprefill [%.*s%*s] %lld/%lld tokens  %.1f tok/s  ETA %.0fs ", filled,
               "##############################", width - filled, "", static_cast<long long>(p.done),
               static_cast<long long>(p.total), rate, eta);
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::finish() {
  if (drawn_) std::fprintf(stderr, "\r\033[K");
  drawn_ = false;
}

void print_stats_line(const RunStats& s) {
  std::fprintf(stderr, "keel: prompt %lld tokens, prefill %.1f tok/s, decode %lld tokens at %.1f tok/s (chunk %lld)\n",
               static_cast<long long>(s.prompt_tokens), s.prefill_tok_s(), static_cast<long long>(s.decode_tokens),
               s.decode_tok_s(), static_cast<long long>(s.chunk));
}

uint64_t peak_rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

}  // namespace keel::cli
