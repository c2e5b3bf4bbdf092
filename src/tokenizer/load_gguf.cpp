// Tokenizer::from_gguf: the tokenizer.ggml.* metadata (gguf_arch.md §5).
#include <optional>

#include "gguf/gguf.h"
#include "keel/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_data.h"

namespace keel::tokenizer {

namespace {

std::string where(const gguf::File& file, std::string_view key) {
  return file.path() + ": " + std::string(key);
}

const gguf::Array& require_array(const gguf::File& file, std::string_view key, gguf::ValueType elem) {
  const gguf::Array* a = file.get_array(key);
  if (!a) throw Error(where(file, key) + " is missing; the file has no usable tokenizer");
  if (a->elem_type != elem)
    throw Error(where(file, key) + " holds " + std::string(gguf::value_type_name(a->elem_type)) +
                " items, expected " + std::string(gguf::value_type_name(elem)));
  return *a;
}

void check_count(const gguf::File& file, std::string_view key, size_t got, size_t want) {
  if (got != want)
    throw Error(where(file, key) + " has " + std::to_string(got) + " entries but tokenizer.ggml.tokens has " +
                std::to_string(want));
}

// A special id from metadata; ids past the vocabulary (e.g. 0xFFFFFFFF for "none") are ignored.
void read_id(const gguf::File& file, std::string_view key, int32_t n_vocab, int32_t& id) {
  const std::optional<int64_t> v = file.get_int(key);
  if (v && *v >= 0 && *v < n_vocab) id = static_cast<int32_t>(*v);
}

}  // namespace

Tokenizer Tokenizer::from_gguf(const gguf::File& file) {
  auto data = std::make_shared<TokenizerData>();
  Vocab& vocab = data->vocab;

  const std::optional<std::string> model = file.get_string("tokenizer.ggml.model");
  if (!model) throw Error(where(file, "tokenizer.ggml.model") + " is missing; the file has no tokenizer");
  if (*model == "llama") {
    vocab.kind = VocabKind::spm;
  } else if (*model == "gpt2") {
    vocab.kind = VocabKind::bpe;
  } else {
    throw Error(where(file, "tokenizer.ggml.model") + " is '" + *model +
                "'; keel supports 'llama' (SentencePiece) and 'gpt2' (byte-level BPE)");
  }

  const gguf::Array& tokens = require_array(file, "tokenizer.ggml.tokens", gguf::ValueType::string);
  if (tokens.items.empty() || tokens.items.size() > (1u << 30))
    throw Error(where(file, "tokenizer.ggml.tokens") + " has " + std::to_string(tokens.items.size()) + " tokens");
  const size_t n = tokens.items.size();
  vocab.text.reserve(n);
  for (const auto& v : tokens.items) vocab.text.push_back(*v.as_string());

  if (const gguf::Array* scores = file.get_array("tokenizer.ggml.scores")) {
    check_count(file, "tokenizer.ggml.scores", scores->items.size(), n);
    vocab.score.reserve(n);
    for (const auto& v : scores->items) vocab.score.push_back(static_cast<float>(v.as_float().value_or(0.0)));
  }
  if (const gguf::Array* types = file.get_array("tokenizer.ggml.token_type")) {
    check_count(file, "tokenizer.ggml.token_type", types->items.size(), n);
    vocab.type.reserve(n);
    for (const auto& v : types->items) {
      const int64_t t = v.as_int().value_or(0);
      vocab.type.push_back(t >= 0 && t <= 6 ? static_cast<TokenType>(t) : TokenType::undefined);
    }
  }

  const auto n_vocab = static_cast<int32_t>(n);
  std::vector<std::pair<std::string, std::string>> merges;
  PreTokenizerSpec spec;
  if (vocab.kind == VocabKind::spm) {
    data->pre_name = "spm";
    vocab.bos = 1 < n_vocab ? 1 : -1;
    vocab.eos = 2 < n_vocab ? 2 : -1;
    vocab.unk = 0;
    vocab.add_bos = true;
    vocab.add_space_prefix = true;
  } else {
    std::optional<std::string> pre = file.get_string("tokenizer.ggml.pre");
    if (!pre) {
      data->warnings.push_back(file.path() +
                               ": tokenizer.ggml.pre is missing; using the 'default' pre-tokenizer as llama.cpp "
                               "does (tokenization may differ from the original model's)");
      pre = "default";
    }
    try {
      spec = pre_tokenizer_spec(*pre);
    } catch (const Error& e) {
      throw Error(file.path() + ": " + e.what());
    }
    data->pre_name = spec.name;
    vocab.add_bos = spec.add_bos;
    const gguf::Array& m = require_array(file, "tokenizer.ggml.merges", gguf::ValueType::string);
    merges.reserve(m.items.size());
    for (const auto& v : m.items) {
      const std::string& s = *v.as_string();
      const size_t space = s.find(' ', 1);
      if (space == std::string::npos)
        merges.emplace_back();
      else
        merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    }
  }

  read_id(file, "tokenizer.ggml.bos_token_id", n_vocab, vocab.bos);
  read_id(file, "tokenizer.ggml.eos_token_id", n_vocab, vocab.eos);
  read_id(file, "tokenizer.ggml.eot_token_id", n_vocab, vocab.eot);
  read_id(file, "tokenizer.ggml.eom_token_id", n_vocab, vocab.eom);
  read_id(file, "tokenizer.ggml.unknown_token_id", n_vocab, vocab.unk);
  read_id(file, "tokenizer.ggml.padding_token_id", n_vocab, vocab.pad);
  if (auto v = file.get_bool("tokenizer.ggml.add_bos_token")) vocab.add_bos = *v;
  if (auto v = file.get_bool("tokenizer.ggml.add_eos_token")) vocab.add_eos = *v;
  if (auto v = file.get_bool("tokenizer.ggml.add_space_prefix")) vocab.add_space_prefix = *v;

  vocab.finalize(file.get_string("general.name").value_or(""));
  if (vocab.kind == VocabKind::bpe) {
    data->bpe = BpeModel(vocab, merges, spec.ignore_merges);
    data->pre = PreTokenizer(spec.regexes);
  }
  return Tokenizer(std::move(data));
}

}  // namespace keel::tokenizer
