// `keel serve` (the binary, on the embedded stories260K) driven by a client no one here wrote:
// the official `openai` npm package (tests/node, installed by scripts/setup.sh when npm is there).
// Non-streaming and streaming chat completions, completions, the models list, logprobs, and
// errors (another model's name, a prompt longer than the context, a wrong type) as the client's
// own error classes. Without node or the package the test reports itself skipped.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "serve_process.h"
#include "test_paths.h"

using json = nlohmann::ordered_json;
namespace test = keel::test;

namespace {

const std::string kNodeDir = std::string(KEEL_SOURCE_DIR) + "/tests/node";

// Runs a shell command; returns its stdout, and its exit status in *status.
std::string run(const std::string& cmd, int* status) {
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int rc = pclose(p);
  *status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  return out;
}

}  // namespace

TEST(ServerOpenAINode, OfficialClientAgainstKeelServe) {
  int status = 0;
  run("node --version >/dev/null 2>&1", &status);
  if (status != 0) GTEST_SKIP() << "node is not installed";
  run("cd '" + kNodeDir + "' && node --input-type=module -e \"await import('openai')\" >/dev/null 2>&1", &status);
  if (status != 0)
    GTEST_SKIP() << "the openai npm package is not installed in tests/node (scripts/setup.sh, or npm install --prefix tests/node)";

  // stories260K has no chat template of its own.
  const std::string tmpl = keel::test::temp_dir() + "keel_openai_template.jinja";
  std::ofstream(tmpl) << "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
                         "{% if add_generation_prompt %}[assistant]{% endif %}";
  test::ServeProcess server({"-c", "256", "-np", "2", "--chunk", "32", "-t", "1", "--chat-template", tmpl});
  const std::string out = run("cd '" + kNodeDir + "' && node openai_client.mjs http://127.0.0.1:" +
                                  std::to_string(server.port()) + "/v1 2>&1",
                              &status);
  ASSERT_EQ(status, 0) << out << "\nserver stderr:\n" << server.stderr_text();
  // The report is the last line (node's warnings, if any, come before it).
  size_t line = out.rfind("\n{");
  line = line == std::string::npos ? 0 : line + 1;
  json j;
  ASSERT_NO_THROW(j = json::parse(out.substr(line))) << out;

  ASSERT_EQ(j["models"].size(), 1u);
  EXPECT_EQ(j["models"][0]["id"], "stories260K");
  EXPECT_EQ(j["models"][0]["object"], "model");

  const json& chat = j["chat"];
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["role"], "assistant");
  EXPECT_EQ(chat["finish_reason"], "length");
  EXPECT_EQ(chat["usage"]["completion_tokens"], 16);
  EXPECT_GE(chat["content"].get<std::string>().size(), 8u);
  const json& stream = j["chat_stream"];
  EXPECT_EQ(stream["content"], chat["content"]);  // streamed deltas add up to the same greedy text
  EXPECT_EQ(stream["finish_reason"], "length");
  EXPECT_EQ(stream["usage"]["completion_tokens"], 16);  // stream_options.include_usage
  EXPECT_EQ(stream["roles"], json::array({"assistant"}));

  const json& lp = j["chat_logprobs"]["content"];
  ASSERT_EQ(lp.size(), 6u);
  for (const json& e : lp) {
    EXPECT_LE(e["logprob"].get<double>(), 0.0);
    EXPECT_EQ(e["top_logprobs"].size(), 2u);
  }

  // The completion is `keel run --temp 0`'s text, streamed or not.
  const std::string want = run(test::keel_binary() + " run --temp 0 -n 24 -p 'Once upon a time' 2>/dev/null", &status);
  EXPECT_EQ(j["completion"]["object"], "text_completion");
  EXPECT_EQ(j["completion"]["text"].get<std::string>() + "\n", want);
  EXPECT_EQ(j["completion"]["finish_reason"], "length");
  EXPECT_EQ(j["completion_stream"]["text"], j["completion"]["text"]);

  // Errors reach the client as OpenAI error objects: its own error classes, status, type, param.
  const json& bad_model = j["bad_model"];
  EXPECT_EQ(bad_model["class"], "NotFoundError") << bad_model.dump();
  EXPECT_EQ(bad_model["status"], 404);
  EXPECT_EQ(bad_model["code"], "model_not_found");
  EXPECT_EQ(bad_model["param"], "model");
  const json& too_long = j["too_long"];
  EXPECT_EQ(too_long["class"], "BadRequestError") << too_long.dump();
  EXPECT_EQ(too_long["status"], 400);
  EXPECT_EQ(too_long["type"], "invalid_request_error");
  EXPECT_EQ(too_long["param"], "prompt");
  EXPECT_NE(too_long["message"].get<std::string>().find("256"), std::string::npos) << too_long.dump();
  const json& bad_type = j["bad_type"];
  EXPECT_EQ(bad_type["class"], "BadRequestError") << bad_type.dump();
  EXPECT_EQ(bad_type["param"], "temperature");
  EXPECT_TRUE(server.running());
}
