// `keel template`: render a chat template for one conversation, byte for byte as Hugging Face's
// apply_chat_template does (the rendering on stdout; the template's error on stderr, exit 1).
#include <cstdio>
#include <optional>

#include <nlohmann/json.hpp>

#include "args.h"
#include "chat_template.h"
#include "commands.h"
#include "keel/error.h"
#include "run_common.h"
#include "template/chat.h"
#include "template/template.h"

namespace keel::cli {

namespace {

// --var may repeat, which Args does not keep: take every occurrence out of argv first.
std::vector<std::string> take_vars(CommandArgs& argv) {
  std::vector<std::string> vars;
  CommandArgs rest;
  for (size_t i = 0; i < argv.size(); ++i) {
    if (argv[i] == "--var") {
      if (i + 1 >= argv.size()) throw Error("keel template: --var needs NAME=JSON", ErrorKind::usage);
      vars.push_back(argv[++i]);
    } else if (argv[i].rfind("--var=", 0) == 0) {
      vars.push_back(argv[i].substr(6));
    } else {
      rest.push_back(argv[i]);
    }
  }
  argv = rest;
  return vars;
}

nlohmann::ordered_json parse_vars(const std::vector<std::string>& vars) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const std::string& v : vars) {
    size_t eq = v.find('=');
    if (eq == std::string::npos || eq == 0)
      throw Error("keel template: --var wants NAME=JSON, got '" + v + "'", ErrorKind::usage);
    try {
      out[v.substr(0, eq)] = nlohmann::ordered_json::parse(v.substr(eq + 1));
    } catch (const nlohmann::json::exception&) {
      throw Error("keel template: --var " + v.substr(0, eq) + ": '" + v.substr(eq + 1) +
                      "' is not JSON (a string needs its quotes: --var bos_token='\"<s>\"')",
                  ErrorKind::usage);
    }
  }
  return out;
}

}  // namespace

int cmd_template(const CommandArgs& argv_in) {
  CommandArgs argv = argv_in;
  const std::vector<std::string> vars = take_vars(argv);
  Args args("template",
            "Render a chat template for one conversation, as Hugging Face's apply_chat_template does.\n"
            "CASE.json: {\"messages\": [...], \"add_generation_prompt\": true, \"tools\": [...], \"vars\": {...}}.",
            {{{"-m", "--model"}, "FILE", "GGUF whose tokenizer.chat_template (and bos/eos tokens) to use"},
             {{"--chat-template"}, "FILE", "a Jinja chat template file (overrides the model's)"},
             {{"--case"}, "FILE", "the conversation, a JSON object shaped like an entry of cases.json"},
             {{"--var"}, "NAME=JSON", "an extra template variable, e.g. --var bos_token='\"<s>\"' (repeatable)"},
             {{"--now"}, "YYYY-MM-DD", "the date strftime_now() formats (default: today)"}});
  if (!args.parse(argv)) return 0;
  if (!args.positionals().empty())
    throw Error("keel template: unexpected argument '" + args.positionals()[0] + "'", ErrorKind::usage);
  if (!args.has("--model") && !args.has("--chat-template"))
    throw Error("keel template: give -m MODEL or --chat-template FILE", ErrorKind::usage);
  if (!args.has("--case")) throw Error("keel template: give the conversation with --case CASE.json", ErrorKind::usage);

  const std::string case_path = *args.get("--case");
  nlohmann::ordered_json chat_case;
  try {
    chat_case = nlohmann::ordered_json::parse(read_text_file(case_path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(case_path + ": not valid JSON (" + std::string(e.what()) + ")");
  }

  std::optional<gguf::File> model;
  if (auto path = args.get("--model")) model = gguf::File::open(*path);
  const std::string source = chat_template_source(args.get("--chat-template"), model ? &*model : nullptr);
  const nlohmann::ordered_json tokens = model ? special_tokens(*model) : nlohmann::ordered_json::object();

  tmpl::RenderOptions options;
  options.now = args.has("--now") ? tmpl::parse_date(*args.get("--now")) : tmpl::today_local();
  std::string text;
  try {
    const nlohmann::ordered_json context = tmpl::chat_context(chat_case, tokens, parse_vars(vars));
    text = tmpl::Template(source).render(context, options);
  } catch (const tmpl::TemplateError& e) {
    std::fprintf(stderr, "error: %s: %s\n", tmpl::error_type_name(e.type()), e.what());
    return 1;
  }
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

}  // namespace keel::cli
