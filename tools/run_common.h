// Pieces shared by the commands that run a model (run, perplexity, bench): model and tokenizer
// loading, session options from flags, prompt input, Ctrl-C, the progress bar and stats line.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "model/model.h"
#include "plan/plan.h"
#include "runtime/session.h"
#include "tokenizer/tokenizer.h"

namespace keel::cli {

// -m, -c, -t, --chunk, --kv-type, --device, --budget, --max-buffer, --memory-report: the
// options every model-running command takes.
std::vector<Option> model_options();

struct LoadedModel {
  std::shared_ptr<const model::Model> model;
  tokenizer::Tokenizer tokenizer;
};
LoadedModel load_model(const Args& args);  // -m or the embedded default model

std::string read_text_file(const std::string& path);
std::vector<int32_t> read_ids_file(const std::string& path);
// Token ids from --ids-file, or -p / -f text tokenized (BOS unless --no-bos).
std::vector<int32_t> read_prompt_tokens(const Args& args, const tokenizer::Tokenizer& tok);

// --kv-type (default f16); a usage error names an unknown type.
runtime::KvType kv_type_flag(const Args& args);

// The memory plan for this command line: context from -c (or by default enough for the prompt
// plus generation, within the model's limit), chunk (N or auto), KV type, device profile.
// Refuses (keel::Error refused, with the numbers and the fix) before any weight is read.
// n_seqs: sequences held at once (keel serve's --parallel); state_snapshots: a hybrid model's
// recurrent-state snapshots (keel serve's --state-snapshots, plan::kAutoStateSnapshots: auto);
// max_auto_chunk: the largest chunk auto may take (0: the planner's rule).
plan::Plan plan_session(const Args& args, const model::Model& model, int64_t prompt_tokens,
                        bool logits_every_token = false, int n_seqs = 1, int64_t state_snapshots = 0,
                        int64_t max_auto_chunk = 0);

// --memory-report: planned bytes per category against what the session allocated and the
// process's measured peak resident memory.
void print_memory_report(const plan::Plan& plan, const runtime::Session& session);

// The measured side of that report: what the session allocated, the process's peak resident
// memory and, on a CUDA device, its memory in use (cudaMemGetInfo: the plan's plus the context).
struct MeasuredMemory {
  uint64_t session_allocated = 0, peak_rss = 0;
  uint64_t device_in_use = 0, device_total = 0;  // 0: not a CUDA device
  std::string gpu;
};
MeasuredMemory measure_memory(const plan::Plan& plan, const runtime::Session& session);
void print_measured_memory(const plan::Plan& plan, const MeasuredMemory& m);  // to stderr

// Installs SIGINT and SIGTERM handlers for its lifetime: the first signal asks to stop at the
// next chunk boundary (exit_code(): 130 or 143); a second one exits at once with 128 + its number.
class CancelGuard {
 public:
  CancelGuard();
  ~CancelGuard();
  bool requested() const;
  int exit_code() const;  // 130 after SIGINT (Ctrl-C), 143 after SIGTERM
};

class ProgressBar {
 public:
  explicit ProgressBar(bool enabled);  // draws only when stderr is a terminal
  void update(const runtime::ChunkProgress& p);
  void finish();

 private:
  bool enabled_;
  bool drawn_ = false;
};

struct RunStats {
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0;
  int64_t decode_tokens = 0;
  double decode_seconds = 0;
  int64_t chunk = 0;
  double prefill_tok_s() const { return prefill_seconds > 0 ? prompt_tokens / prefill_seconds : 0; }
  double decode_tok_s() const { return decode_seconds > 0 ? decode_tokens / decode_seconds : 0; }
};
void print_stats_line(const RunStats& s);

uint64_t peak_rss_bytes();  // VmHWM of this process

}  // namespace keel::cli
