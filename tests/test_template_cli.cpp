// End-to-end tests of `keel template` and `keel run --chat`: corpus renderings through the CLI
// byte for byte, template errors on stderr with exit 1, and models without a chat template.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "gguf/writer.h"
#include "test_paths.h"

using namespace keel;

namespace {

struct Output {
  int code;
  std::string out;
};

Output run_keel(const std::string& args, const char* redirect = " 2>/dev/null") {
  std::string cmd = test::keel_binary() + " " + args + redirect;
  FILE* p = popen(cmd.c_str(), "r");
  Output o{-1, ""};
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) o.out.append(buf.data(), n);
  int status = pclose(p);
  o.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return o;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Writes the corpus case `name` as its own CASE.json and returns the path.
std::string case_file(const std::string& name) {
  auto cases = nlohmann::ordered_json::parse(slurp(test::shared("chat-templates/cases.json")))["cases"];
  for (const auto& c : cases)
    if (c["name"] == name) {
      std::string path = keel::test::temp_dir() + "keel_case_" + name + ".json";
      std::ofstream(path) << c.dump();
      return path;
    }
  ADD_FAILURE() << "no case " << name;
  return "";
}

std::string corpus(const std::string& rel) { return test::shared("chat-templates/" + rel); }

}  // namespace

TEST(TemplateCli, RendersCorpusPairsByteExact) {
  // Llama 3.2 with tools writes strftime_now's date; Qwen3 copies unicode and Jinja-looking text.
  Output llama = run_keel("template --chat-template " + corpus("meta-llama-Llama-3.2-3B-Instruct.jinja") + " --case " +
                          case_file("tools_only") +
                          " --now 2026-01-15 --var bos_token='\"<|begin_of_text|>\"' --var eos_token='\"<|eot_id|>\"'");
  EXPECT_EQ(llama.code, 0);
  EXPECT_EQ(llama.out, slurp(corpus("expected/meta-llama-Llama-3.2-3B-Instruct__tools_only.txt")));

  Output qwen = run_keel("template --chat-template " + corpus("qwen3-tokenizer_config.jinja") + " --case " +
                         case_file("unicode_whitespace") + " --var eos_token='\"<|im_end|>\"'");
  EXPECT_EQ(qwen.code, 0);
  EXPECT_EQ(qwen.out, slurp(corpus("expected/qwen3-tokenizer_config__unicode_whitespace.txt")));

  // A different --now changes the date line, so the flag is honoured.
  Output other_day = run_keel("template --chat-template " + corpus("meta-llama-Llama-3.2-3B-Instruct.jinja") + " --case " +
                              case_file("tools_only") + " --now 2025-07-04");
  EXPECT_EQ(other_day.code, 0);
  EXPECT_NE(other_day.out.find("04 Jul 2025"), std::string::npos);
}

TEST(TemplateCli, TemplateErrorGoesToStderrWithExit1) {
  Output o = run_keel("template --chat-template " + corpus("google-gemma-2-2b-it.jinja") + " --case " + case_file("system_user"),
                      " 2>&1 >/dev/null");
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.out.find("System role not supported"), std::string::npos) << o.out;
  // Nothing on stdout when the template refuses.
  Output out = run_keel("template --chat-template " + corpus("google-gemma-2-2b-it.jinja") + " --case " + case_file("system_user"));
  EXPECT_EQ(out.out, "");
}

TEST(TemplateCli, BadInputIsAClearError) {
  const std::string bad_json = keel::test::temp_dir() + "keel_bad_case.json";
  std::ofstream(bad_json) << "{\"messages\": [";
  Output o = run_keel("template --chat-template " + corpus("google-gemma-2-2b-it.jinja") + " --case " + bad_json, " 2>&1");
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.out.find("not valid JSON"), std::string::npos) << o.out;

  const std::string bad_template = keel::test::temp_dir() + "keel_bad.jinja";
  std::ofstream(bad_template) << "{% for m in messages %}{{ m.content ";
  o = run_keel("template --chat-template " + bad_template + " --case " + case_file("single_user"), " 2>&1");
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.out.find("TemplateSyntaxError"), std::string::npos) << o.out;

  o = run_keel("template --chat-template " + bad_template + " --case " + case_file("single_user") + " --var x=notjson", " 2>&1");
  EXPECT_EQ(o.code, 2);
  EXPECT_EQ(run_keel("template --case " + case_file("single_user")).code, 2);  // no template source
}

TEST(TemplateCli, ModelWithoutChatTemplateSuggestsTheFlag) {
  Output o = run_keel("template -m " + test::shared("models/stories260K.gguf") + " --case " + case_file("single_user"), " 2>&1");
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.out.find("no chat template"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("--chat-template"), std::string::npos) << o.out;

  o = run_keel("run --chat -n 4 -p hello", " 2>&1");
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.out.find("--chat-template"), std::string::npos) << o.out;
}

TEST(TemplateCli, RunChatAppliesTheTemplate) {
  const std::string path = keel::test::temp_dir() + "keel_chat.jinja";
  std::ofstream(path) << "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
                         "{% if add_generation_prompt %}[assistant]{% endif %}";
  Output chat = run_keel("run --chat --chat-template " + path + " --temp 0 -n 4 --json -p 'Once upon a time'");
  ASSERT_EQ(chat.code, 0);
  Output plain = run_keel("tokenize --no-bos -p '[user] Once upon a time\n[assistant]'");
  ASSERT_EQ(plain.code, 0);
  std::vector<int32_t> want;
  std::istringstream ids(plain.out);
  for (int32_t id; ids >> id;) want.push_back(id);
  EXPECT_EQ(nlohmann::json::parse(chat.out)["prompt_ids"].get<std::vector<int32_t>>(), want);
}

TEST(TemplateCli, ModelTemplateAndSpecialTokensComeFromTheGguf) {
  // A vocab-only GGUF carrying Qwen3's template; EOS is "<|im_end|>", no BOS (as Qwen sets it).
  const std::string path = keel::test::temp_dir() + "keel_template_model.gguf";
  gguf::Metadata md;
  md.set("general.architecture", gguf::value_string("qwen3"));
  md.set("tokenizer.ggml.model", gguf::value_string("gpt2"));
  md.set("tokenizer.ggml.tokens", gguf::value_string_array({"a", "b", "<|im_end|>"}));
  md.set("tokenizer.ggml.eos_token_id", gguf::value_u32(2));
  md.set("tokenizer.chat_template", gguf::value_string(slurp(corpus("qwen3-tokenizer_config.jinja"))));
  {
    gguf::Writer w(path, md, {});
    w.commit();
  }
  for (const char* c : {"tools_only", "tool_call", "reasoning_content"}) {
    SCOPED_TRACE(c);
    Output o = run_keel("template -m " + path + " --case " + case_file(c));
    EXPECT_EQ(o.code, 0);
    EXPECT_EQ(o.out, slurp(corpus(std::string("expected/qwen3-tokenizer_config__") + c + ".txt")));
  }
  // --chat-template overrides the model's template; the model still gives the special tokens.
  Output o = run_keel("template -m " + path + " --chat-template " + corpus("microsoft-Phi-3.5-mini-instruct.jinja") +
                      " --case " + case_file("multi_turn_no_gen") + " --var bos_token='\"<s>\"'");
  EXPECT_EQ(o.code, 0);
  EXPECT_NE(o.out.find("<|im_end|>"), std::string::npos) << o.out;  // Phi-3.5 ends with eos_token
}
