// Safetensors reader: `u64 header length | JSON header | data`, memory-mapped, validated before
// use (dtype, shape × dtype size = byte range, ranges inside the file). A folder is read as the
// union of its *.safetensors files; model.safetensors.index.json, if present, must agree.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gguf/mapped_file.h"

namespace keel::tools {

enum class StDtype { f32, f16, bf16, f64, i64, i32, i16, i8, u8, boolean, f8_e4m3, f8_e5m2 };

struct StTensor {
  std::string name;
  StDtype dtype;
  std::string dtype_name;         // as in the header: "F32", "BF16", ...
  std::vector<uint64_t> shape;    // PyTorch order: the last dim is contiguous
  const uint8_t* data = nullptr;  // into the mapping
  uint64_t n_bytes = 0;
  std::string file;

  uint64_t n_elements() const;
  uint64_t row_elems() const { return shape.empty() ? 1 : shape.back(); }
  uint64_t n_rows() const { return n_elements() / (row_elems() ? row_elems() : 1); }
  bool is_float() const { return dtype == StDtype::f32 || dtype == StDtype::f16 || dtype == StDtype::bf16; }
};

class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);  // throws keel::Error naming the file
  const std::vector<StTensor>& tensors() const { return tensors_; }

 private:
  std::shared_ptr<gguf::MappedFile> map_;
  std::vector<StTensor> tensors_;
};

class SafetensorsFolder {
 public:
  static SafetensorsFolder open(const std::string& dir);
  const StTensor* find(const std::string& name) const;
  std::vector<const StTensor*> tensors() const;  // sorted by name

 private:
  std::vector<SafetensorsFile> files_;
  std::map<std::string, const StTensor*> by_name_;
};

// out[0..row_elems) = row `row` of t as floats (F32, F16, BF16 only).
void read_row_f32(const StTensor& t, uint64_t row, float* out);

}  // namespace keel::tools
