#include "gguf/writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "keel/error.h"

namespace keel::gguf {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint32_t kVersion = 3;
constexpr size_t kBufferBytes = size_t{1} << 20;

std::string errno_text() { return std::strerror(errno); }

// ---- header serialization ----

class Bytes {
 public:
  template <typename T>
  void put(T v) {
    append(&v, sizeof(T));
  }
  void put_string(std::string_view s) {
    put<uint64_t>(s.size());
    append(s.data(), s.size());
  }
  void append(const void* p, size_t n) {
    const size_t at = out_.size();
    out_.resize(at + n);
    if (n) std::memcpy(out_.data() + at, p, n);
  }
  std::vector<uint8_t>& data() { return out_; }

 private:
  std::vector<uint8_t> out_;
};

void check_value(const Value& v, const std::string& key, int depth) {
  auto bad = [&](const std::string& what) { throw Error("GGUF metadata '" + key + "': " + what); };
  switch (v.type) {
    case ValueType::u8: case ValueType::u16: case ValueType::u32: case ValueType::u64:
      if (!std::holds_alternative<uint64_t>(v.data)) bad("an unsigned value holds another kind");
      break;
    case ValueType::i8: case ValueType::i16: case ValueType::i32: case ValueType::i64:
      if (!std::holds_alternative<int64_t>(v.data)) bad("a signed value holds another kind");
      break;
    case ValueType::f32: case ValueType::f64:
      if (!std::holds_alternative<double>(v.data)) bad("a float value holds another kind");
      break;
    case ValueType::boolean:
      if (!std::holds_alternative<bool>(v.data)) bad("a bool value holds another kind");
      break;
    case ValueType::string:
      if (!std::holds_alternative<std::string>(v.data)) bad("a string value holds another kind");
      break;
    case ValueType::array: {
      const Array* a = v.as_array();
      if (!a) bad("an array value holds another kind");
      if (depth > 8) bad("arrays nested deeper than 8");
      for (const Value& item : a->items) {
        if (item.type != a->elem_type) bad("array of " + std::string(value_type_name(a->elem_type)) +
                                           " holds a " + std::string(value_type_name(item.type)));
        check_value(item, key, depth + 1);
      }
      break;
    }
    default: bad("unknown value type " + std::to_string(static_cast<uint32_t>(v.type)));
  }
}

void put_value(Bytes& b, const Value& v) {
  switch (v.type) {
    case ValueType::u8: b.put(static_cast<uint8_t>(std::get<uint64_t>(v.data))); break;
    case ValueType::u16: b.put(static_cast<uint16_t>(std::get<uint64_t>(v.data))); break;
    case ValueType::u32: b.put(static_cast<uint32_t>(std::get<uint64_t>(v.data))); break;
    case ValueType::u64: b.put(std::get<uint64_t>(v.data)); break;
    case ValueType::i8: b.put(static_cast<int8_t>(std::get<int64_t>(v.data))); break;
    case ValueType::i16: b.put(static_cast<int16_t>(std::get<int64_t>(v.data))); break;
    case ValueType::i32: b.put(static_cast<int32_t>(std::get<int64_t>(v.data))); break;
    case ValueType::i64: b.put(std::get<int64_t>(v.data)); break;
    case ValueType::f32: b.put(static_cast<float>(std::get<double>(v.data))); break;
    case ValueType::f64: b.put(std::get<double>(v.data)); break;
    case ValueType::boolean: b.put(static_cast<uint8_t>(std::get<bool>(v.data) ? 1 : 0)); break;
    case ValueType::string: b.put_string(std::get<std::string>(v.data)); break;
    case ValueType::array: {
      const Array& a = std::get<Array>(v.data);
      b.put(static_cast<uint32_t>(a.elem_type));
      b.put<uint64_t>(a.items.size());
      for (const Value& item : a.items) put_value(b, item);
      break;
    }
  }
}

uint64_t alignment_of(const Metadata& md) {
  const Value* a = md.find("general.alignment");
  if (!a) return 32;
  auto v = a->as_int();
  if (a->type != ValueType::u32 || !v || *v <= 0 || (*v & (*v - 1)) != 0)
    throw Error("GGUF metadata 'general.alignment' must be a u32 power of two, got " + a->to_display());
  return static_cast<uint64_t>(*v);
}

uint64_t round_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

std::vector<uint8_t> serialize_header(const Metadata& md, const std::vector<TensorRecord>& tensors,
                                      const Layout& layout) {
  Bytes b;
  b.put(kMagic);
  b.put(kVersion);
  b.put<uint64_t>(tensors.size());
  b.put<uint64_t>(md.items().size());
  for (const auto& [key, value] : md.items()) {
    b.put_string(key);
    b.put(static_cast<uint32_t>(value.type));
    put_value(b, value);
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorRecord& t = tensors[i];
    b.put_string(t.name);
    b.put<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (uint64_t ne : t.shape) b.put(ne);
    b.put(static_cast<uint32_t>(t.type));
    b.put(layout.offsets[i]);
  }
  return std::move(b.data());
}

}  // namespace

// ---- values ----

Value value_u8(uint8_t v) { return {ValueType::u8, uint64_t{v}}; }
Value value_i8(int8_t v) { return {ValueType::i8, int64_t{v}}; }
Value value_u16(uint16_t v) { return {ValueType::u16, uint64_t{v}}; }
Value value_i16(int16_t v) { return {ValueType::i16, int64_t{v}}; }
Value value_u32(uint32_t v) { return {ValueType::u32, uint64_t{v}}; }
Value value_i32(int32_t v) { return {ValueType::i32, int64_t{v}}; }
Value value_u64(uint64_t v) { return {ValueType::u64, v}; }
Value value_i64(int64_t v) { return {ValueType::i64, v}; }
Value value_f32(float v) { return {ValueType::f32, double{v}}; }
Value value_f64(double v) { return {ValueType::f64, v}; }
Value value_bool(bool v) { return {ValueType::boolean, v}; }
Value value_string(std::string v) { return {ValueType::string, std::move(v)}; }
Value value_array(ValueType elem_type, std::vector<Value> items) {
  return {ValueType::array, Array{elem_type, std::move(items)}};
}
Value value_string_array(const std::vector<std::string>& items) {
  std::vector<Value> values;
  values.reserve(items.size());
  for (const auto& s : items) values.push_back(value_string(s));
  return value_array(ValueType::string, std::move(values));
}

void Metadata::set(const std::string& key, Value value) {
  for (auto& [k, v] : items_)
    if (k == key) {
      v = std::move(value);
      return;
    }
  items_.emplace_back(key, std::move(value));
}

const Value* Metadata::find(std::string_view key) const {
  for (const auto& [k, v] : items_)
    if (k == key) return &v;
  return nullptr;
}

bool Metadata::erase(std::string_view key) {
  for (auto it = items_.begin(); it != items_.end(); ++it)
    if (it->first == key) {
      items_.erase(it);
      return true;
    }
  return false;
}

// ---- tensor records and layout ----

uint64_t TensorRecord::n_rows() const {
  uint64_t n = 1;
  for (size_t i = 1; i < shape.size(); ++i) n *= shape[i];
  return n;
}

uint64_t TensorRecord::row_bytes() const { return quant::row_bytes(type, shape.empty() ? 0 : shape[0]); }

Layout plan_layout(const Metadata& metadata, const std::vector<TensorRecord>& tensors) {
  Layout layout;
  layout.alignment = alignment_of(metadata);
  for (const auto& [key, value] : metadata.items()) check_value(value, key, 0);
  std::set<std::string_view> names;
  for (const TensorRecord& t : tensors) {
    auto bad = [&](const std::string& what) { throw Error("GGUF tensor '" + t.name + "': " + what); };
    if (t.name.empty()) throw Error("GGUF tensor with an empty name");
    if (!names.insert(t.name).second) bad("appears twice in the tensor table");
    if (t.shape.empty() || t.shape.size() > static_cast<size_t>(kMaxDims))
      bad(std::to_string(t.shape.size()) + " dimensions (1 to 4 are allowed)");
    auto ti = quant::type_info(static_cast<uint32_t>(t.type));
    if (!ti) bad("unknown type id " + std::to_string(static_cast<uint32_t>(t.type)));
    for (uint64_t ne : t.shape)
      if (ne == 0) bad("has a zero dimension");
    if (t.shape[0] % ti->block_elems != 0)
      bad("row of " + std::to_string(t.shape[0]) + " elements is not a multiple of " + std::string(ti->name) +
          "'s block of " + std::to_string(ti->block_elems));
  }
  // Header size: serialize once with placeholder offsets (they are fixed-width).
  layout.offsets.assign(tensors.size(), 0);
  layout.header_bytes = serialize_header(metadata, tensors, layout).size();
  layout.data_offset = round_up(layout.header_bytes, layout.alignment);
  uint64_t off = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    layout.offsets[i] = off;
    off = round_up(off + tensors[i].n_bytes(), layout.alignment);
  }
  layout.data_bytes = off;
  return layout;
}

// ---- writer ----

Writer::Writer(std::string path, const Metadata& metadata, std::vector<TensorRecord> tensors)
    : path_(std::move(path)), tensors_(std::move(tensors)) {
  layout_ = plan_layout(metadata, tensors_);
  temp_path_ = path_ + ".tmp." + std::to_string(::getpid());
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error("cannot create " + temp_path_ + ": " + errno_text());
  buffer_.reserve(kBufferBytes);
  try {
    std::vector<uint8_t> header = serialize_header(metadata, tensors_, layout_);
    put(header.data(), header.size());
    pad_to(layout_.data_offset);
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    ::unlink(temp_path_.c_str());
    throw;
  }
}

Writer::~Writer() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_path_.c_str());
}

void Writer::fail(const std::string& what) const { throw Error(path_ + ": " + what); }

uint64_t Writer::current_remaining() const {
  return current_ < tensors_.size() ? tensors_[current_].n_bytes() - written_in_current_ : 0;
}

void Writer::write(const void* data, size_t n) {
  if (committed_) fail("write after commit");
  if (current_ >= tensors_.size()) fail("more tensor data than the table declares");
  if (n > current_remaining())
    fail("tensor '" + tensors_[current_].name + "' got " + std::to_string(written_in_current_ + n) +
         " bytes, its record says " + std::to_string(tensors_[current_].n_bytes()));
  put(data, n);
  written_in_current_ += n;
  if (written_in_current_ == tensors_[current_].n_bytes()) {
    const uint64_t end = layout_.data_offset + layout_.offsets[current_] + written_in_current_;
    const uint64_t next = current_ + 1 < tensors_.size() ? layout_.data_offset + layout_.offsets[current_ + 1]
                                                          : layout_.file_bytes();
    if (end > next) fail("internal error: tensor overlaps the next");
    pad_to(next);
    ++current_;
    written_in_current_ = 0;
  }
}

void Writer::put(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  file_pos_ += n;
  if (n >= kBufferBytes) {  // a large write goes out as it is, without a copy
    flush();
    write_all(p, n);
    return;
  }
  while (n > 0) {
    if (buffer_.size() == kBufferBytes) flush();
    const size_t take = std::min(n, kBufferBytes - buffer_.size());
    const size_t at = buffer_.size();
    buffer_.resize(at + take);
    std::memcpy(buffer_.data() + at, p, take);
    p += take;
    n -= take;
  }
}

void Writer::pad_to(uint64_t file_offset) {
  static const uint8_t zeros[64] = {};
  while (file_pos_ < file_offset) put(zeros, static_cast<size_t>(std::min<uint64_t>(64, file_offset - file_pos_)));
}

void Writer::flush() {
  write_all(buffer_.data(), buffer_.size());
  buffer_.clear();
}

void Writer::write_all(const uint8_t* p, size_t left) {
  while (left > 0) {
    ssize_t w = ::write(fd_, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("write to " + temp_path_ + " failed: " + errno_text());
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
}

void Writer::commit() {
  if (committed_) return;
  if (current_ < tensors_.size())
    fail("tensor '" + tensors_[current_].name + "' is incomplete (" + std::to_string(written_in_current_) + " of " +
         std::to_string(tensors_[current_].n_bytes()) + " bytes): nothing was written");
  if (file_pos_ != layout_.file_bytes()) fail("internal error: file size differs from its layout");
  flush();
  if (::fsync(fd_) != 0) fail("fsync of " + temp_path_ + " failed: " + errno_text());
  if (::close(fd_) != 0) {
    fd_ = -1;
    fail("close of " + temp_path_ + " failed: " + errno_text());
  }
  fd_ = -1;
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0)
    fail("cannot rename " + temp_path_ + " to " + path_ + ": " + errno_text());
  committed_ = true;
  // Make the rename durable; failure to open the folder is not worth failing the write for.
  const size_t slash = path_.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path_.substr(0, slash));
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace keel::gguf
