#include "tokenizer/vocab.h"

#include <algorithm>
#include <cctype>

#include "tokenizer/byte_level.h"

namespace keel::tokenizer {

namespace {

// Texts llama.cpp recognises whatever their stored type (llama-vocab.cpp in the llama.cpp that
// node-llama-cpp 3.21.1 ships; gguf_arch.md §5.2). Each is forced to CONTROL.
constexpr std::string_view kEogTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
};
// When tokenizer.ggml.eot_token_id is absent, the first of these present is the end of turn.
constexpr std::string_view kEotTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "[EOT]", "<end_of_utterance>",
};
// Fill-in-the-middle markers, forced to CONTROL; the pad/repo/file-separator ones also end generation.
constexpr std::string_view kFimTexts[] = {
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>", "<|code_prefix|>", "<|prefix|>",
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<SUF>", "<|code_suffix|>", "<|suffix|>",
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<MID>", "<|code_middle|>", "<|middle|>",
};
constexpr std::string_view kFimPadTexts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"};
constexpr std::string_view kFimRepoTexts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"};
constexpr std::string_view kFimSepTexts[] = {"<|file_sep|>"};
// gpt-oss's channel markers are always rendered and always parsed (USER_DEFINED).
constexpr std::string_view kAlwaysUserDefined[] = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"};

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581, SentencePiece's space

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

std::string unescape_spm(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text.compare(i, 3, "\xE2\x96\x81") == 0) {
      out.push_back(' ');
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// "<0xNN>" -> NN, or -1.
int byte_of(const std::string& text) {
  if (text.size() != 6 || text.compare(0, 3, "<0x") != 0 || text[5] != '>') return -1;
  const int hi = hex_digit(text[3]), lo = hex_digit(text[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

}  // namespace

void Vocab::finalize(std::string_view model_name) {
  const int32_t n = n_vocab();
  score.resize(n, 0.0f);
  type.resize(n, TokenType::normal);
  lstrip.resize(n, 0);
  rstrip.resize(n, 0);

  for (int32_t id = 0; id < n; ++id) {
    if (text[id].empty()) text[id] = "[EMPTY_" + std::to_string(id) + "]";
    index.insert_or_assign(text[id], id);
  }
  eog.assign(n, 0);
  auto force_control = [&](int32_t id) {
    if (type[id] != TokenType::control) type[id] = TokenType::control;
  };
  for (std::string_view t : kEotTexts) {
    const int32_t id = index.find(t);
    if (id >= 0 && eot < 0) eot = id;
  }
  for (std::string_view t : kFimTexts)
    if (int32_t id = index.find(t); id >= 0) force_control(id);
  for (const auto* list : {&kFimPadTexts, &kFimRepoTexts})
    for (std::string_view t : *list)
      if (int32_t id = index.find(t); id >= 0) {
        force_control(id);
        eog[id] = 1;
        break;
      }
  for (std::string_view t : kFimSepTexts)
    if (int32_t id = index.find(t); id >= 0) force_control(id), eog[id] = 1;
  for (std::string_view t : kEogTexts)
    if (int32_t id = index.find(t); id >= 0) force_control(id), eog[id] = 1;
  for (std::string_view t : kAlwaysUserDefined)
    if (int32_t id = index.find(t); id >= 0) type[id] = TokenType::user_defined;
  for (int32_t id : {eos, eot, eom})
    if (id >= 0 && id < n) eog[id] = 1;
  auto has_eog = [&](std::string_view t) {
    const int32_t id = index.find(t);
    return id >= 0 && eog[id];
  };
  // llama.cpp's workarounds: o200k-harmony's <|end|> is not an end of generation; nor is
  // Gemma-4's </s>, which is ordinary text there.
  if (has_eog("<|end|>") && ((has_eog("<|return|>") && has_eog("<|call|>")) || (has_eog("<|calls|>") && has_eog("<|flush|>")))) {
    const int32_t id = index.find("<|end|>");
    eog[id] = 0;
    type[id] = TokenType::user_defined;
  }
  if (has_eog("<|tool_response>") && has_eog("</s>")) {
    const int32_t id = index.find("</s>");
    eog[id] = 0;
    type[id] = TokenType::normal;
  }

  specials.clear();
  for (int32_t id = 0; id < n; ++id)
    if (is_special(id)) specials.push_back(id);
  std::stable_sort(specials.begin(), specials.end(),
                   [&](int32_t a, int32_t b) { return text[a].size() > text[b].size(); });
  for (auto& bucket : specials_by_first_byte) bucket.clear();
  for (int32_t id : specials) specials_by_first_byte[static_cast<uint8_t>(text[id][0])].push_back(id);

  std::string name(model_name);
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  if (contains(name, "phi-3") || contains(name, "phi3")) {
    // llama.cpp's per-model attributes: Phi-3's special tokens swallow the whitespace after them.
    for (int32_t id : specials) rstrip[id] = 1;
    if (int32_t id = index.find("</s>"); id >= 0) rstrip[id] = 1;
    for (std::string_view t : {"<unk>", "<s>", "<|endoftext|>"})
      if (int32_t id = index.find(t); id >= 0) rstrip[id] = 0;
  }

  piece.assign(n, std::string());
  const ByteLevel byte_level;
  for (int32_t id = 0; id < n; ++id) {
    const TokenType t = type[id];
    if (is_special(id)) {
      piece[id] = text[id];
    } else if (t == TokenType::normal) {
      piece[id] = kind == VocabKind::spm ? unescape_spm(text[id]) : byte_level.decode(text[id]);
    } else if (t == TokenType::byte && kind == VocabKind::spm) {
      const int b = byte_of(text[id]);
      if (b >= 0) piece[id] = std::string(1, static_cast<char>(b));
    }
  }

  spm_words_independent = kind == VocabKind::spm;
  for (int32_t id = 0; id < n && spm_words_independent; ++id) {
    const std::string& t = text[id];
    for (size_t at = t.find(kSpaceMark, 1); at != std::string::npos; at = t.find(kSpaceMark, at + 1))
      if (at < 3 || t.compare(at - 3, 3, kSpaceMark) != 0) spm_words_independent = false;
  }

  byte_token.fill(-1);
  if (kind == VocabKind::spm) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) {
      const char name_buf[6] = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
      int32_t id = index.find(std::string_view(name_buf, 6));
      const char raw = static_cast<char>(b);
      if (id < 0) id = index.find(std::string_view(&raw, 1));  // a vocabulary without <0xNN> tokens
      byte_token[b] = id >= 0 ? id : unk;
    }
  }
}

}  // namespace keel::tokenizer
