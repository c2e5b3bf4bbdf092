// `keel serve`: an OpenAI-compatible HTTP server (src/server) over the BatchingEngine: -np N
// requests are decoded together (continuous batching over one session planned for N sequences),
// up to --queue more wait, and beyond that requests get 503. Finished requests' KV pages serve
// later requests that start with the same tokens (prefix cache), and with --prompt-cache-dir
// whole prefixes are kept on disk as well.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "args.h"
#include "embedded/default_model.h"
#include "chat_template.h"
#include "commands.h"
#include "keel/error.h"
#include "run_common.h"
#include "server/http_server.h"
#include "server/batching_engine.h"

namespace keel::cli {

namespace {

int64_t state_snapshots_flag(const Args& args) {
  if (args.has("--no-prefix-cache")) return 0;
  const std::string value = args.get_or("--state-snapshots", "auto");
  if (value == "auto") return plan::kAutoStateSnapshots;
  const int64_t n = args.get_int("--state-snapshots", 0);
  if (n < 0 || n > 100000) throw Error("keel serve: --state-snapshots must be auto or 0..100000", ErrorKind::usage);
  return n;
}

}  // namespace

int cmd_serve(const CommandArgs& argv) {
  std::vector<Option> options = model_options();
  for (Option o : std::vector<Option>{
           {{"--host"}, "ADDR", "address to listen on (default 127.0.0.1)"},
           {{"--port"}, "N", "port (default 8080; 0 picks a free one)"},
           {{"-np", "--parallel"}, "N", "requests decoded together, sharing the context's KV pages (default 1)"},
           {{"--queue"}, "N", "requests that may wait for a sequence or pages (default 64); more get 503"},
           {{"--chat-template"}, "FILE", "a Jinja chat template instead of the model's tokenizer.chat_template"},
           {{"-a", "--alias"}, "NAME", "the model's name in the API (default: the model file's name); requests naming another model get 404"},
           {{"--max-body"}, "BYTES", "largest request body accepted (default 33554432); larger gets 413"},
           {{"--no-prefix-cache"}, "", "do not keep finished requests' KV pages for later requests with the same prefix"},
           {{"--prompt-cache-dir"}, "DIR", "also keep finished requests' prefixes as files in DIR (one directory per model), reloaded by later requests and after a restart"},
           {{"--kv-page-tokens"}, "N", "tokens per KV page (default: the planner's, 256 for long contexts); the prefix cache reuses whole pages, so smaller pages reuse more of a shared prefix"},
           {{"--prompt-cache-max-mb"}, "N", "disk space --prompt-cache-dir may use, least recently used files removed first (default 4096)"},
           {{"--state-snapshots"}, "N|auto", "hybrid models: recurrent-state snapshots planned for the prefix cache, the points a cached prefix resumes from (default auto: one per chunk of the context plus three per sequence, within half the free memory; 0: no prefix sharing in memory)"},
       })
    options.push_back(o);
  Args args("serve", "Serve a GGUF model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions).",
            options);
  if (!args.parse(argv)) return 0;
  if (!args.positionals().empty())
    throw Error("keel serve: unexpected argument '" + args.positionals()[0] + "'", ErrorKind::usage);
  const int64_t port = args.get_int("--port", 8080);
  if (port < 0 || port > 65535) throw Error("keel serve: --port must be 0..65535", ErrorKind::usage);
  const int64_t parallel = args.get_int("--parallel", 1);
  if (parallel < 1 || parallel > 1024) throw Error("keel serve: --parallel must be 1..1024", ErrorKind::usage);
  const int64_t queue = args.get_int("--queue", 64);
  if (queue < 0 || queue > 1000000) throw Error("keel serve: --queue must be 0..1000000", ErrorKind::usage);

  LoadedModel lm = load_model(args);
  const gguf::File& file = lm.model->file();
  std::optional<std::string> chat_template;
  if (args.has("--chat-template") || file.get_string("tokenizer.chat_template"))
    chat_template = chat_template_source(args.get("--chat-template"), &file);
  else
    std::fprintf(stderr, "keel serve: warning: the model has no chat template; /v1/chat/completions will answer 400 "
                         "(give one with --chat-template FILE)\n");

  // Plan for prompts as long as the context (so --chunk auto is not sized for a short prompt):
  // -c when given, else 4096 tokens within the model's training context.
  const int64_t train = lm.model->hparams().n_ctx_train > 0 ? lm.model->hparams().n_ctx_train : 4096;
  const int64_t longest_prompt = args.get_int("-c", 0) > 0 ? args.get_int("-c", 0) : std::min<int64_t>(train, 4096);
  // Auto chunks stay at 4096 tokens whatever the device: a hybrid model's prefix cache resumes
  // from chunk boundaries, and a longer prefill piece would hold up other requests longer.
  const plan::Plan plan = plan_session(args, *lm.model, longest_prompt, false, static_cast<int>(parallel),
                                       state_snapshots_flag(args), /*max_auto_chunk=*/4096);
  std::string id = args.get_or("-m", "default");
  if (id == "default") id = "stories260K";  // the embedded model
  if (size_t slash = id.find_last_of('/'); slash != std::string::npos) id = id.substr(slash + 1);
  if (args.has("--alias")) id = args.get_or("--alias", id);
  server::PrefixCacheOptions cache;
  cache.memory = !args.has("--no-prefix-cache");
  cache.disk_dir = args.get_or("--prompt-cache-dir", "");
  const int64_t cache_mb = args.get_int("--prompt-cache-max-mb", 4096);
  if (cache_mb < 0) throw Error("keel serve: --prompt-cache-max-mb must be 0 or more", ErrorKind::usage);
  cache.disk_max_bytes = static_cast<uint64_t>(cache_mb) << 20;
  server::BatchingEngine engine(lm.model, lm.tokenizer, plan.options, chat_template, special_tokens(file), id,
                                static_cast<int>(queue), cache);

  server::ServerOptions so;
  so.host = args.get_or("--host", "127.0.0.1");
  so.port = static_cast<int>(port);
  so.max_body_bytes = static_cast<size_t>(args.get_int("--max-body", int64_t(32) << 20));
  so.threads = static_cast<size_t>(parallel + queue + 4);  // + a few for /health, /metrics and 503s
  server::HttpServer http(engine, so);
  const int bound = http.bind();
  // Ctrl-C or SIGTERM: running requests end with an error, the server stops, exit 130 / 143 (a
  // second signal exits at once). Caught from before the line that says the server listens: a
  // signal sent on reading it would otherwise find the default action, or, in a background job of
  // a script (SIGINT ignored there until a handler is set), be lost, and the server would serve on.
  CancelGuard cancel;
  std::fprintf(stderr, "keel serve: listening on http://%s:%d (model %s, context %lld tokens, %lld parallel)\n",
               so.host.c_str(), bound, id.c_str(), static_cast<long long>(engine.info().n_ctx),
               static_cast<long long>(parallel));
  std::fflush(stderr);
  std::atomic<bool> served{false};
  std::thread watcher([&] {
    while (!served.load() && !cancel.requested()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!cancel.requested()) return;
    engine.stop();
    http.stop();
  });
  http.run();
  served = true;
  watcher.join();
  if (!cancel.requested()) return 0;
  std::fprintf(stderr, "keel serve: stopped\n");
  return cancel.exit_code();
}

}  // namespace keel::cli
