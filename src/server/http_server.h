// The HTTP layer of `keel serve` (cpp-httplib): OpenAI-compatible routes over an Engine.
//   POST /v1/chat/completions, POST /v1/completions  (JSON, or SSE when "stream": true)
//   GET  /v1/models, GET /health, GET /metrics (Prometheus text)
// Errors are OpenAI error objects: 400 bad request (named parameter), 404 unknown route,
// 405 wrong method, 413 body above the limit, 500 engine failure, 503 (with Retry-After) when
// the engine's queue is full.
#pragma once
#include <atomic>
#include <cstddef>
#include <memory>
#include <string>

#include "server/engine.h"

namespace httplib {
class Server;
}

namespace keel::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                          // 0: any free port (see HttpServer::bind)
  size_t max_body_bytes = 32u << 20;        // larger request bodies get 413
  // Connections served at once: each waiting or generating request holds one, so this should
  // exceed --parallel + --queue (or the engine's queue never fills and clients wait unseen).
  size_t threads = 16;
};

class HttpServer {
 public:
  HttpServer(Engine& engine, ServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int bind();   // binds host:port and returns the port; throws keel::Error when it cannot
  void run();   // serves until stop(); call after bind()
  void stop();  // any time, from any thread: run() returns (at once if it has not begun listening)

 private:
  void install_routes();
  Engine& engine_;
  ServerOptions options_;
  std::unique_ptr<httplib::Server> http_;
  std::atomic<uint64_t> next_id_{1};
  int listen_socket_ = -1;  // the listening socket, as httplib created it
  // httplib's stop() does nothing until its listen loop has begun, so stop() and run() meet here.
  std::atomic<bool> stop_requested_{false}, run_entered_{false}, run_finished_{false};
};

}  // namespace keel::server
