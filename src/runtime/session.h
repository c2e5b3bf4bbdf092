// A session: up to n_seqs sequences of one model, with every buffer it will ever use allocated at
// start on one backend (KV page pool, recurrent state per sequence slot and its snapshot slots,
// activations for one forward call, logits, the per-call metadata). A forward call (step) may carry tokens of several
// sequences: decodes of some and a prefill chunk of another. Pages are handed to sequences from
// one shared pool as they grow and return when a sequence is removed or reset.
//
// Pages are reference-counted so that full pages of a common token prefix can be shared without
// copying (the server's prefix cache, server/prefix_cache.h): a sequence's page-table row may
// begin with shared pages, and whoever else keeps a page (the cache) holds a reference of its own.
// A sequence writes only at positions past its shared pages, into pages it took from the free
// stack itself, so a shared page is never written. A page returns to the free stack when its last
// reference goes.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/buffer_set.h"
#include "model/family.h"
#include "model/model.h"
#include "plan/layout.h"

namespace keel::runtime {

struct ChunkProgress {
  int64_t done;     // prompt tokens processed so far
  int64_t total;    // prompt tokens in this prefill
  double seconds;   // since the prefill started
};
// Called after each chunk; return false to stop at this chunk boundary (cancel).
using ProgressFn = std::function<bool(const ChunkProgress&)>;

// One sequence's part of a forward call.
struct SeqInput {
  int32_t seq = 0;                   // a sequence id from add_sequence (0 exists from the start)
  std::span<const int32_t> tokens;   // appended at the sequence's next positions
  bool logits = false;               // return the logits of its last token
};

class Session;

// What a prompt-cache state file holds, read from its header, token list and checkpoint positions
// alone (no model needed): the index of the server's disk cache. Only load_state checks the rest.
struct StateFileInfo {
  std::vector<int32_t> tokens;
  std::vector<int64_t> checkpoints;  // positions of recurrent-state snapshots, ascending
  bool recurrent = false;            // a hybrid model's: restores at its length or a checkpoint only
  uint64_t bytes = 0;                // the file's size
};
// Throws keel::Error when the file cannot be read or is not an intact state file header.
StateFileInfo read_state_file_info(const std::string& path);

// Snapshots of one sequence's recurrent state taken during its prefill (hybrid models), for
// save_state to keep beside the final state: a later prompt that shares only part of the saved
// one resumes from the longest snapshot inside the shared part. They are spooled to an unlinked
// temp file in the directory of the state file, through the session's staging buffer: disk, not
// memory beyond the plan.
class StateCheckpoints {
 public:
  explicit StateCheckpoints(const std::string& state_path);
  ~StateCheckpoints();
  StateCheckpoints(const StateCheckpoints&) = delete;
  StateCheckpoints& operator=(const StateCheckpoints&) = delete;
  size_t count() const { return positions_.size(); }

 private:
  friend class Session;
  std::string dir_;
  int fd_ = -1;
  std::vector<int64_t> positions_;  // n_past of each snapshot, ascending
};

class Session {
 public:
  Session(std::shared_ptr<const model::Model> model, const SessionOptions& options);
  ~Session();

  const model::Model& model() const { return *model_; }
  const SessionLayout& layout() const { return layout_; }
  backend::Backend& backend() { return *backend_; }
  int64_t n_ctx() const { return options_.n_ctx; }
  int64_t chunk() const { return layout_.shape.chunk; }
  // A hybrid model's sequences carry recurrent state (which cannot be cut back to a prefix).
  bool has_recurrent_state() const { return !layout_.state.empty(); }
  uint64_t allocated_bytes() const;

  // ---- several sequences ------------------------------------------------------------------------
  // A free sequence slot, emptied; throws keel::Error when all n_seqs are in use.
  int32_t add_sequence();
  void remove_sequence(int32_t seq);   // its pages return to the pool
  void reset_sequence(int32_t seq);    // empty it (pages back, state cleared), keep the slot
  bool has_sequence(int32_t seq) const;
  int64_t n_past(int32_t seq) const;
  int32_t pages_free() const { return n_free_pages_; }
  int32_t pages_total() const { return static_cast<int32_t>(layout_.shape.kv.n_pages); }
  int32_t page_tokens() const { return static_cast<int32_t>(layout_.shape.kv.page_tokens); }

  // ---- shared pages (prefix reuse) --------------------------------------------------------------
  // The pages of sequence `seq`'s row, in position order (page i holds positions i*page_tokens..).
  std::span<const int32_t> pages_of(int32_t seq) const;
  // References to a page: one per row that lists it plus one per retain_page.
  int32_t page_refs(int32_t page) const;
  // Pages listed by more than one holder (a row and the cache, or two rows).
  int32_t pages_shared() const;
  // Another holder keeps `page` (which a sequence holds now) / lets it go: at no references left
  // it returns to the free stack.
  void retain_page(int32_t page);
  void release_page(int32_t page);
  // Makes the empty sequence `seq` begin with `pages`, full pages of tokens computed before by
  // another sequence (the caller vouches for their contents); n_past becomes pages × page_tokens.
  // A model with recurrent state needs `snapshot` too: the snapshot slot holding the state after
  // exactly those pages' tokens (the caller vouches), restored into the sequence's state, as
  // pages alone cannot restore it. Throws keel::Error.
  void share_pages(int32_t seq, std::span<const int32_t> pages, int32_t snapshot = -1);

  // ---- recurrent-state snapshots (hybrid models; the server's prefix cache) ----------------------
  // SessionOptions::state_snapshots slots planned at start, each holding one sequence's recurrent
  // state at some length. Copies stay on the backend (Backend::copy_rows: device to device on a
  // GPU), so taking one costs a memory copy of snapshot_bytes(), no transfer.
  int32_t snapshot_slots() const { return options_.state_snapshots; }
  uint64_t snapshot_bytes() const { return layout_.state_bytes_per_sequence(); }
  void save_snapshot(int32_t seq, int32_t slot);  // sequence `seq`'s state now -> slot

  // One forward call over every input (at most shape.max_tokens tokens in all, each sequence at
  // most once). Returns the logits rows [n_vocab] of the inputs that asked, in input order (host
  // memory owned by the session, valid until the next call). Throws keel::Error, with nothing
  // changed, when a sequence would outgrow the context or the pool has too few free pages.
  std::span<const float* const> step(std::span<const SeqInput> inputs);

  // ---- sequence 0, as a single-sequence session ---------------------------------------------------
  int64_t n_past() const { return n_past(0); }
  // Appends `tokens` in chunks; returns the logits [n_vocab] of the last token (owned by the
  // session, valid until the next call). Throws keel::Error(cancelled) if progress returns false.
  const float* prefill(std::span<const int32_t> tokens, const ProgressFn& progress = {});
  // Appends one token; returns its logits.
  const float* decode(int32_t token);
  // Appends `tokens` and calls on_logits(i, logits of tokens[i]) for every i (perplexity).
  void evaluate(std::span<const int32_t> tokens, const std::function<void(int64_t, const float*)>& on_logits,
                const ProgressFn& progress = {});
  void reset() { reset_sequence(0); }  // forget sequence 0

  // ---- prompt-cache state files (runtime/state_file.cpp) ----------------------------------------
  // Writes sequence `seq`'s state (its tokens, which the caller tracks, the logits of the last
  // one, its KV pages and recurrent state) to `path` atomically (temp + fsync + rename); nothing
  // is left at `path` or beside it on failure. tokens.size() must equal n_past(seq).
  // checkpoints: recurrent-state snapshots of this prefill (hybrid models), or null.
  void save_state(int32_t seq, std::span<const int32_t> tokens, const float* last_logits, const std::string& path,
                  const StateCheckpoints* checkpoints = nullptr);
  // Appends sequence `seq`'s recurrent state at its current length to `into`.
  void checkpoint_state(int32_t seq, StateCheckpoints& into);
  struct LoadedState {
    int64_t n_reused = 0;           // prompt tokens now in the sequence (0: nothing was usable)
    const float* logits = nullptr;  // when the whole prompt was reused: its last token's logits
    std::string note;               // why nothing (or not everything) was reused
  };
  // Empties `seq`, then fills it from `path` with the longest prefix of `prompt` the file can
  // restore (a hybrid model's recurrent state only at the saved length or at a checkpoint). Another model, KV type
  // or page size, or a prompt that shares no prefix, gives n_reused 0 and a note. A corrupt or
  // truncated file is a keel::Error, and the sequence is left empty.
  LoadedState load_state(int32_t seq, const std::string& path, std::span<const int32_t> prompt);

 private:
  struct Sequence {
    bool active = false;
    int64_t n_past = 0;
    int32_t n_pages = 0;   // pages held, listed in the page-table row of its slot
  };
  void check_seq(int32_t seq) const;
  void release_pages(int32_t seq);
  void check_snapshot(int32_t slot) const;
  // Copies sequence `seq`'s state to snapshot `slot` (to_snapshot) or back.
  void copy_state(int32_t seq, int32_t slot, bool to_snapshot);
  // Pages sequence `seq` lacks to hold `end` tokens; grow_pages hands them over from the free
  // stack (throws keel::Error, with nothing changed, when the pool has too few).
  int64_t pages_missing(int32_t seq, int64_t end) const;
  void grow_pages(int32_t seq, int64_t end);
  // Runs the forward call over the batch arrays already filled for n_tokens / n_seqs.
  void run_batch(int64_t n_tokens, int32_t n_seqs, int64_t n_logit_rows);

  std::shared_ptr<const model::Model> model_;
  SessionOptions options_;
  SessionLayout layout_;
  std::unique_ptr<backend::Backend> backend_;
  backend::BufferSet scratch_;   // on the backend
  backend::BufferSet state_;     // on the backend
  backend::BufferSet snapshots_; // on the backend: layout_.snapshots
  backend::Memory host_;         // the per-call metadata, page bookkeeping and host logits
  std::unique_ptr<model::Forward> forward_;

  // Views into host_ (sizes from the layout).
  int32_t* tokens_ = nullptr;            // [max_tokens]
  int32_t* pos_ = nullptr;               // [max_tokens]
  backend::SeqSlice* slices_ = nullptr;  // [n_seqs]
  int32_t* page_table_ = nullptr;        // [n_seqs, max_pages_per_seq]
  int32_t* logit_rows_ = nullptr;        // [max_logit_rows]
  int32_t* free_pages_ = nullptr;        // [n_pages] stack of free page ids
  int32_t* page_refs_ = nullptr;         // [n_pages] holders of each page (0: on the free stack)
  const float** logit_ptrs_ = nullptr;   // [n_seqs] step()'s answer
  float* host_logits_ = nullptr;         // [max_logit_rows, n_vocab] (the backend's own on the CPU)
  float* logits_ = nullptr;              // [max_logit_rows, n_vocab] in backend memory
  uint8_t* staging_ = nullptr;           // [layout.staging_bytes] state-file transfers
  int32_t n_free_pages_ = 0;
  std::vector<Sequence> seqs_;           // [n_seqs], sized at start
};

}  // namespace keel::runtime
