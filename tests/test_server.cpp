// The HTTP layer: request validation and SSE framing as units, then a real server over loopback
// (stories260K behind the BatchingEngine, 4 sequences) driven with cpp-httplib's client: greedy
// completions equal `keel run --temp 0`, also for several concurrent streams batched together,
// streaming equals non-streaming, and malformed JSON, wrong types, unknown fields, oversize
// bodies, wrong methods, unknown routes and prompts that cannot fit get the right status and an
// OpenAI error object; a cancelled request's KV pages come back (/metrics); a full queue is 503.
// Requests without max_tokens are admitted by what their prompt needs, run to the end of the
// context ("length") beside each other, and one preempted when the pool runs short replays to
// exactly the text it would have had alone. Penalties and seeds give `keel run`'s text; logprobs
// come in OpenAI's chat and legacy completion shapes, streamed and not.
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

// stop() is never lost, whenever it comes: before run() starts, or while run() is starting (the
// race once seen as a teardown hanging in accept()). A lost stop hangs the test (ctest's timeout).
TEST(HttpServerStop, StopBeforeOrWhileRunStartsEndsRun) {
  auto engine = make_engine(1, 1);
  for (int i = 0; i < 20; ++i) {
    server::ServerOptions opts;
    opts.port = 0;
    server::HttpServer http(*engine, opts);
    http.bind();
    if (i == 0) http.stop();  // before run()
    std::thread serving([&] { http.run(); });
    if (i > 0) http.stop();  // while run() may still be starting
    serving.join();
  }
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
  // Another model's name: 404 model_not_found (this model's name, or none, is fine).
  auto other = post("/v1/completions", R"({"model": "gpt-4o", "prompt": "x", "max_tokens": 1})");
  expect_error(other, 404);
  EXPECT_EQ(json::parse(other->body)["error"]["code"], "model_not_found");
  auto same = post("/v1/completions", R"({"model": "stories260K", "prompt": "x", "max_tokens": 1})");
  ASSERT_TRUE(same);
  EXPECT_EQ(same->status, 200) << same->body;
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
  // A 200-token prompt is 7 chunks; the client cancels at the first chunk boundary. The
  // scheduler does not wait for the client's answer, so on a loaded machine it may run the rest
  // of the prompt (and a few decodes) before it sees the cancel: what the test holds is that the
  // request ends cancelled, with every page back; 50 new tokens leave it far from finishing.
  server::GenerationRequest g;
  for (int i = 0; i < 200; ++i) g.prompt.push_back(2 + (i * 37) % 250);
  g.max_tokens = 50;
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
  EXPECT_LE(s.prompt_tokens_total - prompt_before, 200);
}

TEST_F(LiveServer, ConcurrentGreedyStreamsEqualKeelRunAlone) {
  // Batch invariance: each stream, decoded beside the others, is exactly its prompt run alone.
  // Prompts from 2 to 3 chunks long beside short ones: several prefill pieces share a call.
  std::string long_a, long_b;
  for (int i = 0; i < 8; ++i) long_a += "Once upon a time there was a cat. ";
  for (int i = 0; i < 5; ++i) long_b += "The dog ran to the park and played. ";
  const std::vector<std::string> prompts = {"Once upon a time", long_a, "The little dog", "Lily went to the park", long_b,
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
    EXPECT_EQ(texts[i] + "\n", keel_run_text("run --temp 0 --chunk 32 -n 20 -p '" + prompts[i] + "'"));
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

TEST_F(LiveServer, PreemptedRequestsReplayToTheSameText) {
  // B and C (no max_tokens) each grow to the whole 256-token context, but the pool holds 304
  // tokens: once both run, C (the younger) is preempted, waits, recomputes its prompt, replays its
  // tokens and finishes. Both clients stall first, so both are admitted before either can finish.
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  const std::vector<std::string> prompts = {"The little dog", "Lily went to the park"};
  std::vector<std::string> texts(2);
  std::vector<std::future<server::GenerationResult>> runs;
  std::vector<server::GenerationCallbacks> callbacks(2);
  std::vector<server::GenerationRequest> requests(2);
  const int64_t preempted_before = engine_->stats().requests_preempted;
  for (size_t i = 0; i < 2; ++i) {
    requests[i].prompt = engine_->tokenize(prompts[i]);
    requests[i].sampling.temperature = 0;
    callbacks[i].on_text = [&, i](const std::string& t) {
      released.wait();
      texts[i] += t;
      return true;
    };
    runs.push_back(std::async(std::launch::async, [&, i] { return engine_->generate(requests[i], callbacks[i]); }));
    const int64_t running = static_cast<int64_t>(i) + 1;  // (no ASSERT before the release below)
    EXPECT_TRUE(eventually(*engine_, [running](const server::EngineStats& s) { return s.requests_running == running; }));
  }
  release.set_value();
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(prompts[i]);
    const server::GenerationResult r = runs[i].get();
    const int64_t room = 256 - static_cast<int64_t>(requests[i].prompt.size());
    EXPECT_EQ(r.finish, server::FinishReason::length);
    EXPECT_EQ(r.completion_tokens, room);
    EXPECT_EQ(texts[i] + "\n", keel_run_text("run --temp 0 --chunk 32 -n " + std::to_string(room) + " -p '" + prompts[i] + "'"));
  }
  EXPECT_GE(engine_->stats().requests_preempted - preempted_before, 1);
  ASSERT_TRUE(eventually(*engine_, [](const server::EngineStats& s) { return s.requests_running == 0; }));
  EXPECT_EQ(engine_->stats().kv_pages_used, 0);
}

TEST_F(LiveServer, PenaltiesAndSeedMatchKeelRun) {
  // The server and `keel run` share the sampler: greedy with penalties, and a seeded draw at
  // temperature 1 with no truncation (the API's defaults), give the same text.
  struct Case {
    json fields;
    std::string flags;
  };
  const std::string prompt = "Once upon a time";
  const std::string plain = keel_run_text("run --temp 0 -n 40 -p '" + prompt + "'");
  for (const Case& c : std::vector<Case>{
           {{{"temperature", 0}, {"frequency_penalty", 1.5}}, "--temp 0 --frequency-penalty 1.5"},
           {{{"temperature", 0}, {"presence_penalty", 1.5}}, "--temp 0 --presence-penalty 1.5"},
           {{{"temperature", 0}, {"repeat_penalty", 1.5}}, "--temp 0 --repeat-penalty 1.5"},
           {{{"temperature", 0}, {"repetition_penalty", 1.5}, {"repeat_last_n", 16}}, "--temp 0 --repeat-penalty 1.5 --repeat-last-n 16"},
           {{{"temperature", 1}, {"seed", 42}}, "--temp 1 --top-k 0 --top-p 1 --min-p 0 --seed 42"}}) {
    SCOPED_TRACE(c.flags);
    json body = {{"prompt", prompt}, {"max_tokens", 40}};
    body.update(c.fields);
    auto r = post("/v1/completions", body.dump());
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const std::string text = json::parse(r->body)["choices"][0]["text"];
    const std::string want = keel_run_text("run " + c.flags + " -n 40 -p '" + prompt + "'");
    EXPECT_EQ(text + "\n", want);
    EXPECT_NE(want, plain);  // the option made a difference
    auto again = post("/v1/completions", body.dump());  // the same seed, the same text
    ASSERT_TRUE(again);
    EXPECT_EQ(json::parse(again->body)["choices"][0]["text"], text);
  }
}

TEST_F(LiveServer, LogprobsInOpenAIShapes) {
  // Chat: one entry per generated token (usage.completion_tokens), the greedy choice is the top
  // alternative, the pieces spell the text, and the stream carries the same entries.
  json body = {{"messages", {{{"role", "user"}, {"content", "Tell me a story."}}}}, {"max_tokens", 12}, {"temperature", 0},
               {"logprobs", true}, {"top_logprobs", 3}};
  auto r = post("/v1/chat/completions", body.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  const json& content = j["choices"][0]["logprobs"]["content"];
  ASSERT_TRUE(content.is_array()) << r->body;
  ASSERT_EQ(content.size(), 12u);
  EXPECT_EQ(j["usage"]["completion_tokens"], 12);
  std::string spelled;
  for (const json& e : content) {
    ASSERT_EQ(e["top_logprobs"].size(), 3u);
    EXPECT_EQ(e["token"], e["top_logprobs"][0]["token"]);
    EXPECT_EQ(e["logprob"], e["top_logprobs"][0]["logprob"]);
    EXPECT_LE(e["logprob"].get<double>(), 0.0);
    EXPECT_GE(e["top_logprobs"][0]["logprob"].get<double>(), e["top_logprobs"][1]["logprob"].get<double>());
    for (const json& b : e["bytes"]) spelled.push_back(static_cast<char>(b.get<int>()));
  }
  EXPECT_EQ(spelled, j["choices"][0]["message"]["content"]);

  body["stream"] = true;
  auto s = post("/v1/chat/completions", body.dump());
  ASSERT_TRUE(s);
  json streamed = json::array();
  size_t pos = 0;
  while ((pos = s->body.find("data: {", pos)) != std::string::npos) {
    const size_t end = s->body.find("\n\n", pos);
    const json chunk = json::parse(s->body.substr(pos + 6, end - pos - 6));
    pos = end;
    const json& lp = chunk["choices"][0]["logprobs"];
    if (!lp.is_null())
      for (const json& e : lp["content"]) streamed.push_back(e);
  }
  EXPECT_EQ(streamed, content);

  // Without logprobs: null, as OpenAI sends it.
  body.erase("top_logprobs");
  body["logprobs"] = false;
  body["stream"] = false;
  auto n = post("/v1/chat/completions", body.dump());
  ASSERT_TRUE(n);
  EXPECT_TRUE(json::parse(n->body)["choices"][0]["logprobs"].is_null());

  // Completions (legacy shape): tokens, token_logprobs, top_logprobs dicts, text_offset.
  auto c = post("/v1/completions", json{{"prompt", "Once upon a time"}, {"max_tokens", 8}, {"temperature", 0}, {"logprobs", 2}}.dump());
  ASSERT_TRUE(c);
  ASSERT_EQ(c->status, 200) << c->body;
  const json cj = json::parse(c->body)["choices"][0];
  const json& lp = cj["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 8u) << c->body;
  ASSERT_EQ(lp["token_logprobs"].size(), 8u);
  ASSERT_EQ(lp["top_logprobs"].size(), 8u);
  std::string text;
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(lp["text_offset"][i], static_cast<int64_t>(text.size()));
    text += lp["tokens"][i].get<std::string>();
    EXPECT_LE(lp["top_logprobs"][i].size(), 2u);
    EXPECT_EQ(lp["top_logprobs"][i][lp["tokens"][i].get<std::string>()], lp["token_logprobs"][i]);
  }
  EXPECT_EQ(text, cj["text"]);

  // top_logprobs needs logprobs; more than 20 is refused.
  expect_error(post("/v1/chat/completions", R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})"), 400);
  expect_error(post("/v1/chat/completions",
                    R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21})"), 400);
  expect_error(post("/v1/completions", R"({"prompt": "x", "repeat_penalty": 0})"), 400);
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
  EXPECT_EQ(samples, 31u);
  for (const char* name : {"keel_requests_total ", "keel_requests_running 0\n", "keel_requests_queued 0\n",
                           "keel_prompt_tokens_total ", "keel_generated_tokens_total ", "keel_prefill_tokens_per_second ",
                           "keel_decode_tokens_per_second ", "keel_kv_pages_used ", "keel_kv_pages_total 19\n",
                           "keel_requests_preempted_total ", "keel_kv_pages_cached ", "keel_prefix_cache_enabled 1\n",
                           "keel_prefix_cache_hits_total ", "keel_prefix_cache_misses_total ",
                           "keel_prefix_cache_reused_tokens_total ", "keel_prefix_cache_evicted_pages_total ",
                           "keel_disk_cache_enabled 0\n", "keel_disk_cache_hits_total 0\n",
                           "keel_disk_cache_reused_tokens_total 0\n", "keel_disk_cache_writes_total 0\n",
                           "keel_disk_cache_errors_total 0\n", "keel_disk_cache_files 0\n", "keel_disk_cache_bytes 0\n",
                           "keel_sequences 4\n", "keel_queue_capacity 8\n",
                           // (a pure-attention model: no recurrent-state snapshots)
                           "keel_state_snapshots_total 0\n", "keel_state_snapshots_cached 0\n",
                           "keel_state_snapshot_bytes 0\n", "keel_state_snapshots_taken_total 0\n",
                           "keel_state_snapshots_evicted_total 0\n"})
    EXPECT_NE(m->body.find(std::string("\n") + name), std::string::npos) << name;
}

TEST(BatchingServer, WithoutMaxTokensARequestDoesNotHoldTheWholeContext) {
  // A asks for no max_tokens and its client stalls, so A pauses holding its sequence (after up to
  // two batches of 32 events: at most 5 pages). B (no max_tokens either) is admitted beside it by
  // what its prompt needs, runs until the context is full (16 pages of the 23) and ends with
  // "length", while A still waits for its client. Then A ends the same way.
  auto engine = make_engine(8, 8);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  server::GenerationRequest g;
  g.prompt = engine->tokenize("Once upon a time");
  g.sampling.temperature = 0;
  std::string a_text, b_text;
  server::GenerationCallbacks stalled;
  stalled.on_text = [&](const std::string& t) {
    released.wait();
    a_text += t;
    return true;
  };
  auto a = std::async(std::launch::async, [&] { return engine->generate(g, stalled); });
  // No ASSERT until A is released: its stalled client would keep the test from ending.
  EXPECT_TRUE(eventually(*engine, [](const server::EngineStats& s) { return s.requests_running == 1; }));
  server::GenerationCallbacks normal;
  normal.on_text = [&](const std::string& t) {
    b_text += t;
    return true;
  };
  auto b = std::async(std::launch::async, [&] { return engine->generate(g, normal); });
  EXPECT_EQ(b.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  EXPECT_EQ(a.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  release.set_value();
  const server::GenerationResult ra = a.get(), rb = b.get();
  const int64_t room = 256 - static_cast<int64_t>(g.prompt.size());
  EXPECT_EQ(rb.finish, server::FinishReason::length);
  EXPECT_EQ(rb.completion_tokens, room);
  EXPECT_EQ(ra.finish, server::FinishReason::length);
  EXPECT_EQ(ra.completion_tokens, room);
  EXPECT_EQ(a_text, b_text);
  EXPECT_EQ(b_text + "\n", keel_run_text("run --temp 0 --chunk 32 -n " + std::to_string(room) + " -p 'Once upon a time'"));
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
