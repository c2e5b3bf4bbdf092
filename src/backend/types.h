// The vocabulary shared by the families and every backend: devices, weight views, KV geometry,
// RoPE parameters, and the metadata of one forward call (Batch). Includes only quant/.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "quant/types.h"

namespace keel::backend {

enum class Device { host, cuda };
std::string_view device_name(Device device);  // "host", "cuda"

// A named buffer a family, a backend or the session needs; the plan lists them all.
struct BufferSpec {
  std::string name;
  uint64_t bytes;
};

// A 2-D weight (a GGUF tensor) where the backend reads it: mmapped host memory on the CPU,
// device memory once a GPU backend has placed it.
struct WeightView {
  quant::Type type;     // F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q5_K, Q6_K
  const void* data;     // [n_out rows] of row_bytes(type, n_in)
  int64_t n_in;         // ne[0]: elements per row (multiple of the block size)
  int64_t n_out;        // ne[1]: rows
};

// ---- KV cache -------------------------------------------------------------------------------

enum class KvType { f32, f16, q8_0 };
std::string_view kv_type_name(KvType type);
std::optional<KvType> kv_type_from_name(std::string_view name);
quant::Type kv_element_type(KvType type);

// The paged KV pool: n_pages pages per attention layer, shared by every sequence through its
// page table. A page holds page_tokens tokens: K [page_tokens][n_kv_heads][row], then V likewise;
// a row is one head's head_dim values in the cache's element type.
struct KvGeometry {
  KvType type = KvType::f16;
  uint32_t n_layers = 0;     // attention layers only
  uint32_t n_kv_heads = 0;
  uint32_t head_dim = 0;
  uint32_t page_tokens = 256;
  uint32_t n_pages = 0;      // per layer, shared by all sequences

  size_t row_bytes() const { return quant::row_bytes(kv_element_type(type), head_dim); }
  size_t token_bytes() const { return n_kv_heads * row_bytes(); }      // K (or V) of one layer
  size_t page_bytes() const { return 2 * size_t{page_tokens} * token_bytes(); }
  uint64_t capacity_tokens() const { return uint64_t{page_tokens} * n_pages; }
  uint64_t bytes_per_token() const { return 2ull * n_layers * token_bytes(); }  // all layers, K+V
  uint64_t total_bytes() const { return uint64_t{n_layers} * n_pages * page_bytes(); }
};

// ---- RoPE -----------------------------------------------------------------------------------

enum class RopeType { norm, neox };  // NORM: adjacent pairs (llama); NEOX: half-split pairs

// Rotates the first n_rot dims of each head by position * base^(-2i/n_rot) * freq_scale
// (divided by freq_factors[i] when given: llama3 scaling).
struct RopeParams {
  RopeType type;
  int n_rot;
  float base;
  float freq_scale;
  const float* freq_factors;  // [n_rot / 2] in backend memory, or nullptr
};

// Gated DeltaNet: the largest causal conv1d kernel a backend must support.
constexpr int kMaxConvKernel = 16;

// ---- one forward call -----------------------------------------------------------------------

// The tokens of one sequence in a forward call: consecutive in the batch, consecutive positions.
struct SeqSlice {
  int64_t first = 0;      // index of its first token in the batch
  int64_t n_tokens = 0;   // its tokens in this call (1 for a decode, a chunk for a prefill)
  int64_t pos0 = 0;       // position of its first token; it attends to 0 .. pos0 + n_tokens - 1
  int32_t slot = 0;       // the session's sequence slot: page-table row and recurrent-state slot
};

// Everything that varies per forward call, as plain arrays (the session owns them, allocated from
// the plan). A GPU backend uploads them once per call in begin_batch.
struct Batch {
  int64_t n_tokens = 0;
  const int32_t* tokens = nullptr;     // [n_tokens]
  const int32_t* pos = nullptr;        // [n_tokens] position of each token in its sequence
  int32_t n_seqs = 0;
  const SeqSlice* seqs = nullptr;      // [n_seqs], in batch order
  const int32_t* page_table = nullptr; // [n_slots, max_pages_per_seq] page ids; row = SeqSlice::slot
  int32_t max_pages_per_seq = 0;
  int64_t n_logit_rows = 0;
  const int32_t* logit_rows = nullptr; // [n_logit_rows] ascending batch token indices
};

}  // namespace keel::backend
