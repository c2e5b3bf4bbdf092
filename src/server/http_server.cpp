#include "server/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <thread>

#include "keel/error.h"
#include "server/api.h"

namespace keel::server {

namespace {

void send_error(httplib::Response& res, int status, const std::string& message, const std::string& param = "",
                const std::string& type = "", const std::string& code = "") {
  res.status = status;
  res.set_content(error_body(status, message, param, type, code).dump(), "application/json");
}

// Request bodies are checked by the caller; this answers "the prompt cannot fit" before any work.
void check_fits(const ApiRequest& r, int64_t prompt_tokens, int64_t n_ctx) {
  const int64_t wanted = prompt_tokens + std::max<int64_t>(r.max_tokens, 0);
  if (prompt_tokens == 0) throw ApiError(400, "the prompt is empty", r.chat ? "messages" : "prompt");
  if (prompt_tokens >= n_ctx || wanted > n_ctx)
    throw ApiError(400,
                   "the prompt has " + std::to_string(prompt_tokens) + " tokens" +
                       (r.max_tokens > 0 ? " and max_tokens asks for " + std::to_string(r.max_tokens) + " more" : "") +
                       ", but the server's context holds " + std::to_string(n_ctx) +
                       " tokens; shorten the prompt, lower max_tokens, or restart the server with a larger -c",
                   r.max_tokens > 0 && prompt_tokens < n_ctx ? "max_tokens" : (r.chat ? "messages" : "prompt"));
}

}  // namespace

HttpServer::HttpServer(Engine& engine, ServerOptions options)
    : engine_(engine), options_(std::move(options)), http_(std::make_unique<httplib::Server>()) {
  http_->set_payload_max_length(options_.max_body_bytes);
  // SO_REUSEADDR to listen again right after a stop, but not httplib's SO_REUSEPORT, with which a
  // second server on the same port would silently share the connections. The socket is kept to
  // raise httplib's listen backlog of 5 (compiled into Debian's library) after bind().
  http_->set_socket_options([this](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    listen_socket_ = sock;
  });
  const size_t threads = std::max<size_t>(options_.threads, 2);
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  install_routes();
}

HttpServer::~HttpServer() { stop(); }

int HttpServer::bind() {
  int port = options_.port == 0 ? http_->bind_to_any_port(options_.host)
                                : (http_->bind_to_port(options_.host, options_.port) ? options_.port : -1);
  if (port < 0)
    throw Error("keel serve: cannot listen on " + options_.host + ":" + std::to_string(options_.port) +
                " (address in use or not available; try another --port)");
  // A backlog of 5 drops connections when many clients connect at once (the kernel then loses
  // the handshake's last ACK and the client's read fails); listen() again raises it.
  if (listen_socket_ >= 0) ::listen(listen_socket_, SOMAXCONN);
  return port;
}

void HttpServer::run() {
  run_entered_ = true;
  if (!stop_requested_) http_->listen_after_bind();
  run_finished_ = true;
}

// A stop() that came before httplib's listen loop set its running flag would be lost, and run()
// would serve forever (seen once as a test's teardown hanging in accept()). Both flags are
// sequentially consistent: either run() sees the request and never listens, or stop() sees run()
// entered and waits for the loop to be running (or over) before stopping it.
void HttpServer::stop() {
  stop_requested_ = true;
  if (!http_ || !run_entered_) return;
  while (!http_->is_running() && !run_finished_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  http_->stop();
}

void HttpServer::install_routes() {
  httplib::Server& s = *http_;

  s.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"status":"ok"})", "application/json");
  });

  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(engine_.stats()), "text/plain; version=0.0.4; charset=utf-8");
  });

  s.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    const ModelInfo& info = engine_.info();
    json model = {{"id", info.id}, {"object", "model"}, {"created", 0}, {"owned_by", "keel"},
                  {"meta", {{"n_ctx", info.n_ctx}, {"chat_template", info.has_chat_template}}}};
    res.set_content(json{{"object", "list"}, {"data", json::array({model})}}.dump(), "application/json");
  });

  for (const bool chat : {true, false}) {
    const std::string path = chat ? "/v1/chat/completions" : "/v1/completions";
    s.Post(path, [this, chat](const httplib::Request& req, httplib::Response& res) {
      ApiRequest r;
      std::vector<int32_t> prompt;
      try {
        r = parse_request(req.body, chat);
        // Another model's name is an error, as with OpenAI and vLLM (no name: this one).
        if (!r.model.empty() && r.model != engine_.info().id)
          throw ApiError(404, "the model '" + r.model + "' does not exist: this server serves '" + engine_.info().id + "'",
                         "model", "invalid_request_error", "model_not_found");
        try {
          prompt = chat ? engine_.chat_prompt(r.messages, r.tools) : engine_.tokenize(r.prompt);
        } catch (const Error& e) {
          throw ApiError(400, std::string("cannot build the prompt: ") + e.what(), chat ? "messages" : "prompt");
        }
        check_fits(r, static_cast<int64_t>(prompt.size()), engine_.info().n_ctx);
      } catch (const ApiError& e) {
        send_error(res, e.status, e.what(), e.param, e.type, e.code);
        return;
      }
      GenerationRequest g;
      g.prompt = std::move(prompt);
      g.max_tokens = r.max_tokens;
      g.sampling = r.sampling;
      g.stop = r.stop;
      g.logprobs = r.logprobs;
      g.top_logprobs = r.top_logprobs;
      try {
        g.place = engine_.take_place();  // before any response: a full queue still answers 503
      } catch (const Overloaded& e) {
        res.set_header("Retry-After", std::to_string(e.retry_after_seconds));
        send_error(res, 503, e.what());
        return;
      }
      const std::string id = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id_++);
      const int64_t created = static_cast<int64_t>(std::time(nullptr));
      const std::string model = engine_.info().id;

      if (!r.stream) {
        std::string text;
        std::vector<TokenLogprobs> logprobs;
        GenerationCallbacks cb;
        cb.on_text = [&text](const std::string& t) {
          text += t;
          return true;
        };
        cb.on_logprobs = [&logprobs](std::span<const TokenLogprobs> t) {
          logprobs.insert(logprobs.end(), t.begin(), t.end());
          return true;
        };
        GenerationResult result = engine_.generate(g, cb);
        res.set_content(completion_response(r, id, created, model, text, result, logprobs)
                            .dump(-1, ' ', false, json::error_handler_t::replace),
                        "application/json");
        return;
      }

      // Streaming: the generation runs inside the content provider, on this connection's thread;
      // a failed write (client gone) cancels it at the next chunk boundary or token.
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(
          "text/event-stream", [this, r, g, id, created, model](size_t, httplib::DataSink& sink) {
            bool alive = true, first = true;
            auto write = [&](const std::string& s) {
              if (alive) alive = sink.write(s.data(), s.size());
              return alive;
            };
            std::vector<TokenLogprobs> logprobs;  // the tokens behind the next text
            int64_t text_offset = 0;
            GenerationCallbacks cb;
            cb.on_progress = [&](const PrefillProgress& p) { return write(sse_progress(p)); };
            cb.on_logprobs = [&](std::span<const TokenLogprobs> t) {
              logprobs.assign(t.begin(), t.end());
              return true;
            };
            cb.on_text = [&](const std::string& t) {
              bool ok = write(sse_data(stream_chunk(r, id, created, model, t, std::nullopt, first, logprobs, &text_offset)));
              logprobs.clear();
              first = false;
              return ok;
            };
            GenerationResult result;
            try {
              result = engine_.generate(g, cb);
            } catch (const std::exception& e) {
              write(sse_data(error_body(500, e.what())));
              write(sse_done());
              sink.done();
              return alive;
            }
            if (!alive || result.finish == FinishReason::cancelled) return false;
            if (first) write(sse_data(stream_chunk(r, id, created, model, std::string(), std::nullopt, true)));
            write(sse_data(stream_chunk(r, id, created, model, std::nullopt, result.finish, false)));
            if (r.include_usage) write(sse_data(usage_chunk(r, id, created, model, result)));
            write(sse_done());
            if (alive) sink.done();
            return alive;
          });
    });
  }

  // Known routes with the wrong method: 405 with Allow.
  auto method_not_allowed = [](const char* allow) {
    return [allow](const httplib::Request& req, httplib::Response& res) {
      res.set_header("Allow", allow);
      send_error(res, 405, "method " + req.method + " is not allowed on " + req.path + " (use " + allow + ")");
    };
  };
  for (const char* path : {"/v1/chat/completions", "/v1/completions"}) {
    s.Get(path, method_not_allowed("POST"));
    s.Put(path, method_not_allowed("POST"));
    s.Delete(path, method_not_allowed("POST"));
    s.Patch(path, method_not_allowed("POST"));
  }
  for (const char* path : {"/v1/models", "/health", "/metrics"}) {
    s.Post(path, method_not_allowed("GET"));
    s.Put(path, method_not_allowed("GET"));
    s.Delete(path, method_not_allowed("GET"));
    s.Patch(path, method_not_allowed("GET"));
  }

  // Statuses httplib sets itself (404 no route, 413 body too large, 400 unparsable request)
  // get an OpenAI error body.
  s.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404) send_error(res, 404, "no route " + req.method + " " + req.path);
    else if (res.status == 413)
      send_error(res, 413, "the request body is larger than the server's limit of " + std::to_string(options_.max_body_bytes) + " bytes");
    else send_error(res, res.status, "request failed with HTTP status " + std::to_string(res.status));
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, 500, what);
  });
}

}  // namespace keel::server
