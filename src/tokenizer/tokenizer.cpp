#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <deque>
#include <unordered_map>

#include "keel/error.h"
#include "tokenizer/spm.h"
#include "tokenizer/tokenizer_data.h"
#include "tokenizer/utf8.h"

namespace keel::tokenizer {

namespace {

struct Fragment {
  int32_t token;  // -1: raw text
  size_t offset, length;
};

bool is_ascii_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

// Splits text around special tokens as llama.cpp's tokenizer_st_partition does: each special
// text, longest first, claims all its occurrences in the raw fragments left by longer ones.
std::vector<Fragment> partition(const Vocab& vocab, std::string_view text, bool parse_special) {
  std::vector<Fragment> fragments;
  if (text.empty()) return fragments;
  fragments.push_back({-1, 0, text.size()});
  if (vocab.specials.empty()) return fragments;

  // One pass to learn which special texts occur at all, so only those are searched for.
  std::vector<int32_t> present;
  for (size_t i = 0; i < text.size(); ++i) {
    for (int32_t id : vocab.specials_by_first_byte[static_cast<uint8_t>(text[i])]) {
      const std::string& s = vocab.text[id];
      if (text.compare(i, s.size(), s) == 0 && std::find(present.begin(), present.end(), id) == present.end())
        present.push_back(id);
    }
  }
  if (present.empty()) return fragments;

  std::vector<Fragment> next;
  for (int32_t id : vocab.specials) {
    if (std::find(present.begin(), present.end(), id) == present.end()) continue;
    if (!parse_special && vocab.type[id] != TokenType::user_defined) continue;
    const std::string& special = vocab.text[id];
    next.clear();
    for (const Fragment& f : fragments) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      size_t base = f.offset, length = f.length;
      while (length > 0) {
        const size_t found = text.substr(base, length).find(special);
        if (found == std::string_view::npos) {
          next.push_back({-1, base, length});
          break;
        }
        size_t left = found;
        if (vocab.lstrip[id])
          while (left > 0 && is_ascii_space(text[base + left - 1])) --left;
        if (left > 0) next.push_back({-1, base, left});
        next.push_back({id, 0, 0});
        size_t right_base = base + found + special.size();
        size_t right_length = base + length - right_base;
        if (vocab.rstrip[id])
          while (right_length > 0 && is_ascii_space(text[right_base])) ++right_base, --right_length;
        base = right_base;
        length = right_length;
      }
    }
    fragments.swap(next);
  }
  return fragments;
}

std::string escape_spm(std::string_view text, bool space_prefix) {
  std::string out;
  out.reserve(text.size() + 8);
  if (space_prefix) out += "\xE2\x96\x81";
  for (char c : text) {
    if (c == ' ')
      out += "\xE2\x96\x81";
    else
      out.push_back(c);
  }
  return out;
}

}  // namespace

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  const TokenizerData& d = *data_;
  const Vocab& vocab = d.vocab;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos && vocab.bos >= 0) out.push_back(vocab.bos);

  const std::vector<Fragment> fragments = partition(vocab, text, parse_special);
  if (vocab.kind == VocabKind::spm) {
    bool previous_was_special = true;  // the first text gets the space prefix too
    for (const Fragment& f : fragments) {
      if (f.token >= 0) {
        out.push_back(f.token);
        previous_was_special = true;
        continue;
      }
      const std::string escaped =
          escape_spm(text.substr(f.offset, f.length), vocab.add_space_prefix && previous_was_special);
      spm_encode(vocab, escaped, out);
      previous_was_special = false;
    }
    return out;
  }

  // Pieces repeat a lot in long prompts: each distinct piece is run through BPE once per call.
  BpeModel::Scratch scratch;
  std::unordered_map<std::string_view, std::pair<size_t, size_t>> cache;  // piece -> ids in `store`
  std::vector<int32_t> store;
  std::deque<std::string> rewritten;  // normalized or space-prefixed fragments (the cache points into them)
  for (const Fragment& f : fragments) {
    if (f.token >= 0) {
      out.push_back(f.token);
      continue;
    }
    std::string_view piece_text = text.substr(f.offset, f.length);
    if (!d.normalizer.empty()) piece_text = rewritten.emplace_back(d.normalizer.apply(piece_text));
    if (piece_text.empty()) continue;
    if (d.prefix_space && piece_text.front() != ' ') piece_text = rewritten.emplace_back(std::string(" ").append(piece_text));
    for (const Span& s : d.pre.split(piece_text)) {
      const std::string_view piece = piece_text.substr(s.offset, s.length);
      auto [it, fresh] = cache.try_emplace(piece, store.size(), 0);
      if (fresh) {
        d.bpe.encode_piece(vocab, piece, store, scratch);
        it->second.second = store.size() - it->second.first;
      }
      out.insert(out.end(), store.begin() + it->second.first, store.begin() + it->second.first + it->second.second);
    }
  }
  return out;
}

bool Tokenizer::add_bos_by_default() const { return data_->vocab.add_bos && data_->vocab.bos >= 0; }
bool Tokenizer::add_eos_by_default() const { return data_->vocab.add_eos && data_->vocab.eos >= 0; }

void Tokenizer::check_id(int32_t id) const {
  if (id < 0 || id >= data_->vocab.n_vocab())
    throw Error("token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                std::to_string(data_->vocab.n_vocab() - 1) + ")");
}

std::string Tokenizer::token_to_piece(int32_t id) const {
  check_id(id);
  return data_->vocab.piece[id];
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, const DecodeOptions& options) const {
  const Vocab& vocab = data_->vocab;
  std::string out;
  size_t i = 0;
  if (options.skip_leading_bos && !ids.empty() && vocab.bos >= 0 && ids[0] == vocab.bos) i = 1;
  bool strip = options.strip_space_prefix && vocab.kind == VocabKind::spm && vocab.add_space_prefix;
  std::vector<std::string> pieces;  // for a tokenizer.json decoder
  for (; i < ids.size(); ++i) {
    check_id(ids[i]);
    const int32_t id = ids[i];
    const TokenType t = vocab.type[id];
    if (!options.render_special && (t == TokenType::control || t == TokenType::unknown)) continue;
    std::string_view piece = vocab.piece[id];
    if (strip && !piece.empty() && piece.front() == ' ') piece.remove_prefix(1);
    strip = false;
    if (data_->decoder.empty())
      out.append(piece);
    else
      pieces.emplace_back(piece);
  }
  return data_->decoder.empty() ? out : data_->decoder.apply(std::move(pieces));
}

int32_t Tokenizer::n_vocab() const { return data_->vocab.n_vocab(); }
int32_t Tokenizer::bos() const { return data_->vocab.bos; }
int32_t Tokenizer::eos() const { return data_->vocab.eos; }
int32_t Tokenizer::eot() const { return data_->vocab.eot; }

bool Tokenizer::is_end_of_generation(int32_t id) const {
  return id >= 0 && id < data_->vocab.n_vocab() && data_->vocab.eog[id];
}

const std::string& Tokenizer::token_text(int32_t id) const {
  check_id(id);
  return data_->vocab.text[id];
}

int32_t Tokenizer::token_type(int32_t id) const {
  check_id(id);
  return static_cast<int32_t>(data_->vocab.type[id]);
}

int32_t Tokenizer::find_token(std::string_view text) const { return data_->vocab.index.find(text); }
bool Tokenizer::is_spm() const { return data_->vocab.kind == VocabKind::spm; }
const std::string& Tokenizer::pre_tokenizer() const { return data_->pre_name; }
const std::vector<std::string>& Tokenizer::warnings() const { return data_->warnings; }

std::string StreamDecoder::push(int32_t id) {
  pending_ += tokenizer_.token_to_piece(id);
  const size_t hold = utf8::incomplete_tail(pending_);
  std::string ready = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return ready;
}

std::string StreamDecoder::flush() {
  std::string rest;
  rest.swap(pending_);
  return rest;
}

}  // namespace keel::tokenizer
