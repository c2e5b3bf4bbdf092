// The HTTP layer: request validation and SSE framing as units, then a real server over loopback
// (stories260K behind the BatchingEngine, 4 sequences) driven with cpp-httplib's client: greedy
// completions equal `keel run --temp 0`, also for several concurrent streams batched together,
// streaming equals non-streaming, and malformed JSON, wrong types, unknown fields, oversize
// bodies, wrong methods, unknown routes and prompts that cannot fit get the right status and an
// OpenAI error object; a cancelled request's KV pages come back (/metrics); a full queue is 503.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/wait.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <future>
#include <thread>

#include "model/model.h"
#include "server/api.h"
#include "server/http_server.h"
#include "server/request_json.h"
#include "server/stop_scanner.h"
#include "server/batching_engine.h"
#include "template/chat.h"
#include "test_paths.h"

using namespace keel;
using server::json;

TEST(ServerApi, ParsesAndValidatesRequests) {
  server::ApiRequest r = server::parse_request(
      R"({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 7, "temperature": 0,
          "stop": ["x", "y"], "stream": true, "stream_options": {"include_usage": true}, "some_future_field": {"a": 1}})",
      true);
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_EQ(r.sampling.temperature, 0.0f);
  EXPECT_EQ(r.stop.size(), 2u);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(server::parse_request(R"({"prompt": "abc"})", false).prompt, "abc");

  struct Bad {
    const char* body;
    bool chat;
    const char* param;
  };
  for (const Bad& b : std::vector<Bad>{{"{not json", true, ""},
                                       {"[1, 2]", true, ""},
                                       {R"({"prompt": "x"})", true, "messages"},
                                       {R"({"messages": "hi"})", true, "messages"},
                                       {R"({"messages": [{"content": "hi"}]})", true, "messages[0].role"},
                                       {R"({"messages": [{"role": "user", "content": 5}]})", true, "messages[0].content"},
                                       {R"({"prompt": 5})", false, "prompt"},
                                       {R"({"prompt": "x", "max_tokens": "10"})", false, "max_tokens"},
                                       {R"({"prompt": "x", "max_tokens": 1.5})", false, "max_tokens"},
                                       {R"({"prompt": "x", "temperature": "hot"})", false, "temperature"},
                                       {R"({"prompt": "x", "temperature": 3})", false, "temperature"},
                                       {R"({"prompt": "x", "stream": "yes"})", false, "stream"},
                                       {R"({"prompt": "x", "stop": [1]})", false, "stop"},
                                       {R"({"prompt": "x", "n": 2})", false, "n"},
                                       {R"({"prompt": "x", "stream_options": {"include_usage": true}})", false, "stream_options"}}) {
    SCOPED_TRACE(b.body);
    try {
      server::parse_request(b.body, b.chat);
      ADD_FAILURE() << "accepted";
    } catch (const server::ApiError& e) {
      EXPECT_EQ(e.status, 400);
      EXPECT_EQ(e.param, b.param);
    }
  }
}

// Found by fuzz/server_request.cpp. A body nested a million levels deep (2 MB, under the 32 MB
// limit) was accepted and then copied recursively: a stack overflow that took the server down.
TEST(ServerApi, DeeplyNestedBodiesAreRefused) {
  const std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
  for (const auto& [body, chat] : std::vector<std::pair<std::string, bool>>{
           {R"({"messages": [{"role": "user", "content": "hi", "extra": )" + deep + "}]}", true},
           {R"({"prompt": "x", "extra": )" + deep + "}", false}}) {
    try {
      server::parse_request(body, chat);
      ADD_FAILURE() << "accepted";
    } catch (const server::ApiError& e) {
      EXPECT_EQ(e.status, 400);
      EXPECT_NE(std::string(e.what()).find("levels deep"), std::string::npos) << e.what();
    }
  }
  // A tool's JSON schema a few dozen levels deep is fine.
  std::string schema = R"({"type": "string"})";
  for (int i = 0; i < 25; ++i) schema = R"({"type": "object", "properties": {"x": )" + schema + "}}";
  EXPECT_NO_THROW(server::parse_request(R"({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function",
      "function": {"name": "f", "parameters": )" + schema + "}}]}",
                                        true));
}

// nlohmann's ordered_json parser searches an object's keys before adding each one: a 1 MB body
// holding one object of 100k keys took a minute of a request thread. And rendering it for the chat
// template (Dict::set scanned too) took as long again.
TEST(ServerApi, LargeObjectsParseAndRenderInLinearTime) {
  std::string keys;
  for (int i = 0; i < 100000; ++i) keys += (i ? ", \"k" : "\"k") + std::to_string(i) + "\": " + std::to_string(i);
  const std::string body = R"({"messages": [{"role": "user", "content": "hi", "meta": {)" + keys + "}}]}";
  const auto t0 = std::chrono::steady_clock::now();
  const server::ApiRequest r = server::parse_request(body, true);
  ASSERT_EQ(r.messages[0]["meta"].size(), 100000u);
  EXPECT_EQ(r.messages[0]["meta"].begin().key(), "k0");  // order kept
  const tmpl::Template chat("{% for m in messages %}{{ m.meta|length }} {{ m.meta.k99999 }}{% endfor %}");
  EXPECT_EQ(server::chat_prompt_text(chat, json::object(), r.messages, nullptr, tmpl::parse_date("2025-01-31")),
            "100000 99999");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 20.0);
  // Otherwise the same document as nlohmann's parser: a repeated key keeps its first place and its
  // last value.
  for (const char* text : {R"({"k": 1, "j": [2, {"x": null}], "k": {"y": 3.5}})", R"([1, "a", true, -2, 18446744073709551615])",
                           R"("s")", "{}", "[[], {}]"})
    EXPECT_EQ(server::parse_request_json(text).dump(), json::parse(text).dump()) << text;
  for (const char* text : {"", "{", R"({"a" 1})", "[1,]", "\"\xff\"", "1 2"}) {
    SCOPED_TRACE(text);
    EXPECT_THROW(server::parse_request_json(text), server::ApiError);
  }
}

// Integer fields given as floats were converted to int64 before any check: undefined behaviour
// for 1e300 (UBSan), and a silently wrapped value in a release build.
TEST(ServerApi, IntegerFieldsCheckFloatsBeforeConverting) {
  EXPECT_EQ(server::parse_request(R"({"prompt": "x", "max_tokens": 5.0})", false).max_tokens, 5);
  EXPECT_EQ(server::parse_request(R"({"prompt": "x", "seed": -9223372036854775808.0})", false).sampling.seed,
            uint64_t(INT64_MIN));
  // Beyond int64: clamped to its ends, then checked against the field's range.
  EXPECT_EQ(server::parse_request(R"({"prompt": "x", "seed": 1e300})", false).sampling.seed, uint64_t(INT64_MAX));
  EXPECT_EQ(server::parse_request(R"({"prompt": "x", "seed": 18446744073709551615})", false).sampling.seed,
            uint64_t(INT64_MAX));
  for (const char* body : {R"({"prompt": "x", "max_tokens": 1e300})", R"({"prompt": "x", "max_tokens": -1e300})",
                           R"({"prompt": "x", "top_k": 2.5})", R"({"prompt": "x", "top_k": 1e19})",
                           R"({"prompt": "x", "n": 1e300})", R"({"prompt": "x", "logprobs": -1e300})"}) {
    SCOPED_TRACE(body);
    try {
      server::parse_request(body, false);
      ADD_FAILURE() << "accepted";
    } catch (const server::ApiError& e) {
      EXPECT_EQ(e.status, 400);
    }
  }
}

TEST(ServerApi, SseFramingAndStopStrings) {
  EXPECT_EQ(server::sse_data(json{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_EQ(server::sse_done(), "data: [DONE]\n\n");
  EXPECT_EQ(server::sse_progress({3, 10, 0.5}).rfind(": prefill ", 0), 0u);  // an SSE comment
  json err = server::error_body(413, "too big");
  EXPECT_EQ(err["error"]["message"], "too big");
  EXPECT_EQ(err["error"]["type"], "invalid_request_error");
  EXPECT_TRUE(err["error"]["param"].is_null());

  server::StopScanner s({"END", "##"});
  std::string out = s.push("hello E");
  out += s.push("N");
  EXPECT_FALSE(s.stopped());
  out += s.push("D tail");
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(out, "hello ");
  server::StopScanner t({"xyz"});
  std::string o2 = t.push("abx");
  EXPECT_EQ(o2, "ab");  // "x" may start "xyz": held back
  o2 += t.push("y!");
  o2 += t.flush();
  EXPECT_FALSE(t.stopped());
  EXPECT_EQ(o2, "abxy!");
}

namespace {

// stories260K with a 256-token context in 16-token pages (16 + n_seqs - 1 of them), 32-token chunks.
std::unique_ptr<server::BatchingEngine> make_engine(int n_seqs, int queue) {
  auto model = model::Model::load(test::shared("models/stories260K.gguf"));
  runtime::SessionOptions so;
  so.n_ctx = 256;
  so.chunk = 32;
  so.n_seqs = n_seqs;
  so.page_tokens = 16;
  so.n_threads = 1;
  return std::make_unique<server::BatchingEngine>(
      model, tokenizer::Tokenizer::from_gguf(model->file()), so,
      std::string("{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
                  "{% if add_generation_prompt %}[assistant]{% endif %}"),
      json::object(), "stories260K", queue);
}

// Waits (bounded) until the engine's counters satisfy `done`: the outcome is tested, not the time.
template <class Pred>
bool eventually(const server::Engine& e, Pred done) {
  for (int i = 0; i < 2000 && !done(e.stats()); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return done(e.stats());
}

class LiveServer : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    engine_ = make_engine(4, 8).release();
    server::ServerOptions opts;
    opts.port = 0;
    opts.max_body_bytes = 64 * 1024;
    http_ = new server::HttpServer(*engine_, opts);
    port_ = http_->bind();
    thread_ = new std::thread([] { http_->run(); });
  }
  static void TearDownTestSuite() {
    http_->stop();
    thread_->join();
    delete thread_;
    delete http_;
    delete engine_;
  }
  static httplib::Client client() {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    return c;
  }
  static httplib::Result post(const std::string& path, const std::string& body) {
    return client().Post(path.c_str(), body, "application/json");
  }
  static void expect_error(const httplib::Result& r, int status) {
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, status) << r->body;
    json j = json::parse(r->body);
    EXPECT_TRUE(j["error"]["message"].is_string()) << r->body;
    EXPECT_TRUE(j["error"]["type"].is_string()) << r->body;
  }

  static server::BatchingEngine* engine_;
  static server::HttpServer* http_;
  static std::thread* thread_;
  static int port_;
};

server::BatchingEngine* LiveServer::engine_ = nullptr;
server::HttpServer* LiveServer::http_ = nullptr;
std::thread* LiveServer::thread_ = nullptr;
int LiveServer::port_ = 0;

std::string keel_run_text(const std::string& args) {
  std::string cmd = test::keel_binary() + " " + args + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  pclose(p);
  return out;
}

// The concatenated text (and the last non-empty finish_reason) of an SSE stream.
std::string stream_text(const std::string& body, bool chat, std::string* finish, json* usage, bool* done) {
  std::string text;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    size_t end = body.find("\n\n", pos);
    std::string payload = body.substr(pos + 6, end - pos - 6);
    pos = end;
    if (payload == "[DONE]") {
      *done = true;
      continue;
    }
    json j = json::parse(payload);
    if (j.contains("usage") && !j["usage"].is_null()) *usage = j["usage"];
    for (const json& c : j["choices"]) {
      if (chat && c["delta"].contains("content")) text += c["delta"]["content"].get<std::string>();
      if (!chat) text += c["text"].get<std::string>();
      if (!c["finish_reason"].is_null()) *finish = c["finish_reason"];
    }
  }
  return text;
}

}  // namespace

TEST_F(LiveServer, HealthAndModels) {
  auto h = client().Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  auto m = client().Get("/v1/models");
  ASSERT_TRUE(m);
  EXPECT_EQ(json::parse(m->body)["data"][0]["id"], "stories260K");
}

TEST_F(LiveServer, GreedyCompletionEqualsKeelRun) {
  const std::string prompt = "Once upon a time";
  auto r = post("/v1/completions", json{{"prompt", prompt}, {"max_tokens", 24}, {"temperature", 0}}.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 24);
  const std::string text = j["choices"][0]["text"];
  EXPECT_EQ(text + "\n", keel_run_text("run --temp 0 -n 24 -p '" + prompt + "'"));

  // The same request streamed: the same text, a finish_reason, usage on request, then [DONE].
  auto s = post("/v1/completions", json{{"prompt", prompt}, {"max_tokens", 24}, {"temperature", 0}, {"stream", true},
                                        {"stream_options", {{"include_usage", true}}}}.dump());
  ASSERT_TRUE(s);
  ASSERT_EQ(s->status, 200);
  EXPECT_NE(s->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  std::string finish;
  json usage;
  bool done = false;
  EXPECT_EQ(stream_text(s->body, false, &finish, &usage, &done), text);
  EXPECT_EQ(finish, "length");
  EXPECT_EQ(usage["completion_tokens"], 24);
  EXPECT_TRUE(done);
  EXPECT_NE(s->body.find(": prefill {"), std::string::npos);  // progress at chunk boundaries
}

TEST_F(LiveServer, ChatCompletionsAndStop) {
  json body = {{"messages", {{{"role", "user"}, {"content", "Tell me a story."}}}}, {"max_tokens", 16}, {"temperature", 0},
               {"unknown_field", "ignored"}};
  auto r = post("/v1/chat/completions", body.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  const std::string text = j["choices"][0]["message"]["content"];
  ASSERT_GE(text.size(), 4u);

  body["stream"] = true;
  auto s = post("/v1/chat/completions", body.dump());
  ASSERT_TRUE(s);
  std::string finish;
  json usage;
  bool done = false;
  EXPECT_EQ(stream_text(s->body, true, &finish, &usage, &done), text);
  EXPECT_TRUE(done);

  // A stop string cuts the text before it and finishes with "stop".
  body["stream"] = false;
  body["stop"] = text.substr(2, 2);
  auto st = post("/v1/chat/completions", body.dump());
  ASSERT_TRUE(st);
  json sj = json::parse(st->body);
  EXPECT_EQ(sj["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(sj["choices"][0]["message"]["content"], text.substr(0, 2));
}

TEST_F(LiveServer, BadRequestsGetOpenAIErrors) {
  expect_error(post("/v1/chat/completions", "{\"messages\": [oops"), 400);
  expect_error(post("/v1/chat/completions", R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": "5"})"), 400);
  expect_error(post("/v1/completions", R"({"prompt": "x", "temperature": "warm"})"), 400);
  expect_error(post("/v1/completions", "{\"prompt\": \"" + std::string(100 * 1024, 'a') + "\"}"), 413);
  expect_error(client().Get("/v1/chat/completions"), 405);
  expect_error(client().Post("/v1/models", "{}", "application/json"), 405);
  expect_error(client().Get("/v1/nothing"), 404);
  // A prompt + max_tokens the context can never hold: 400 with the numbers, before any work.
  auto r = post("/v1/completions", R"({"prompt": "Once upon a time", "max_tokens": 100000})");
  expect_error(r, 400);
  EXPECT_NE(r->body.find("256"), std::string::npos) << r->body;
  EXPECT_EQ(json::parse(r->body)["error"]["param"], "max_tokens");
}

TEST_F(LiveServer, ClientDisconnectCancelsAndTheServerCarriesOn) {
  // The client hangs up after the first bytes of a long stream; the engine stops at its next
  // chunk or token and the next request is served normally.
  httplib::Client c = client();
  size_t received = 0;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.headers.emplace("Content-Type", "application/json");
  req.body = json{{"prompt", "Once upon a time"}, {"max_tokens", 200}, {"temperature", 0}, {"stream", true}}.dump();
  req.content_receiver = [&](const char*, size_t n, uint64_t, uint64_t) {
    received += n;
    return false;  // hang up
  };
  auto r = c.send(req);
  EXPECT_GT(received, 0u);
  auto next = post("/v1/completions", json{{"prompt", "Once upon a time"}, {"max_tokens", 4}, {"temperature", 0}}.dump());
  ASSERT_TRUE(next);
  EXPECT_EQ(next->status, 200);
  EXPECT_EQ(json::parse(next->body)["usage"]["completion_tokens"], 4);
}

TEST_F(LiveServer, DisconnectedStreamsPagesComeBack) {
  // The client hangs up at the first progress event of a 4-chunk prompt; its pages come back.
  const int64_t total_before = engine_->stats().requests_total;
  std::string prompt;
  for (int i = 0; i < 25; ++i) prompt += "Once upon a time ";
  httplib::Client c = client();
  size_t received = 0;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.headers.emplace("Content-Type", "application/json");
  req.body = json{{"prompt", prompt}, {"max_tokens", 8}, {"temperature", 0}, {"stream", true}}.dump();
  req.content_receiver = [&](const char*, size_t n, uint64_t, uint64_t) {
    received += n;
    return false;
  };
  c.send(req);
  EXPECT_GT(received, 0u);
  EXPECT_EQ(engine_->stats().requests_total, total_before + 1);  // it was generated, not refused
  ASSERT_TRUE(eventually(*engine_, [](const server::EngineStats& s) { return s.requests_running == 0; }));
  auto m = client().Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("\nkeel_kv_pages_used 0\n"), std::string::npos) << m->body;
}

TEST_F(LiveServer, CancelMidPrefillReturnsPages) {
  // A 200-token prompt is 7 chunks; the client cancels at the first chunk boundary.
  server::GenerationRequest g;
  for (int i = 0; i < 200; ++i) g.prompt.push_back(2 + (i * 37) % 250);
  g.max_tokens = 16;
  g.sampling.temperature = 0;
  int progress_events = 0;
  server::GenerationCallbacks cb;
  cb.on_progress = [&](const server::PrefillProgress& p) {
    ++progress_events;
    EXPECT_EQ(p.total, 200);
    EXPECT_EQ(p.done, 32);
    return false;
  };
  const int64_t prompt_before = engine_->stats().prompt_tokens_total;
  server::GenerationResult r = engine_->generate(g, cb);
  EXPECT_EQ(r.finish, server::FinishReason::cancelled);
  EXPECT_EQ(progress_events, 1);
  ASSERT_TRUE(eventually(*engine_, [](const server::EngineStats& s) { return s.requests_running == 0; }));
  const server::EngineStats s = engine_->stats();
  EXPECT_EQ(s.kv_pages_used, 0);
  EXPECT_EQ(s.kv_pages_total, 16 + 3);
  EXPECT_LT(s.prompt_tokens_total - prompt_before, 200);  // stopped before the end of the prompt
}

TEST_F(LiveServer, ConcurrentGreedyStreamsEqualKeelRunAlone) {
  // Batch invariance: each stream, decoded beside the others, is exactly its prompt run alone.
  const std::vector<std::string> prompts = {"Once upon a time", "The little dog", "Lily went to the park",
                                            "One day, a bird", "Tom had a big red ball", "The sun"};
  std::vector<std::string> texts(prompts.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < prompts.size(); ++i)
    clients.emplace_back([&, i] {
      auto s = post("/v1/completions", json{{"prompt", prompts[i]}, {"max_tokens", 20}, {"temperature", 0},
                                            {"stream", true}}.dump());
      std::string finish;
      json usage;
      bool done = false;
      if (s && s->status == 200) texts[i] = stream_text(s->body, false, &finish, &usage, &done);
      if (!done) texts[i] = "(no [DONE])";
    });
  for (auto& t : clients) t.join();
  for (size_t i = 0; i < prompts.size(); ++i) {
    SCOPED_TRACE(prompts[i]);
    EXPECT_EQ(texts[i] + "\n", keel_run_text("run --temp 0 -n 20 -p '" + prompts[i] + "'"));
  }
}

TEST_F(LiveServer, AStalledClientDoesNotStallOthers) {
  // A's client takes no events (its callback blocks); A pauses holding its sequence while B, on
  // another, runs to the end with the text it has alone. Then A finishes with its own text.
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  server::GenerationRequest g;
  g.prompt = engine_->tokenize("Once upon a time");
  g.max_tokens = 100;
  g.sampling.temperature = 0;
  std::string a_text, b_text;
  server::GenerationCallbacks stalled;
  stalled.on_text = [&](const std::string& t) {
    released.wait();
    a_text += t;
    return true;
  };
  auto a = std::async(std::launch::async, [&] { return engine_->generate(g, stalled); });
  server::GenerationCallbacks normal;
  normal.on_text = [&](const std::string& t) {
    b_text += t;
    return true;
  };
  auto b = std::async(std::launch::async, [&] { return engine_->generate(g, normal); });
  ASSERT_EQ(b.wait_for(std::chrono::seconds(30)), std::future_status::ready);  // never, were B stalled by A
  EXPECT_EQ(a.wait_for(std::chrono::seconds(0)), std::future_status::timeout);  // A still waits for its client
  release.set_value();
  const server::GenerationResult ra = a.get(), rb = b.get();
  EXPECT_EQ(a_text, b_text);
  EXPECT_EQ(ra.completion_tokens, rb.completion_tokens);
  EXPECT_GT(rb.completion_tokens, 40);  // more than A's client could have fallen behind before pausing
}

TEST_F(LiveServer, MetricsArePrometheusText) {
  auto m = client().Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 200);
  EXPECT_EQ(m->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0), 0u);
  // Every sample line is "name value", after the HELP and TYPE lines of that name.
  size_t samples = 0;
  std::string typed;
  size_t pos = 0;
  while (pos < m->body.size()) {
    const size_t end = m->body.find('\n', pos);
    ASSERT_NE(end, std::string::npos);
    const std::string line = m->body.substr(pos, end - pos);
    pos = end + 1;
    if (line.rfind("# HELP ", 0) == 0) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      typed = line.substr(7, line.find(' ', 7) - 7);
      continue;
    }
    const size_t space = line.find(' ');
    ASSERT_NE(space, std::string::npos) << line;
    EXPECT_EQ(line.substr(0, space), typed) << line;
    size_t used = 0;
    std::stod(line.substr(space + 1), &used);
    EXPECT_EQ(used, line.size() - space - 1) << line;
    ++samples;
  }
  EXPECT_EQ(samples, 12u);
  for (const char* name : {"keel_requests_total ", "keel_requests_running 0\n", "keel_requests_queued 0\n",
                           "keel_prompt_tokens_total ", "keel_generated_tokens_total ", "keel_prefill_tokens_per_second ",
                           "keel_decode_tokens_per_second ", "keel_kv_pages_used ", "keel_kv_pages_total 19\n",
                           "keel_sequences 4\n", "keel_queue_capacity 8\n"})
    EXPECT_NE(m->body.find(std::string("\n") + name), std::string::npos) << name;
}

TEST(BatchingServer, FullQueueAnswers503WithRetryAfter) {
  // One sequence, one queue place. A's client stops taking its events, so A pauses holding the
  // sequence; B waits in the queue; C finds the queue full and gets 503.
  auto engine = make_engine(1, 1);
  server::ServerOptions opts;
  opts.port = 0;
  server::HttpServer http(*engine, opts);
  const int port = http.bind();
  std::thread serving([&] { http.run(); });

  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  server::GenerationRequest g;
  g.prompt = {1, 403, 407, 300, 201};
  g.max_tokens = 200;
  g.sampling.temperature = 0;
  server::GenerationCallbacks blocked;
  blocked.on_progress = [&](const server::PrefillProgress&) {
    released.wait();
    return true;
  };
  auto a = std::async(std::launch::async, [&] { return engine->generate(g, blocked); });
  ASSERT_TRUE(eventually(*engine, [](const server::EngineStats& s) { return s.requests_running == 1; }));
  auto b = std::async(std::launch::async, [&] { return engine->generate(g, {}); });
  ASSERT_TRUE(eventually(*engine, [](const server::EngineStats& s) { return s.requests_queued == 1; }));

  httplib::Client c("127.0.0.1", port);
  auto r = c.Post("/v1/completions", R"({"prompt": "Once upon a time", "max_tokens": 4})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503) << r->body;
  EXPECT_EQ(r->get_header_value("Retry-After"), "1");
  EXPECT_TRUE(json::parse(r->body)["error"]["message"].is_string());
  EXPECT_EQ(engine->stats().requests_rejected, 1);
  EXPECT_EQ(engine->stats().requests_running, 1);  // A paused, not finished

  release.set_value();
  const server::GenerationResult ra = a.get(), rb = b.get();
  EXPECT_EQ(ra.completion_tokens, rb.completion_tokens);  // the same greedy request twice
  EXPECT_NE(rb.finish, server::FinishReason::cancelled);
  auto after = c.Post("/v1/completions", R"({"prompt": "Once upon a time", "max_tokens": 4})", "application/json");
  ASSERT_TRUE(after);
  EXPECT_EQ(after->status, 200) << after->body;
  http.stop();
  serving.join();
}
