// `keel tokenize`: the token ids (or vocabulary pieces) of a text, on one line.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

#include "args.h"
#include "commands.h"
#include "embedded/default_model.h"
#include "gguf/gguf.h"
#include "keel/error.h"
#include "tokenizer/tokenizer.h"

namespace keel::cli {

namespace {

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("keel tokenize: cannot open '" + path + "'");
  return {std::istreambuf_iterator<char>(in), {}};
}

}  // namespace

int cmd_tokenize(const CommandArgs& argv) {
  Args args("tokenize", "Print the token ids of a text, separated by spaces, on one line.",
            {{{"-m", "--model"}, "FILE", "GGUF model or vocab-only GGUF (default: the embedded model)"},
             {{"--tokenizer"}, "FILE", "a Hugging Face tokenizer.json instead of a GGUF"},
             {{"-p", "--prompt"}, "TEXT", "the text to tokenize"},
             {{"-f", "--file"}, "FILE", "read the text from a file"},
             {{"--no-bos"}, "", "do not add BOS, whatever the vocabulary says"},
             {{"--parse-special"}, "", "turn special-token texts such as <|im_start|> into their ids"},
             {{"--pieces"}, "", "print the vocabulary pieces instead of the ids"}});
  if (!args.parse(argv)) return 0;
  if (!args.positionals().empty())
    throw Error("keel tokenize: unexpected argument '" + args.positionals()[0] + "'", ErrorKind::usage);
  if (args.has("--model") && args.has("--tokenizer"))
    throw Error("keel tokenize: give either -m or --tokenizer, not both", ErrorKind::usage);
  if (args.has("--prompt") == args.has("--file"))
    throw Error("keel tokenize: give the text with exactly one of -p TEXT or -f FILE", ErrorKind::usage);

  const std::string text = args.has("--prompt") ? *args.get("--prompt") : read_text_file(*args.get("--file"));
  const tokenizer::Tokenizer tok =
      args.has("--tokenizer") ? tokenizer::Tokenizer::from_hf_json(*args.get("--tokenizer"))
                              : tokenizer::Tokenizer::from_gguf(embedded::open_gguf(args.get_or("--model", std::string(embedded::kDefaultModelName))));

  for (const std::string& warning : tok.warnings()) std::fprintf(stderr, "warning: %s\n", warning.c_str());

  const bool add_bos = !args.has("--no-bos") && tok.add_bos_by_default();
  const std::vector<int32_t> ids = tok.encode(text, add_bos, args.has("--parse-special"));
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line.push_back(' ');
    line += args.has("--pieces") ? tok.token_text(ids[i]) : std::to_string(ids[i]);
  }
  line.push_back('\n');
  std::fwrite(line.data(), 1, line.size(), stdout);
  return 0;
}

}  // namespace keel::cli
