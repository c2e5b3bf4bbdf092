// GGUF reader: versions 2 and 3, every metadata type (nested arrays too), the tensor table,
// validated before use. Tensor data stays in the read-only mapping and is used in place.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "gguf/mapped_file.h"
#include "quant/types.h"

namespace keel::gguf {

enum class ValueType : uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7, string = 8,
  array = 9, u64 = 10, i64 = 11, f64 = 12,
};
std::string_view value_type_name(ValueType t);

struct Value;
struct Array {
  ValueType elem_type;
  std::vector<Value> items;
};

// One metadata value. Integers keep their signedness; floats are widened to double.
struct Value {
  ValueType type;
  std::variant<uint64_t, int64_t, double, bool, std::string, Array> data;

  bool is_integer() const;
  std::optional<int64_t> as_int() const;     // any integer type (u64 beyond i64 -> nullopt)
  std::optional<double> as_float() const;    // floats and integers
  const std::string* as_string() const;
  const Array* as_array() const;
  std::string to_display(size_t max_items = 8) const;  // for `keel inspect`
};

constexpr int kMaxDims = 4;

struct TensorInfo {
  std::string name;
  quant::Type type;
  uint32_t n_dims;
  uint64_t ne[kMaxDims];   // ggml order: ne[0] is contiguous; unused dims are 1
  uint64_t offset;         // relative to the data section
  uint64_t n_bytes;
  const uint8_t* data;     // into the mapping

  uint64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  uint64_t n_rows() const { return ne[1] * ne[2] * ne[3]; }
  std::string shape_string() const;  // "[256, 512]"
};

class File {
 public:
  // Maps and validates the file; throws keel::Error naming the file, the field and the value.
  static File open(const std::string& path);
  // Validates a GGUF image already in memory (e.g. compiled into the binary); `bytes` must
  // outlive the File and every copy of it. `name` stands for the path in messages.
  static File from_memory(const std::string& name, const uint8_t* bytes, size_t size);

  const std::string& path() const { return name_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return size_; }
  // The bytes before the tensor data: header, metadata and tensor table (what identifies a model).
  const uint8_t* header_bytes() const { return bytes_; }

  const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
  const Value* find(std::string_view key) const;

  // Typed accessors: a present key of the wrong type is an error naming the key.
  std::optional<int64_t> get_int(std::string_view key) const;
  std::optional<double> get_float(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<std::string> get_string(std::string_view key) const;
  const Array* get_array(std::string_view key) const;
  uint32_t get_u32_or(std::string_view key, uint32_t fallback) const;
  float get_f32_or(std::string_view key, float fallback) const;
  uint32_t require_u32(std::string_view key) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;
  const TensorInfo& require_tensor(std::string_view name) const;
  uint64_t tensor_bytes() const;  // sum of all tensors' bytes

 private:
  File() = default;
  static File parse(std::string name, std::shared_ptr<const MappedFile> map, const uint8_t* bytes, size_t size);
  std::string name_;                      // the path, or the name of an in-memory image
  std::shared_ptr<const MappedFile> map_;  // keeps a mapped file alive; null for in-memory images
  const uint8_t* bytes_ = nullptr;         // [size_] the whole GGUF image
  size_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> kv_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace keel::gguf
