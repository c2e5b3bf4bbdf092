// Writes a GGUF from a list of tensor jobs, streaming: each tensor is produced in batches of rows
// by a pool of threads (float rows from a source, quantized to the record's type, or rows already
// in that type) or copied as raw bytes, and handed to the gguf::Writer batch by batch. No tensor is ever held whole in
// memory as F32; peak memory is a few MB of batch buffers per thread. Shared by `keel quantize`,
// `keel synth` and `keel convert`.
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "gguf/writer.h"

namespace keel::tools {

// Fills out[0..shape[0]) with row `row` of the tensor (rows counted over shape[1..]). Called
// concurrently from several threads: it must be thread-safe and deterministic per row.
using RowSource = std::function<void(uint64_t row, float* out)>;
// Fills out[0..row_bytes) with row `row` already in the record's type; the same rules.
using EncodedRowSource = std::function<void(uint64_t row, void* out)>;

struct TensorJob {
  gguf::TensorRecord record;      // output name, type, shape
  const uint8_t* raw = nullptr;   // if set: record.n_bytes() bytes copied verbatim
  EncodedRowSource encoded_rows;  // else if set: rows in record.type, written as they come
  RowSource rows;                 // otherwise: float rows quantized to record.type
  std::string note;               // shown in the tensor table ("requantized from q8_0", ...)
};

struct WriteOptions {
  int n_threads = 0;       // <= 0: hardware concurrency
  bool progress = true;    // progress bar on stderr when it is a terminal
};

struct WriteSummary {
  uint64_t file_bytes = 0;
  uint64_t tensor_bytes = 0;   // without header and padding
  uint64_t n_elements = 0;
  double seconds = 0;          // planning the layout to the committed file, fsync included
  int n_threads = 0;           // the pool's threads
  double bits_per_weight() const { return n_elements ? 8.0 * tensor_bytes / n_elements : 0; }
};

std::vector<gguf::TensorRecord> records_of(const std::vector<TensorJob>& jobs);

// Writes `path` atomically (see gguf::Writer); Ctrl-C stops it with keel::Error(cancelled) and
// leaves no file behind.
WriteSummary write_model(const std::string& path, const gguf::Metadata& metadata, const std::vector<TensorJob>& jobs,
                         const WriteOptions& options);

// The tensor table and totals a write would produce, without writing (for --dry-run).
WriteSummary summarize(const gguf::Metadata& metadata, const std::vector<TensorJob>& jobs);
void print_tensor_table(std::FILE* out, const gguf::Metadata& metadata, const std::vector<TensorJob>& jobs);

std::string format_bytes(uint64_t bytes);  // "19.22 GB (17.90 GiB)"

// This process's peak resident set (VmHWM of /proc/self/status); 0 where unknown.
uint64_t peak_rss_bytes();

}  // namespace keel::tools
