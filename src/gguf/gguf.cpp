#include "gguf/gguf.h"

#include <cmath>
#include <cstring>
#include <sstream>

#include "keel/error.h"

namespace keel::gguf {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr int kMaxArrayDepth = 8;
// Metadata arrays are vocabularies and merges (< 1M items in every real model); the limit keeps a
// corrupt count from turning into a huge allocation.
constexpr uint64_t kMaxArrayItems = uint64_t{1} << 24;

// Bounds-checked little-endian reader over the mapping; every failure names the file and field.
class Cursor {
 public:
  Cursor(const std::string& path, const uint8_t* data, size_t size)
      : path_(path), data_(data), size_(size) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(path_ + ": " + what + " (at byte offset " + std::to_string(pos_) + ")");
  }

  void need(size_t n, const std::string& field) {
    if (n > remaining())
      fail("truncated file: " + field + " needs " + std::to_string(n) + " bytes, only " +
           std::to_string(remaining()) + " remain");
  }

  template <typename T>
  T read(const std::string& field) {
    need(sizeof(T), field);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const std::string& field) {
    uint64_t len = read<uint64_t>(field + " length");
    if (len > remaining())
      fail(field + " has length " + std::to_string(len) + ", beyond the end of the file (" +
           std::to_string(remaining()) + " bytes remain)");
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return s;
  }

 private:
  const std::string& path_;
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// The smallest encoding of one value of a type, to bound array counts before allocating.
size_t min_value_bytes(ValueType t) {
  switch (t) {
    case ValueType::u8: case ValueType::i8: case ValueType::boolean: return 1;
    case ValueType::u16: case ValueType::i16: return 2;
    case ValueType::u32: case ValueType::i32: case ValueType::f32: return 4;
    case ValueType::u64: case ValueType::i64: case ValueType::f64: return 8;
    case ValueType::string: return 8;
    case ValueType::array: return 12;
  }
  return 1;
}

bool valid_value_type(uint32_t t) { return t <= 12; }

Value read_value(Cursor& c, ValueType type, const std::string& field, int depth) {
  Value v{type, uint64_t{0}};
  switch (type) {
    case ValueType::u8: v.data = uint64_t{c.read<uint8_t>(field)}; break;
    case ValueType::u16: v.data = uint64_t{c.read<uint16_t>(field)}; break;
    case ValueType::u32: v.data = uint64_t{c.read<uint32_t>(field)}; break;
    case ValueType::u64: v.data = c.read<uint64_t>(field); break;
    case ValueType::i8: v.data = int64_t{c.read<int8_t>(field)}; break;
    case ValueType::i16: v.data = int64_t{c.read<int16_t>(field)}; break;
    case ValueType::i32: v.data = int64_t{c.read<int32_t>(field)}; break;
    case ValueType::i64: v.data = c.read<int64_t>(field); break;
    case ValueType::f32: v.data = double{c.read<float>(field)}; break;
    case ValueType::f64: v.data = c.read<double>(field); break;
    case ValueType::boolean: {
      uint8_t b = c.read<uint8_t>(field);
      if (b > 1) c.fail(field + ": invalid bool value " + std::to_string(b));
      v.data = b != 0;
      break;
    }
    case ValueType::string: v.data = c.read_string(field); break;
    case ValueType::array: {
      if (depth >= kMaxArrayDepth) c.fail(field + ": arrays nested deeper than " + std::to_string(kMaxArrayDepth));
      uint32_t et = c.read<uint32_t>(field + " element type");
      if (!valid_value_type(et)) c.fail(field + ": unknown array element type " + std::to_string(et));
      uint64_t count = c.read<uint64_t>(field + " element count");
      ValueType elem = static_cast<ValueType>(et);
      if (count > c.remaining() / min_value_bytes(elem))
        c.fail(field + ": array count " + std::to_string(count) + " is beyond the end of the file");
      if (count > kMaxArrayItems)
        c.fail(field + ": array count " + std::to_string(count) + " exceeds keel's limit of " +
               std::to_string(kMaxArrayItems) + " items");
      Array arr{elem, {}};
      arr.items.reserve(static_cast<size_t>(count));
      for (uint64_t i = 0; i < count; ++i) arr.items.push_back(read_value(c, elem, field, depth + 1));
      v.data = std::move(arr);
      break;
    }
  }
  return v;
}

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

}  // namespace

std::string_view value_type_name(ValueType t) {
  static constexpr std::string_view names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                               "bool", "string", "array", "u64", "i64", "f64"};
  auto i = static_cast<uint32_t>(t);
  return i < 13 ? names[i] : "?";
}

bool Value::is_integer() const {
  return std::holds_alternative<uint64_t>(data) || std::holds_alternative<int64_t>(data);
}

std::optional<int64_t> Value::as_int() const {
  if (auto* u = std::get_if<uint64_t>(&data)) {
    if (*u > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<int64_t>(*u);
  }
  if (auto* i = std::get_if<int64_t>(&data)) return *i;
  return std::nullopt;
}

std::optional<double> Value::as_float() const {
  if (auto* d = std::get_if<double>(&data)) return *d;
  if (auto i = as_int()) return static_cast<double>(*i);
  return std::nullopt;
}

const std::string* Value::as_string() const { return std::get_if<std::string>(&data); }
const Array* Value::as_array() const { return std::get_if<Array>(&data); }

std::string Value::to_display(size_t max_items) const {
  std::ostringstream os;
  if (auto* u = std::get_if<uint64_t>(&data)) os << *u;
  else if (auto* i = std::get_if<int64_t>(&data)) os << *i;
  else if (auto* d = std::get_if<double>(&data)) os << *d;
  else if (auto* b = std::get_if<bool>(&data)) os << (*b ? "true" : "false");
  else if (auto* s = std::get_if<std::string>(&data)) {
    std::string shown = s->size() > 80 ? s->substr(0, 77) + "..." : *s;
    for (char& ch : shown) if (ch == '\n') ch = ' ';
    os << '"' << shown << '"';
  } else if (auto* a = std::get_if<Array>(&data)) {
    os << "[" << value_type_name(a->elem_type) << " x " << a->items.size() << "]";
    if (!a->items.empty()) {
      os << " ";
      for (size_t k = 0; k < a->items.size() && k < max_items; ++k)
        os << (k ? ", " : "") << a->items[k].to_display(max_items);
      if (a->items.size() > max_items) os << ", ...";
    }
  }
  return os.str();
}

std::string TensorInfo::shape_string() const {
  std::string s = "[";
  for (uint32_t d = 0; d < n_dims; ++d) s += (d ? ", " : "") + std::to_string(ne[d]);
  return s + "]";
}

File File::open(const std::string& path) {
  auto map = std::make_shared<const MappedFile>(path);
  const uint8_t* bytes = map->data();
  const size_t size = map->size();
  return parse(path, std::move(map), bytes, size);
}

File File::from_memory(const std::string& name, const uint8_t* bytes, size_t size) {
  return parse(name, nullptr, bytes, size);
}

File File::parse(std::string name, std::shared_ptr<const MappedFile> map, const uint8_t* bytes, size_t size) {
  File f;
  f.name_ = std::move(name);
  f.map_ = std::move(map);
  f.bytes_ = bytes;
  f.size_ = size;
  const std::string& path = f.name_;
  Cursor c(path, bytes, size);

  uint32_t magic = c.read<uint32_t>("magic");
  if (magic != kMagic) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%08x", magic);
    c.fail(std::string("bad magic ") + hex + ", expected 0x46554747 (\"GGUF\"): not a GGUF file");
  }
  f.version_ = c.read<uint32_t>("version");
  if (f.version_ == 1) c.fail("GGUF v1, not supported (keel reads GGUF v2 and v3; re-convert the model)");
  if (f.version_ != 2 && f.version_ != 3)
    c.fail("unsupported GGUF version " + std::to_string(f.version_) + " (keel reads v2 and v3)");

  uint64_t n_tensors = c.read<uint64_t>("tensor count");
  uint64_t n_kv = c.read<uint64_t>("metadata count");
  // Each KV takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor record at least 8+4+4+8.
  if (n_kv > c.remaining() / 13)
    c.fail("metadata count " + std::to_string(n_kv) + " is beyond the end of the file");
  if (n_tensors > c.remaining() / 24)
    c.fail("tensor count " + std::to_string(n_tensors) + " is beyond the end of the file");

  f.kv_.reserve(static_cast<size_t>(n_kv));
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.read_string("metadata key #" + std::to_string(i));
    uint32_t type = c.read<uint32_t>("type of metadata '" + key + "'");
    if (!valid_value_type(type)) c.fail("metadata '" + key + "' has unknown value type " + std::to_string(type));
    Value v = read_value(c, static_cast<ValueType>(type), "metadata '" + key + "'", 0);
    if (f.kv_index_.count(key)) c.fail("duplicate metadata key '" + key + "'");
    f.kv_index_.emplace(key, f.kv_.size());
    f.kv_.emplace_back(std::move(key), std::move(v));
  }

  if (const Value* a = f.find("general.alignment")) {
    auto al = a->as_int();
    if (!al || *al <= 0 || (*al & (*al - 1)) != 0 || *al > (1 << 20))
      c.fail("general.alignment is " + a->to_display() + ", expected a power of two");
    f.alignment_ = static_cast<uint64_t>(*al);
  }

  f.tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorInfo t{};
    t.name = c.read_string("tensor #" + std::to_string(i) + " name");
    const std::string field = "tensor '" + t.name + "'";
    t.n_dims = c.read<uint32_t>(field + " dimension count");
    if (t.n_dims == 0 || t.n_dims > kMaxDims)
      c.fail(field + " has " + std::to_string(t.n_dims) + " dimensions, expected 1 to 4");
    for (int d = 0; d < kMaxDims; ++d) t.ne[d] = 1;
    for (uint32_t d = 0; d < t.n_dims; ++d) t.ne[d] = c.read<uint64_t>(field + " dimension");
    uint32_t type_id = c.read<uint32_t>(field + " type");
    auto ti = quant::type_info(type_id);
    if (!ti) c.fail(field + " has unknown tensor type " + std::to_string(type_id));
    t.type = ti->type;
    t.offset = c.read<uint64_t>(field + " offset");

    uint64_t n = 1;
    for (int d = 0; d < kMaxDims; ++d)
      if (mul_overflows(n, t.ne[d], &n) || t.ne[d] > (uint64_t{1} << 62))
        c.fail(field + " shape " + t.shape_string() + ": element count overflows");
    if (t.ne[0] % ti->block_elems != 0)
      c.fail(field + " row length " + std::to_string(t.ne[0]) + " is not a multiple of the " +
             std::string(ti->name) + " block size " + std::to_string(ti->block_elems));
    uint64_t rows = t.ne[1] * t.ne[2] * t.ne[3];
    uint64_t row_bytes = (t.ne[0] / ti->block_elems) * ti->block_bytes;
    if (mul_overflows(rows, row_bytes, &t.n_bytes)) c.fail(field + ": byte size overflows");
    if (t.offset % f.alignment_ != 0)
      c.fail(field + " offset " + std::to_string(t.offset) + " is not aligned to " + std::to_string(f.alignment_));
    if (f.tensor_index_.count(t.name)) c.fail("duplicate tensor name '" + t.name + "'");
    f.tensor_index_.emplace(t.name, f.tensors_.size());
    f.tensors_.push_back(std::move(t));
  }

  uint64_t header_end = c.pos();
  f.data_offset_ = (header_end + f.alignment_ - 1) / f.alignment_ * f.alignment_;
  const uint64_t file_size = f.size_;
  for (TensorInfo& t : f.tensors_) {
    uint64_t begin = 0, end = 0;
    if (__builtin_add_overflow(f.data_offset_, t.offset, &begin) ||
        __builtin_add_overflow(begin, t.n_bytes, &end) || end > file_size)
      throw Error(path + ": tensor '" + t.name + "' data [" + std::to_string(t.offset) + ", +" +
                  std::to_string(t.n_bytes) + ") lies beyond the end of the file (data section " +
                  std::to_string(file_size > f.data_offset_ ? file_size - f.data_offset_ : 0) + " bytes)");
    t.data = f.bytes_ + begin;
  }
  return f;
}

const Value* File::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

namespace {
[[noreturn]] void wrong_type(const std::string& path, std::string_view key, const Value& v, const char* want) {
  throw Error(path + ": metadata '" + std::string(key) + "' has type " +
              std::string(value_type_name(v.type)) + ", expected " + want);
}
}  // namespace

std::optional<int64_t> File::get_int(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  auto i = v->as_int();
  if (!i) wrong_type(path(), key, *v, "an integer");
  return i;
}

std::optional<double> File::get_float(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  auto d = v->as_float();
  if (!d) wrong_type(path(), key, *v, "a number");
  return d;
}

std::optional<bool> File::get_bool(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (auto* b = std::get_if<bool>(&v->data)) return *b;
  if (auto i = v->as_int()) return *i != 0;
  wrong_type(path(), key, *v, "a bool");
}

std::optional<std::string> File::get_string(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (auto* s = v->as_string()) return *s;
  wrong_type(path(), key, *v, "a string");
}

const Array* File::get_array(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return nullptr;
  if (auto* a = v->as_array()) return a;
  wrong_type(path(), key, *v, "an array");
}

uint32_t File::get_u32_or(std::string_view key, uint32_t fallback) const {
  auto i = get_int(key);
  if (!i) return fallback;
  if (*i < 0 || *i > UINT32_MAX)
    throw Error(path() + ": metadata '" + std::string(key) + "' = " + std::to_string(*i) + " is out of range");
  return static_cast<uint32_t>(*i);
}

float File::get_f32_or(std::string_view key, float fallback) const {
  auto d = get_float(key);
  if (!d) return fallback;
  if (!std::isfinite(*d))
    throw Error(path() + ": metadata '" + std::string(key) + "' is not a finite number");
  return static_cast<float>(*d);
}

uint32_t File::require_u32(std::string_view key) const {
  if (!find(key)) throw Error(path() + ": required metadata '" + std::string(key) + "' is missing");
  return get_u32_or(key, 0);
}

const TensorInfo* File::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& File::require_tensor(std::string_view name) const {
  const TensorInfo* t = find_tensor(name);
  if (!t) throw Error(path() + ": required tensor '" + std::string(name) + "' is missing");
  return *t;
}

uint64_t File::tensor_bytes() const {
  uint64_t total = 0;
  for (const TensorInfo& t : tensors_) total += t.n_bytes;
  return total;
}

}  // namespace keel::gguf
