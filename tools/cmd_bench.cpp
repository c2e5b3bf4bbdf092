// `keel bench`: prefill and decode throughput in the manner of llama-bench. For each prompt size
// p and depth d: prefill d tokens (untimed), then time a prefill of p tokens; for n > 0, time n
// single-token decode steps after depth d. Random token ids (fixed seed), repeated -r times, after
// one untimed run of each test as llama-bench's warm-up (a prefill of p; one decode step), which
// --no-warmup skips: first-use costs (kernel loading, library heuristics) stay out of the mean.
// --parallel N: the decode test runs N sequences (each at depth d) decoding together, one token
// of each per forward call; it reports the aggregate and the per-sequence rate.
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
  if (!json)
    std::printf("| %-20s | %-12s | %9s | %7s | %5s | %14s | %16s | %9s |\n", "model", "type", "size GB", "threads",
                "chunk", "test", n_par > 1 ? "t/s (all seqs)" : "t/s", "GB/s");
  auto report = [&](const std::string& test, int64_t n_prompt, int64_t n_decode, int64_t depth, double mean, double sd) {
    nlohmann::json m = {{"model", name}, {"type", ftype}, {"n_prompt", n_prompt ? nlohmann::json(n_prompt) : nlohmann::json()},
                        {"n_gen", n_decode ? nlohmann::json(n_decode) : nlohmann::json()}, {"depth", depth},
                        {"threads", session.layout().shape.n_threads}, {"chunk", session.layout().shape.chunk},
                        {"repetitions", reps}, {"parallel", n_decode ? n_par : 1},
                        {"prefill_tok_s", n_prompt ? nlohmann::json(mean) : nlohmann::json()},
                        {"decode_tok_s", n_decode ? nlohmann::json(mean) : nlohmann::json()},
                        {"decode_tok_s_per_seq", n_decode ? nlohmann::json(mean / static_cast<double>(n_par)) : nlohmann::json()},
                        {"weights_gb_s", n_decode ? nlohmann::json(mean * weight_gb / static_cast<double>(n_par)) : nlohmann::json()}};
    results.push_back(m);
    if (!json)
      std::printf("| %-20s | %-12s | %9.3f | %7d | %5lld | %14s | %9.2f ± %5.2f | %9s |\n", name.substr(0, 20).c_str(),
                  ftype.substr(0, 12).c_str(), weight_gb, session.layout().shape.n_threads,
                  static_cast<long long>(session.layout().shape.chunk), test.c_str(), mean, sd,
                  n_decode ? std::to_string(static_cast<int>(mean * weight_gb / n_par * 10) / 10.0).substr(0, 6).c_str() : "");
    std::fflush(stdout);
  };
  auto stats = [](const std::vector<double>& v, double* mean, double* sd) {
    double s = 0, s2 = 0;
    for (double x : v) s += x;
    *mean = s / static_cast<double>(v.size());
    for (double x : v) s2 += (x - *mean) * (x - *mean);
    *sd = v.size() > 1 ? std::sqrt(s2 / static_cast<double>(v.size() - 1)) : 0.0;
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
      double mean, sd;
      stats(rates, &mean, &sd);
      report("pp" + std::to_string(p) + at, p, 0, depth, mean, sd);
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
        const int64_t steps = r < 0 ? 1 : n_gen;
        for (int64_t i = 0; i < steps; ++i) {
          for (size_t s = 0; s < seqs.size(); ++s)
            inputs[s] = {seqs[s], std::span<const int32_t>(&gen[static_cast<size_t>(i)], 1), true};
          session.step(inputs);
        }
        if (r >= 0) rates.push_back(static_cast<double>(n_gen * n_par) / seconds_since(t));
      }
      for (size_t s = 1; s < seqs.size(); ++s) session.remove_sequence(seqs[s]);
      double mean, sd;
      stats(rates, &mean, &sd);
      report("tg" + std::to_string(n_gen) + (n_par > 1 ? " x" + std::to_string(n_par) : "") + at, 0, n_gen, depth, mean, sd);
    }
  }
  if (json) std::cout << results.dump(1) << "\n";
  return 0;
}

}  // namespace keel::cli
