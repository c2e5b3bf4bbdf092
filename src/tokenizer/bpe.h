// Byte-level BPE (tokenizer.ggml.model = gpt2) on one pre-tokenized piece, as llama.cpp runs
// it: each byte starts as the symbol of its byte-level character, then the adjacent pair with
// the lowest merge rank (ties: leftmost) is merged until no ranked pair is left.
// Symbols are ids: vocabulary ids, plus ids past the vocabulary for merge texts it lacks, so
// merge ranks are keyed by a pair of ints and no string is built while encoding.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/byte_level.h"
#include "tokenizer/piece_index.h"
#include "tokenizer/vocab.h"

namespace keel::tokenizer {

class BpeModel {
 public:
  BpeModel() = default;
  // `merges` in rank order (index = rank), each as (left text, right text).
  BpeModel(const Vocab& vocab, const std::vector<std::pair<std::string, std::string>>& merges,
           bool ignore_merges);

  struct Scratch;  // reusable buffers for one encode call
  // Appends the ids of one piece of raw bytes.
  void encode_piece(const Vocab& vocab, std::string_view bytes, std::vector<int32_t>& out,
                    Scratch& scratch) const;
  size_t n_merges() const { return merges_.size(); }
  const ByteLevel& byte_level() const { return byte_level_; }

  struct Symbol {
    int32_t id;          // symbol id
    int32_t prev, next;  // neighbours in the piece, -1 at the ends
  };
  struct Candidate {
    int32_t rank, left, right;  // left/right: symbol positions
    int32_t left_id, right_id;  // their ids when queued (to drop stale candidates)
  };
  struct Scratch {
    std::vector<Symbol> symbols;
    std::vector<Candidate> queue;
    std::string encoded;
  };

 private:
  int32_t intern(const Vocab& vocab, const std::string& text);
  void push_candidate(int32_t left, int32_t right, Scratch& s) const;

  int32_t n_vocab_ = 0;
  PieceIndex extra_index_;               // texts of merge symbols not in the vocabulary
  std::vector<std::string> extra_text_;  // [id - n_vocab]
  MergeTable merges_;
  std::array<int32_t, 256> byte_symbol_{};
  ByteLevel byte_level_;
  bool ignore_merges_ = false;
};

}  // namespace keel::tokenizer
