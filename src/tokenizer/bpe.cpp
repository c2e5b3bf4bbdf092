#include "tokenizer/bpe.h"

#include <algorithm>

namespace keel::tokenizer {

namespace {
// Min-heap order for std::push_heap/pop_heap: the lowest rank on top, ties to the leftmost.
struct CandidateAfter {
  bool operator()(const BpeModel::Candidate& a, const BpeModel::Candidate& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
};
}  // namespace

int32_t BpeModel::intern(const Vocab& vocab, const std::string& text) {
  if (int32_t id = vocab.index.find(text); id >= 0) return id;
  if (int32_t k = extra_index_.find(text); k >= 0) return n_vocab_ + k;
  const auto k = static_cast<int32_t>(extra_text_.size());
  extra_text_.push_back(text);
  extra_index_.insert_or_assign(text, k);
  return n_vocab_ + k;
}

BpeModel::BpeModel(const Vocab& vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                   bool ignore_merges)
    : n_vocab_(vocab.n_vocab()), ignore_merges_(ignore_merges) {
  for (int b = 0; b < 256; ++b) byte_symbol_[b] = intern(vocab, byte_level_.encode(static_cast<uint8_t>(b)));
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    if (left.empty() || right.empty()) continue;
    const int32_t l = intern(vocab, left), r = intern(vocab, right);
    const int32_t result = intern(vocab, left + right);
    merges_.insert_if_absent(l, r, {static_cast<int32_t>(rank), result});
  }
}

void BpeModel::push_candidate(int32_t left, int32_t right, Scratch& s) const {
  if (left < 0 || right < 0) return;
  const int32_t l = s.symbols[left].id, r = s.symbols[right].id;
  const Merge m = merges_.find(l, r);
  if (m.rank < 0) return;
  s.queue.push_back({m.rank, left, right, l, r});
  std::push_heap(s.queue.begin(), s.queue.end(), CandidateAfter{});
}

void BpeModel::encode_piece(const Vocab& vocab, std::string_view bytes, std::vector<int32_t>& out,
                            Scratch& s) const {
  if (bytes.empty()) return;
  if (ignore_merges_) {
    s.encoded.clear();
    for (char c : bytes) s.encoded += byte_level_.encode(static_cast<uint8_t>(c));
    if (int32_t id = vocab.index.find(s.encoded); id >= 0) {
      out.push_back(id);
      return;
    }
  }

  s.symbols.clear();
  s.queue.clear();
  const auto n = static_cast<int32_t>(bytes.size());
  for (int32_t i = 0; i < n; ++i)
    s.symbols.push_back({byte_symbol_[static_cast<uint8_t>(bytes[i])], i - 1, i + 1 < n ? i + 1 : -1});
  for (int32_t i = 1; i < n; ++i) push_candidate(i - 1, i, s);

  while (!s.queue.empty()) {
    std::pop_heap(s.queue.begin(), s.queue.end(), CandidateAfter{});
    const Candidate c = s.queue.back();
    s.queue.pop_back();
    Symbol& left = s.symbols[c.left];
    Symbol& right = s.symbols[c.right];
    // Symbols only grow, so unchanged ids on both sides mean the pair is still adjacent and current.
    if (left.id != c.left_id || right.id != c.right_id || left.next != c.right) continue;
    left.id = merges_.find(c.left_id, c.right_id).result;
    right.id = -1;
    left.next = right.next;
    if (right.next >= 0) s.symbols[right.next].prev = c.left;
    push_candidate(left.prev, c.left, s);
    push_candidate(c.left, left.next, s);
  }

  for (int32_t i = 0; i != -1; i = s.symbols[i].next) {
    const int32_t id = s.symbols[i].id;
    if (id < n_vocab_) {
      out.push_back(id);
      continue;
    }
    // A merge result the vocabulary lacks: llama.cpp looks each of its bytes up on its own.
    for (char c : extra_text_[id - n_vocab_]) {
      const int32_t byte_id = vocab.index.find(std::string_view(&c, 1));
      if (byte_id >= 0) out.push_back(byte_id);
    }
  }
}

}  // namespace keel::tokenizer
