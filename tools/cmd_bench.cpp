// `keel bench`: prefill and decode throughput in the manner of llama-bench. For each prompt size
// p and depth d: prefill d tokens (untimed), then time a prefill of p tokens; for n > 0, time n
// single-token decode steps after depth d. Random token ids (fixed seed), repeated -r times, after
// one untimed run of each test as llama-bench's warm-up (a prefill of p; two decode steps), which
// --no-warmup skips: first-use costs (kernel loading, library heuristics, the CUDA step graph:
// a step shape's first step runs eagerly and its second is captured, step_graphs.h) stay out of
// the mean.
// --parallel N: the decode test runs N sequences (each at depth d) decoding together, one token
// of each per forward call; it reports the aggregate and the per-sequence rate. Each row also has
// the arithmetic rate (TFLOP/s: count_flops) and, for decode, the weights' bytes a second; below
// the table (or in each JSON record), the memory the run used beside the plan. JSON records also
// hold each repetition's rate (samples_tok_s, in order, as llama-bench's samples_ts) and their
// standard deviation: a cost paid once per test shows as a first sample below the rest (with
// --no-warmup, CUDA decode captures its step graph in the first repetition).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "embedded/default_model.h"
#include "keel/error.h"
#include "plan/plan.h"
#include "run_common.h"

namespace keel::cli {
namespace {

std::vector<int64_t> parse_list(const std::string& s, const std::string& flag) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      long long v = std::stoll(item, &used);
      if (used != item.size() || v < 0) throw std::invalid_argument(item);
      out.push_back(v);
    } catch (const std::exception&) {
      throw Error("keel bench: " + flag + " expects a comma-separated list of non-negative integers, got '" + s + "'",
                  ErrorKind::usage);
    }
  }
  return out;
}

std::vector<int32_t> random_tokens(int64_t n, int32_t n_vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(3, n_vocab - 1);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = dist(rng);
  return ids;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// The arithmetic behind the TFLOP/s column: each 2-D weight but the token embedding and the output
// head is a multiply-add per element a token (Qwen3.5's depthwise convolution the same count), the
// head one a logits row, and causal attention's two products (Q Kᵀ and P V) one a (query, key,
// dim) in every attention layer, a token seeing the keys before it and its own. Not counted:
// norms, RoPE, activations and Qwen3.5's delta rule.
struct FlopCount {
  double per_token = 0, per_logit_row = 0, per_key = 0;
  // n tokens at positions depth .. depth + n - 1 with `rows` logits rows.
  double flops(int64_t n, int64_t depth, int64_t rows) const {
    const double nd = static_cast<double>(n), keys = nd * static_cast<double>(depth) + nd * (nd + 1) / 2;
    return nd * per_token + static_cast<double>(rows) * per_logit_row + keys * per_key;
  }
};

FlopCount count_flops(const model::Model& model, const backend::WorkloadShape& shape) {
  FlopCount f;
  for (const auto& t : model.file().tensors())
    if (t.n_dims >= 2 && t.name != "token_embd.weight" && t.name != "output.weight")
      f.per_token += 2.0 * static_cast<double>(t.n_elements());
  f.per_logit_row = 2.0 * static_cast<double>(model.hparams().n_vocab) * static_cast<double>(model.hparams().n_embd);
  f.per_key = 4.0 * shape.kv.n_layers * shape.n_head * static_cast<double>(shape.kv.head_dim);
  return f;
}

}  // namespace

int cmd_bench(const CommandArgs& argv) {
  Args args("bench", "Measure prefill and decode throughput (tok/s) like llama-bench.",
            {
                {{"-m", "--model"}, "FILE", "GGUF model (default: the embedded stories260K)"},
                {{"-p", "--n-prompt"}, "LIST", "prompt sizes to prefill, comma-separated (default 512)"},
                {{"-n", "--n-gen"}, "N", "tokens to decode (default 64; 0 = no decode test)"},
                {{"-d", "--n-depth"}, "LIST", "context depths before each test (default 0)"},
                {{"-t", "--threads"}, "N", "threads (default: all cores)"},
                {{"--chunk"}, "N|auto", "prefill chunk size (default auto: the largest that fits the plan)"},
                {{"--kv-type"}, "TYPE", "KV cache type: f16 (default), q8_0, f32"},
                {{"--exact"}, "", "f32 activations in every matmul (default: 8-bit activations for quantized weights)"},
                {{"--device"}, "NAME", "where to run: auto (default: cuda when there is a GPU, else cpu), cpu, cuda, cuda:N"},
                {{"--budget"}, "BYTES", "memory budget override"},
                {{"--max-buffer"}, "BYTES", "largest single buffer override"},
                {{"-np", "--parallel"}, "N", "sequences decoding together in the decode test (default 1)"},
                {{"-r", "--repetitions"}, "N", "repetitions of each test, the mean is reported (default 3)"},
                {{"--no-warmup"}, "", "skip the untimed run before each test"},
                {{"--json"}, "", "print a JSON array of measurements"},
            });
  if (!args.parse(argv)) return 0;
  auto model = model::Model::load(args.get_or("-m", std::string(embedded::kDefaultModelName)));
  const auto prompts = parse_list(args.get_or("-p", "512"), "-p");
  const auto depths = parse_list(args.get_or("-d", "0"), "-d");
  const int64_t n_gen = args.get_int("-n", 64);
  const int64_t reps = std::max<int64_t>(1, args.get_int("-r", 3));
  const int64_t warmups = args.has("--no-warmup") ? 0 : 1;
  const int64_t n_par = args.get_int("--parallel", 1);
  if (n_par < 1) throw Error("keel bench: --parallel must be at least 1", ErrorKind::usage);
  const int32_t n_vocab = static_cast<int32_t>(model->hparams().n_vocab);
  const double weight_gb = static_cast<double>(model->file().tensor_bytes()) / 1e9;
  const std::string name = model->file().get_string("general.name").value_or(model->hparams().arch);
  const std::string ftype = [&] {
    std::string t;
    for (const auto& ti : model->file().tensors())
      if (ti.n_dims >= 2 && t.find(quant::type_name(ti.type)) == std::string::npos)
        t.append(t.empty() ? "" : "+").append(quant::type_name(ti.type));
    return t;
  }();

  int64_t max_ctx = 0;
  for (int64_t d : depths)
    for (int64_t p : prompts) max_ctx = std::max(max_ctx, d + std::max(p, n_gen) + 1);
  if (max_ctx > static_cast<int64_t>(model->hparams().n_ctx_train))
    throw Error("keel bench: depth + prompt = " + std::to_string(max_ctx) + " tokens exceeds the model's context of " +
                std::to_string(model->hparams().n_ctx_train));
  plan::PlanRequest req;
  int64_t max_depth = 0;
  for (int64_t d : depths) max_depth = std::max(max_depth, d);
  req.n_ctx = std::max(max_ctx, n_par * (max_depth + n_gen + 1));  // the pool holds every sequence
  req.n_seqs = static_cast<int>(n_par);
  req.chunk = plan::parse_chunk(args.get_or("--chunk", "auto"));
  req.n_threads = static_cast<int>(args.get_int("-t", 0));
  req.kv_type = kv_type_flag(args);
  req.exact = args.has("--exact");
  req.device = plan::device_from_flags(args.get("--device"), args.get("--budget"), args.get("--max-buffer"));
  plan::require_present(*req.device);
  const plan::Plan plan = plan::plan_for_model(*model, req);
  plan::check_fits(plan);
  runtime::Session session(model, plan.options);

  nlohmann::json results = nlohmann::json::array();
  const bool json = args.has("--json");
  const FlopCount flop = count_flops(*model, session.layout().workload);
  if (!json)
    std::printf("| %-20s | %-12s | %9s | %7s | %5s | %14s | %16s | %9s | %9s |\n", "model", "type", "size GB", "threads",
                "chunk", "test", n_par > 1 ? "t/s (all seqs)" : "t/s", "TFLOP/s", "GB/s");
  // One test's row from its repetitions' rates: their mean (± the sample standard deviation).
  auto report = [&](const std::string& test, int64_t n_prompt, int64_t n_decode, int64_t depth,
                    const std::vector<double>& rates) {
    double mean = 0, sd = 0;
    for (double x : rates) mean += x / static_cast<double>(rates.size());
    for (double x : rates) sd += (x - mean) * (x - mean);
    sd = rates.size() > 1 ? std::sqrt(sd / static_cast<double>(rates.size() - 1)) : 0.0;
    // A prefill: one logits row; a decode step: one a token, n_par sequences alike. The decode
    // test starts after one token at depth 0 (below), so its first step is at position 1.
    const int64_t tokens = n_prompt ? n_prompt : n_decode * n_par;
    const double flops = n_prompt ? flop.flops(n_prompt, depth, 1)
                                  : static_cast<double>(n_par) * flop.flops(n_decode, std::max<int64_t>(depth, 1), n_decode);
    const double tflop_s = flops * mean / static_cast<double>(tokens) / 1e12;
    nlohmann::json m = {{"model", name}, {"type", ftype}, {"n_prompt", n_prompt ? nlohmann::json(n_prompt) : nlohmann::json()},
                        {"n_gen", n_decode ? nlohmann::json(n_decode) : nlohmann::json()}, {"depth", depth},
                        {"threads", session.layout().shape.n_threads}, {"chunk", session.layout().shape.chunk},
                        {"repetitions", reps}, {"parallel", n_decode ? n_par : 1},
                        {"prefill_tok_s", n_prompt ? nlohmann::json(mean) : nlohmann::json()},
                        {"decode_tok_s", n_decode ? nlohmann::json(mean) : nlohmann::json()},
                        {"decode_tok_s_per_seq", n_decode ? nlohmann::json(mean / static_cast<double>(n_par)) : nlohmann::json()},
                        {"weights_gb_s", n_decode ? nlohmann::json(mean * weight_gb / static_cast<double>(n_par)) : nlohmann::json()},
                        {"stddev_tok_s", sd}, {"samples_tok_s", rates}, {"tflop_s", tflop_s}};
    results.push_back(m);
    if (!json)
      std::printf("| %-20s | %-12s | %9.3f | %7d | %5lld | %14s | %9.2f ± %5.2f | %9.3f | %9s |\n", name.substr(0, 20).c_str(),
                  ftype.substr(0, 12).c_str(), weight_gb, session.layout().shape.n_threads,
                  static_cast<long long>(session.layout().shape.chunk), test.c_str(), mean, sd, tflop_s,
                  n_decode ? std::to_string(static_cast<int>(mean * weight_gb / n_par * 10) / 10.0).substr(0, 6).c_str() : "");
    std::fflush(stdout);
  };

  for (int64_t depth : depths) {
    const auto fill = random_tokens(depth, n_vocab, 7);
    const std::string at = depth ? " @ d" + std::to_string(depth) : "";
    for (int64_t p : prompts) {
      if (p == 0) continue;
      const auto prompt = random_tokens(p, n_vocab, 11);
      std::vector<double> rates;
      for (int64_t r = -warmups; r < reps; ++r) {
        session.reset();
        if (depth) session.prefill(fill);
        auto t = std::chrono::steady_clock::now();
        session.prefill(prompt);
        if (r >= 0) rates.push_back(static_cast<double>(p) / seconds_since(t));
      }
      report("pp" + std::to_string(p) + at, p, 0, depth, rates);
    }
    if (n_gen > 0) {
      const auto gen = random_tokens(n_gen, n_vocab, 13);
      std::vector<int32_t> seqs = {0};
      for (int64_t s = 1; s < n_par; ++s) seqs.push_back(session.add_sequence());
      std::vector<runtime::SeqInput> inputs(seqs.size());
      std::vector<double> rates;
      for (int64_t r = -warmups; r < reps; ++r) {
        for (int32_t s : seqs) {
          session.reset_sequence(s);
          const std::vector<int32_t> start = depth ? fill : std::vector<int32_t>{gen[0]};
          // The last chunk asks for logits: reading them waits for the whole fill, so the timer
          // below starts on an idle device (a GPU runs steps without logits asynchronously).
          const auto chunk = static_cast<size_t>(session.layout().shape.chunk);
          for (size_t done = 0; done < start.size(); done += chunk) {
            const size_t n = std::min(start.size() - done, chunk);
            const runtime::SeqInput in{s, std::span<const int32_t>(start).subspan(done, n), done + n == start.size()};
            session.step(std::span<const runtime::SeqInput>(&in, 1));
          }
        }
        auto t = std::chrono::steady_clock::now();
        const int64_t steps = r < 0 ? std::min<int64_t>(2, n_gen) : n_gen;
        for (int64_t i = 0; i < steps; ++i) {
          for (size_t s = 0; s < seqs.size(); ++s)
            inputs[s] = {seqs[s], std::span<const int32_t>(&gen[static_cast<size_t>(i)], 1), true};
          session.step(inputs);
        }
        if (r >= 0) rates.push_back(static_cast<double>(n_gen * n_par) / seconds_since(t));
      }
      for (size_t s = 1; s < seqs.size(); ++s) session.remove_sequence(seqs[s]);
      report("tg" + std::to_string(n_gen) + (n_par > 1 ? " x" + std::to_string(n_par) : "") + at, 0, n_gen, depth, rates);
    }
  }
  // Every byte was allocated at session start (the plan), so what is in use now is the peak.
  const MeasuredMemory mem = measure_memory(plan, session);
  if (json) {
    for (auto& m : results) {
      m["plan_bytes"] = plan.total_bytes;
      m["session_allocated_bytes"] = mem.session_allocated;
      m["peak_rss_bytes"] = mem.peak_rss;
      m["device_in_use_bytes"] = mem.device_total ? nlohmann::json(mem.device_in_use) : nlohmann::json();
    }
    std::cout << results.dump(1) << "\n";
  } else {
    print_measured_memory(plan, mem);
  }
  return 0;
}

}  // namespace keel::cli
