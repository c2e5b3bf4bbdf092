// Prompt-cache state files: one sequence's tokens, last logits, KV pages and recurrent state.
//
// Layout (little-endian):
//   StateHeader (its own XXH3 hash last)
//   tokens       [n_tokens] int32
//   checkpoints  [n_checkpoints] int64  positions of the recurrent-state snapshots, ascending
//   logits       [n_vocab] f32          of the last token
//   pages        for each attention layer, the ceil(n_tokens / page_tokens) pages of the sequence
//   state        for each recurrent-state buffer, the sequence's slot
//   snapshots    for each checkpoint, the state as above at that position
//   body hash: XXH3-64 of everything between the header and this field
// A file is read in page-sized pieces through the session's planned staging buffer straight into
// the sequence's pages and state; a wrong hash anywhere leaves the sequence empty.
#define XXH_STATIC_LINKING_ONLY
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <vector>

#include "keel/error.h"
#include "runtime/session.h"

namespace keel::runtime {
namespace {

constexpr char kMagic[8] = {'K', 'E', 'E', 'L', 'S', 'T', 'A', 'T'};
constexpr uint32_t kVersion = 2;  // 2: recurrent-state checkpoints

struct StateHeader {
  char magic[8];
  uint32_t version;
  uint32_t kv_type;
  uint64_t model_hash;     // XXH3 of the GGUF's header, metadata and tensor table
  uint32_t page_tokens;
  uint32_t n_attn_layers;
  uint32_t n_kv_heads;
  uint32_t head_dim;
  uint64_t n_tokens;
  uint64_t page_bytes;
  uint64_t state_bytes;    // one sequence's recurrent state, all buffers
  uint32_t n_vocab;
  uint32_t n_checkpoints;
  uint64_t header_hash;    // XXH3 of the fields above
};
static_assert(sizeof(StateHeader) == 80);

std::string errno_text() { return std::strerror(errno); }

uint64_t model_hash(const model::Model& m) {
  return XXH3_64bits(m.file().header_bytes(), static_cast<size_t>(m.file().data_offset()));
}

// An fd that closes itself.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// The temp file of an atomic write: removed unless committed.
struct TempFile {
  std::string path;
  bool committed = false;
  ~TempFile() {
    if (!committed && !path.empty()) ::unlink(path.c_str());
  }
};

class HashedWriter {
 public:
  // what: the file as error messages name it.
  HashedWriter(int fd, std::string what) : fd_(fd), what_(std::move(what)) { XXH3_64bits_reset(&hash_); }
  void write(const void* data, size_t n, bool hashed = true) {
    if (hashed) XXH3_64bits_update(&hash_, data, n);
    const auto* p = static_cast<const uint8_t*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) throw Error("cannot write " + what_ + ": " + (w < 0 ? errno_text() : "short write"));
      p += w;
      n -= static_cast<size_t>(w);
    }
  }
  uint64_t digest() const { return XXH3_64bits_digest(&hash_); }

 private:
  int fd_;
  std::string what_;
  XXH3_state_t hash_;
};

class HashedReader {
 public:
  HashedReader(int fd, std::string path) : fd_(fd), path_(std::move(path)) { XXH3_64bits_reset(&hash_); }
  void read(void* data, size_t n) {
    auto* p = static_cast<uint8_t*>(data);
    size_t left = n;
    while (left > 0) {
      const ssize_t r = ::read(fd_, p, left);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) throw Error("cannot read the prompt cache " + path_ + ": " + errno_text());
      if (r == 0) throw Error("the prompt cache " + path_ + " is truncated; delete it (it is recomputed)");
      p += r;
      left -= static_cast<size_t>(r);
    }
    XXH3_64bits_update(&hash_, data, n);
  }
  uint64_t digest() const { return XXH3_64bits_digest(&hash_); }

 private:
  int fd_;
  std::string path_;
  XXH3_state_t hash_;
};

void pread_all(int fd, void* data, size_t n, uint64_t offset, const std::string& what) {
  auto* p = static_cast<uint8_t*>(data);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) throw Error("cannot read " + what + ": " + (r < 0 ? errno_text() : "unexpected end"));
    p += r;
    offset += static_cast<uint64_t>(r);
    n -= static_cast<size_t>(r);
  }
}

}  // namespace

StateFileInfo read_state_file_info(const std::string& path) {
  Fd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd < 0) throw Error("cannot open the prompt cache " + path + ": " + errno_text());
  StateHeader h{};
  HashedReader in(fd.fd, path);
  in.read(&h, sizeof h);
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0) throw Error(path + " is not a keel prompt cache (bad magic)");
  if (h.header_hash != XXH3_64bits(&h, offsetof(StateHeader, header_hash)))
    throw Error("the prompt cache " + path + " is corrupt (header checksum)");
  if (h.version != kVersion) throw Error("the prompt cache " + path + " has format version " + std::to_string(h.version));
  struct stat st{};
  if (::fstat(fd.fd, &st) != 0) throw Error("cannot stat the prompt cache " + path + ": " + errno_text());
  const uint64_t lists = h.n_tokens * sizeof(int32_t) + uint64_t{h.n_checkpoints} * sizeof(int64_t);
  if (h.n_tokens == 0 || sizeof h + lists > static_cast<uint64_t>(st.st_size))
    throw Error("the prompt cache " + path + " is truncated");
  StateFileInfo info;
  info.tokens.resize(h.n_tokens);
  in.read(info.tokens.data(), info.tokens.size() * sizeof(int32_t));
  info.checkpoints.resize(h.n_checkpoints);
  if (!info.checkpoints.empty()) in.read(info.checkpoints.data(), info.checkpoints.size() * sizeof(int64_t));
  info.recurrent = h.state_bytes > 0;
  info.bytes = static_cast<uint64_t>(st.st_size);
  return info;
}

StateCheckpoints::StateCheckpoints(const std::string& state_path) {
  const size_t slash = state_path.rfind('/');
  dir_ = slash == std::string::npos ? "." : slash == 0 ? "/" : state_path.substr(0, slash);
  std::string name = dir_ + "/.keel-checkpoints-XXXXXX";
  fd_ = ::mkstemp(name.data());
  if (fd_ < 0) throw Error("cannot create a checkpoint spool in " + dir_ + ": " + errno_text());
  ::unlink(name.c_str());  // gone with the descriptor, whatever happens
}

StateCheckpoints::~StateCheckpoints() {
  if (fd_ >= 0) ::close(fd_);
}

void Session::checkpoint_state(int32_t seq, StateCheckpoints& into) {
  check_seq(seq);
  const int64_t at = seqs_[static_cast<size_t>(seq)].n_past;
  if (at == 0 || (!into.positions_.empty() && into.positions_.back() >= at))
    throw Error("internal: checkpoints must follow the sequence forward");
  const auto n_seqs = static_cast<uint64_t>(layout_.shape.n_seqs);
  HashedWriter spool(into.fd_, "the checkpoint spool in " + into.dir_);
  for (const auto& b : layout_.state) {
    const uint64_t slot = b.bytes / n_seqs;
    backend_->download(state_.get(b.name) + slot * static_cast<uint64_t>(seq), staging_, slot);
    spool.write(staging_, slot, /*hashed=*/false);
  }
  into.positions_.push_back(at);
}

void Session::save_state(int32_t seq, std::span<const int32_t> tokens, const float* last_logits,
                         const std::string& path, const StateCheckpoints* checkpoints) {
  check_seq(seq);
  const Sequence& s = seqs_[static_cast<size_t>(seq)];
  if (static_cast<int64_t>(tokens.size()) != s.n_past || s.n_past == 0)
    throw Error("internal: saving " + std::to_string(tokens.size()) + " tokens of a sequence holding " +
                std::to_string(s.n_past));
  const model::SessionShape& shape = layout_.shape;
  const uint32_t n_vocab = model_->hparams().n_vocab;
  StateHeader h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kVersion;
  h.kv_type = static_cast<uint32_t>(shape.kv.type);
  h.model_hash = model_hash(*model_);
  h.page_tokens = shape.kv.page_tokens;
  h.n_attn_layers = shape.kv.n_layers;
  h.n_kv_heads = shape.kv.n_kv_heads;
  h.head_dim = shape.kv.head_dim;
  h.n_tokens = tokens.size();
  h.page_bytes = shape.kv.page_bytes();
  for (const auto& b : layout_.state) h.state_bytes += b.bytes / static_cast<uint64_t>(shape.n_seqs);
  h.n_vocab = n_vocab;
  h.n_checkpoints = checkpoints && h.state_bytes > 0 ? static_cast<uint32_t>(checkpoints->count()) : 0;
  h.header_hash = XXH3_64bits(&h, offsetof(StateHeader, header_hash));

  TempFile temp{path + ".tmp." + std::to_string(::getpid())};
  Fd fd{::open(temp.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  if (fd.fd < 0) throw Error("cannot create the prompt cache " + temp.path + ": " + errno_text());
  HashedWriter out(fd.fd, "the prompt cache " + temp.path);
  out.write(&h, sizeof h, /*hashed=*/false);
  out.write(tokens.data(), tokens.size_bytes());
  if (h.n_checkpoints > 0) {
    for (int64_t at : checkpoints->positions_)
      if (at >= s.n_past) throw Error("internal: a checkpoint beyond the saved tokens");
    out.write(checkpoints->positions_.data(), checkpoints->positions_.size() * sizeof(int64_t));
  }
  out.write(last_logits, size_t{n_vocab} * sizeof(float));
  const int32_t* row = page_table_ + int64_t{seq} * layout_.max_pages_per_seq;
  const int64_t n_pages = (s.n_past + shape.kv.page_tokens - 1) / shape.kv.page_tokens;
  for (uint32_t layer = 0; layer < shape.kv.n_layers; ++layer)
    for (int64_t p = 0; p < n_pages; ++p) {
      backend_->read_kv_page(layer, row[p], staging_);
      out.write(staging_, h.page_bytes);
    }
  for (const auto& b : layout_.state) {
    const uint64_t slot = b.bytes / static_cast<uint64_t>(shape.n_seqs);
    backend_->download(state_.get(b.name) + slot * static_cast<uint64_t>(seq), staging_, slot);
    out.write(staging_, slot);
  }
  const uint64_t spooled = uint64_t{h.n_checkpoints} * h.state_bytes;
  for (uint64_t at = 0; at < spooled;) {
    const uint64_t n = std::min<uint64_t>(layout_.staging_bytes, spooled - at);
    pread_all(checkpoints->fd_, staging_, n, at, "the checkpoint spool in " + checkpoints->dir_);
    out.write(staging_, n);
    at += n;
  }
  const uint64_t body = out.digest();
  out.write(&body, sizeof body, false);
  if (::fsync(fd.fd) != 0) throw Error("fsync of " + temp.path + " failed: " + errno_text());
  if (::close(fd.fd) != 0) {
    fd.fd = -1;
    throw Error("cannot close " + temp.path + ": " + errno_text());
  }
  fd.fd = -1;
  if (::rename(temp.path.c_str(), path.c_str()) != 0)
    throw Error("cannot rename " + temp.path + " to " + path + ": " + errno_text());
  temp.committed = true;
}

Session::LoadedState Session::load_state(int32_t seq, const std::string& path, std::span<const int32_t> prompt) {
  reset_sequence(seq);
  LoadedState result;
  Fd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd < 0) {
    result.note = "no prompt cache at " + path;
    return result;
  }
  StateHeader h{};
  HashedReader header(fd.fd, path);
  header.read(&h, sizeof h);
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0)
    throw Error(path + " is not a keel prompt cache (bad magic); delete it or name another file");
  if (h.header_hash != XXH3_64bits(&h, offsetof(StateHeader, header_hash)))
    throw Error("the prompt cache " + path + " is corrupt (header checksum); delete it (it is recomputed)");
  const model::SessionShape& shape = layout_.shape;
  const uint32_t n_vocab = model_->hparams().n_vocab;
  uint64_t state_bytes = 0;
  for (const auto& b : layout_.state) state_bytes += b.bytes / static_cast<uint64_t>(shape.n_seqs);
  auto mismatch = [&](const std::string& what) {
    result.note = "the prompt cache " + path + " " + what + ": the prompt is computed afresh";
    return result;
  };
  if (h.version != kVersion) return mismatch("has format version " + std::to_string(h.version));
  if (h.model_hash != model_hash(*model_)) return mismatch("was made with another model file");
  if (h.kv_type != static_cast<uint32_t>(shape.kv.type))
    return mismatch("holds a " + std::string(kv_type_name(static_cast<KvType>(h.kv_type < 3 ? h.kv_type : 0))) +
                    " KV cache, this session's is " + std::string(kv_type_name(shape.kv.type)));
  if (h.page_tokens != shape.kv.page_tokens || h.n_attn_layers != shape.kv.n_layers ||
      h.n_kv_heads != shape.kv.n_kv_heads || h.head_dim != shape.kv.head_dim || h.page_bytes != shape.kv.page_bytes() ||
      h.state_bytes != state_bytes || h.n_vocab != n_vocab)
    return mismatch("has another KV page size or layout (page of " + std::to_string(h.page_tokens) + " tokens)");
  if (h.n_tokens == 0 || h.n_tokens > static_cast<uint64_t>(options_.n_ctx))
    return mismatch("holds " + std::to_string(h.n_tokens) + " tokens, more than this session's context");
  const int64_t n_pages = (static_cast<int64_t>(h.n_tokens) + shape.kv.page_tokens - 1) / shape.kv.page_tokens;
  if (h.n_checkpoints > 0 && h.state_bytes == 0)
    throw Error("the prompt cache " + path + " is corrupt (checkpoints without a recurrent state); delete it (it is recomputed)");
  const uint64_t expected = sizeof h + h.n_tokens * sizeof(int32_t) + uint64_t{h.n_checkpoints} * sizeof(int64_t) +
                            uint64_t{n_vocab} * sizeof(float) +
                            uint64_t{h.n_attn_layers} * static_cast<uint64_t>(n_pages) * h.page_bytes +
                            (1 + uint64_t{h.n_checkpoints}) * h.state_bytes + sizeof(uint64_t);
  struct stat st{};
  if (::fstat(fd.fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != expected)
    throw Error("the prompt cache " + path + " is truncated or too long (" + std::to_string(st.st_size) + " bytes, " +
                std::to_string(expected) + " expected); delete it (it is recomputed)");

  // How much of the prompt the file restores: the common prefix; a recurrent state only at its
  // saved length; at least one prompt token left to compute unless the saved logits are its own.
  HashedReader body(fd.fd, path);
  const auto n_saved = static_cast<int64_t>(h.n_tokens), n_prompt = static_cast<int64_t>(prompt.size());
  int64_t common = 0;
  bool diverged = false;
  const int64_t block = std::max<int64_t>(1, static_cast<int64_t>(layout_.staging_bytes / sizeof(int32_t)));
  auto* ids = reinterpret_cast<int32_t*>(staging_);
  for (int64_t at = 0; at < n_saved; at += block) {
    const int64_t n = std::min(block, n_saved - at);
    body.read(ids, static_cast<size_t>(n) * sizeof(int32_t));
    for (int64_t i = 0; i < n && !diverged; ++i) {
      if (at + i < n_prompt && ids[i] == prompt[static_cast<size_t>(at + i)]) ++common;
      else diverged = true;
    }
  }
  // Checkpoint positions: ascending, inside the saved tokens (read before deciding anything).
  std::vector<int64_t> checkpoints(h.n_checkpoints);
  if (!checkpoints.empty()) body.read(checkpoints.data(), checkpoints.size() * sizeof(int64_t));
  for (size_t i = 0; i < checkpoints.size(); ++i)
    if (checkpoints[i] <= (i ? checkpoints[i - 1] : 0) || checkpoints[i] >= n_saved)
      throw Error("the prompt cache " + path + " is corrupt (checkpoint positions); delete it (it is recomputed)");
  const bool hybrid = h.state_bytes > 0;
  int64_t reuse = 0;
  bool whole = false;     // the whole prompt restored: the saved logits are its last token's
  int64_t snapshot = -1;  // the checkpoint restored (-1: the final state)
  if (hybrid) {           // a recurrent state restores only at its saved length or a checkpoint
    if (common == n_saved) {
      reuse = n_saved;
      whole = n_saved == n_prompt;
    } else {
      for (size_t i = 0; i < checkpoints.size(); ++i)
        if (checkpoints[i] <= common && checkpoints[i] < n_prompt) {
          reuse = checkpoints[i];
          snapshot = static_cast<int64_t>(i);
        }
    }
  } else {
    reuse = common;
    if (reuse == n_prompt && n_prompt > 0) {  // (an empty prompt restores nothing)
      if (n_saved == n_prompt) whole = true;
      else reuse = n_prompt - 1;  // compute the last prompt token again for its logits
    }
  }
  float* logits = host_logits_;  // row 0 is free between forward calls
  body.read(logits, size_t{n_vocab} * sizeof(float));

  Sequence& s = seqs_[static_cast<size_t>(seq)];
  if (pages_missing(seq, reuse) > n_free_pages_) {
    reuse = 0;
    result.note = "the KV page pool has too few free pages for the prompt cache";
  }
  grow_pages(seq, reuse);
  const int32_t* row = page_table_ + int64_t{seq} * layout_.max_pages_per_seq;
  try {
    for (uint32_t layer = 0; layer < h.n_attn_layers; ++layer)
      for (int64_t p = 0; p < n_pages; ++p) {
        body.read(staging_, h.page_bytes);
        if (p < s.n_pages) backend_->write_kv_page(layer, row[p], staging_);
      }
    for (int64_t which = -1; which < static_cast<int64_t>(checkpoints.size()); ++which)
      for (const auto& b : layout_.state) {
        const uint64_t slot = b.bytes / static_cast<uint64_t>(shape.n_seqs);
        body.read(staging_, slot);
        if (reuse > 0 && which == snapshot)
          backend_->upload(staging_, state_.get(b.name) + slot * static_cast<uint64_t>(seq), slot);
      }
    uint64_t stored = 0;
    const uint64_t digest = body.digest();
    HashedReader tail(fd.fd, path);
    tail.read(&stored, sizeof stored);
    if (stored != digest)
      throw Error("the prompt cache " + path + " is corrupt (checksum of its contents); delete it (it is recomputed)");
  } catch (...) {
    reset_sequence(seq);
    throw;
  }
  if (reuse == 0) {
    reset_sequence(seq);
    if (result.note.empty())
      result.note = "the prompt cache " + path + " shares no usable prefix with this prompt (" +
                    std::to_string(common) + " of its " + std::to_string(n_saved) + " tokens match" +
                    (hybrid ? "; a hybrid model's state restores only at its saved length or a checkpoint" : "") + ")";
    return result;
  }
  s.n_past = reuse;
  result.n_reused = reuse;
  if (whole) result.logits = logits;
  return result;
}

}  // namespace keel::runtime
