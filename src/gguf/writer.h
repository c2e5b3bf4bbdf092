// GGUF writer (v3): metadata of every type (nested arrays too), the tensor table, aligned tensor
// data streamed tensor by tensor, and atomic output: everything goes to `OUT.tmp.<pid>`, which is
// fsynced and renamed onto OUT only by commit(). A writer destroyed before commit() (an error, an
// exception, Ctrl-C turned into keel::Error) removes its temp file, so no partial OUT ever exists.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gguf/gguf.h"
#include "quant/types.h"

namespace keel::gguf {

// ---- metadata values ------------------------------------------------------------------------

Value value_u8(uint8_t v);
Value value_i8(int8_t v);
Value value_u16(uint16_t v);
Value value_i16(int16_t v);
Value value_u32(uint32_t v);
Value value_i32(int32_t v);
Value value_u64(uint64_t v);
Value value_i64(int64_t v);
Value value_f32(float v);
Value value_f64(double v);
Value value_bool(bool v);
Value value_string(std::string v);
Value value_array(ValueType elem_type, std::vector<Value> items);  // items must all be elem_type
Value value_string_array(const std::vector<std::string>& items);

// Ordered key/value list; set() replaces a key in place, so the order of first insertion stays.
class Metadata {
 public:
  void set(const std::string& key, Value value);
  const Value* find(std::string_view key) const;
  bool erase(std::string_view key);
  const std::vector<std::pair<std::string, Value>>& items() const { return items_; }

 private:
  std::vector<std::pair<std::string, Value>> items_;
};

// One entry of the tensor table.
struct TensorRecord {
  std::string name;
  quant::Type type = quant::Type::F32;
  std::vector<uint64_t> shape;  // ggml order, 1..4 dims; shape[0] a multiple of the block size

  uint64_t n_rows() const;      // product of shape[1..]
  uint64_t row_bytes() const;   // bytes of one row of shape[0] elements
  uint64_t n_bytes() const { return n_rows() * row_bytes(); }
};

// Everything before the tensor data; sizes follow from it without writing anything.
struct Layout {
  uint64_t alignment = 32;            // general.alignment if set, else 32
  uint64_t header_bytes = 0;          // magic .. end of the tensor table (unpadded)
  uint64_t data_offset = 0;           // header_bytes rounded up to the alignment
  std::vector<uint64_t> offsets;      // per tensor, relative to data_offset
  uint64_t data_bytes = 0;            // tensor data incl. padding between tensors
  uint64_t file_bytes() const { return data_offset + data_bytes; }
};

// Validates names, shapes and types and computes the layout; throws keel::Error.
Layout plan_layout(const Metadata& metadata, const std::vector<TensorRecord>& tensors);

class Writer {
 public:
  // Creates `path.tmp.<pid>` and writes the header; tensor data follows through write().
  Writer(std::string path, const Metadata& metadata, std::vector<TensorRecord> tensors);
  ~Writer();  // removes the temp file unless commit() succeeded
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Appends bytes to the data of the tensors, in table order. A call may not run past the end
  // of the current tensor; when a tensor is complete the padding is written and the next begins.
  void write(const void* data, size_t n);
  size_t current_tensor() const { return current_; }   // index of the tensor being written
  uint64_t current_remaining() const;                  // bytes still owed to it

  // All tensors must be complete: flush, fsync, rename onto the final path, fsync the folder.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }
  const Layout& layout() const { return layout_; }

 private:
  void put(const void* data, size_t n);  // buffered
  void flush();
  void write_all(const uint8_t* p, size_t n);  // to the file, retrying short writes
  void pad_to(uint64_t file_offset);
  void fail(const std::string& what) const;

  std::string path_, temp_path_;
  std::vector<TensorRecord> tensors_;
  Layout layout_;
  int fd_ = -1;
  bool committed_ = false;
  std::vector<uint8_t> buffer_;
  uint64_t file_pos_ = 0;  // bytes handed to put() so far
  size_t current_ = 0;
  uint64_t written_in_current_ = 0;
};

}  // namespace keel::gguf
