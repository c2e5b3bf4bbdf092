#include "tokenizer/spm.h"

#include <algorithm>
#include <unordered_map>

#include "keel/error.h"
#include "tokenizer/utf8.h"

namespace keel::tokenizer {

namespace {

struct Symbol {
  int32_t prev, next;
  uint32_t offset, n;  // bytes of text; n == 0 once merged into its left neighbour
};

struct Bigram {
  int32_t left, right;
  float score;
  uint32_t size;
};

// Max-heap order: the highest score on top, ties to the leftmost pair.
struct BigramLess {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

class Session {
 public:
  Session(const Vocab& vocab, std::string_view text) : vocab_(vocab), text_(text) {}

  void run(std::vector<int32_t>& out) {
    for (uint32_t offs = 0; offs < text_.size();) {
      const auto len = static_cast<uint32_t>(
          std::min(utf8::sequence_length(static_cast<uint8_t>(text_[offs])), text_.size() - offs));
      const auto index = static_cast<int32_t>(symbols_.size());
      symbols_.push_back({index - 1, offs + len == text_.size() ? -1 : index + 1, offs, len});
      offs += len;
    }
    for (int32_t i = 1; i < static_cast<int32_t>(symbols_.size()); ++i) try_add_bigram(i - 1, i);

    while (!queue_.empty()) {
      std::pop_heap(queue_.begin(), queue_.end(), BigramLess{});
      const Bigram b = queue_.back();
      queue_.pop_back();
      Symbol& left = symbols_[b.left];
      Symbol& right = symbols_[b.right];
      if (left.n == 0 || right.n == 0 || left.n + right.n != b.size) continue;  // stale
      left.n += right.n;
      right.n = 0;
      left.next = right.next;
      if (right.next >= 0) symbols_[right.next].prev = b.left;
      try_add_bigram(left.prev, b.left);
      try_add_bigram(b.left, left.next);
    }

    for (int32_t i = symbols_.empty() ? -1 : 0; i != -1; i = symbols_[i].next) emit(symbols_[i], out);
  }

 private:
  void try_add_bigram(int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const uint32_t size = symbols_[left].n + symbols_[right].n;
    const int32_t id = vocab_.index.find(text_.substr(symbols_[left].offset, size));
    if (id < 0) return;
    queue_.push_back({left, right, vocab_.score[id], size});
    std::push_heap(queue_.begin(), queue_.end(), BigramLess{});
  }

  void emit(const Symbol& s, std::vector<int32_t>& out) const {
    const std::string_view piece = text_.substr(s.offset, s.n);
    const int32_t id = vocab_.index.find(piece);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
    for (char c : piece) {  // byte fallback
      const int32_t byte_id = vocab_.byte_token[static_cast<uint8_t>(c)];
      if (byte_id < 0)
        throw Error("tokenizer: cannot encode byte 0x" + std::to_string(static_cast<uint8_t>(c)) +
                    ": the vocabulary has no byte tokens and no unknown token");
      out.push_back(byte_id);
    }
  }

  const Vocab& vocab_;
  std::string_view text_;
  std::vector<Symbol> symbols_;
  std::vector<Bigram> queue_;
};

}  // namespace

void spm_encode_whole(const Vocab& vocab, std::string_view text, std::vector<int32_t>& out) {
  if (text.size() >= (uint64_t{1} << 31)) throw Error("tokenizer: text of " + std::to_string(text.size()) + " bytes is too long");
  Session(vocab, text).run(out);
}

void spm_encode(const Vocab& vocab, std::string_view text, std::vector<int32_t>& out) {
  if (!vocab.spm_words_independent) {
    spm_encode_whole(vocab, text, out);
    return;
  }
  // Cut before each U+2581 that follows another character, on the same character boundaries
  // the session would use, and encode each word once per call.
  constexpr std::string_view kMark = "\xE2\x96\x81";
  std::unordered_map<std::string_view, std::pair<size_t, size_t>> cache;  // word -> ids in `store`
  std::vector<int32_t> store;
  auto encode_word = [&](std::string_view word) {
    auto [it, fresh] = cache.try_emplace(word, store.size(), 0);
    if (fresh) {
      Session(vocab, word).run(store);
      it->second.second = store.size() - it->second.first;
    }
    out.insert(out.end(), store.begin() + it->second.first, store.begin() + it->second.first + it->second.second);
  };
  size_t word_start = 0;
  bool previous_is_mark = false;
  for (size_t i = 0; i < text.size();) {
    const bool is_mark = text.compare(i, 3, kMark) == 0;
    if (is_mark && !previous_is_mark && i > word_start) {
      encode_word(text.substr(word_start, i - word_start));
      word_start = i;
    }
    previous_is_mark = is_mark;
    i += std::min(utf8::sequence_length(static_cast<uint8_t>(text[i])), text.size() - i);
  }
  if (word_start < text.size()) encode_word(text.substr(word_start));
}

}  // namespace keel::tokenizer
