#include "tools_lib/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "keel/error.h"
#include "quant/blocks.h"

namespace keel::tools {
namespace {

constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

struct DtypeInfo {
  const char* name;
  StDtype dtype;
  uint32_t bytes;
};
constexpr DtypeInfo kDtypes[] = {
    {"F32", StDtype::f32, 4},  {"F16", StDtype::f16, 2},        {"BF16", StDtype::bf16, 2},
    {"F64", StDtype::f64, 8},  {"I64", StDtype::i64, 8},        {"I32", StDtype::i32, 4},
    {"I16", StDtype::i16, 2},  {"I8", StDtype::i8, 1},          {"U8", StDtype::u8, 1},
    {"BOOL", StDtype::boolean, 1}, {"F8_E4M3", StDtype::f8_e4m3, 1}, {"F8_E5M2", StDtype::f8_e5m2, 1},
};

}  // namespace

uint64_t StTensor::n_elements() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.map_ = std::make_shared<gguf::MappedFile>(path);
  const uint8_t* base = f.map_->data();
  const uint64_t size = f.map_->size();
  auto fail = [&](const std::string& what) -> void { throw Error(path + ": " + what); };
  if (size < 8) fail("truncated safetensors file: " + std::to_string(size) + " bytes, the header length alone needs 8");
  uint64_t header_len;
  std::memcpy(&header_len, base, 8);
  if (header_len > size - 8)
    fail("safetensors header length " + std::to_string(header_len) + " runs past the end of the file (" +
         std::to_string(size) + " bytes): truncated or not a safetensors file");
  if (header_len > kMaxHeaderBytes) fail("safetensors header of " + std::to_string(header_len) + " bytes is implausible");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(base + 8, base + 8 + header_len);
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("safetensors header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail("safetensors header is not a JSON object");
  const uint8_t* data = base + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const std::string& name = it.key();
    const nlohmann::json& e = it.value();
    auto bad = [&](const std::string& what) { fail("tensor '" + name + "': " + what); };
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
      bad("entry needs dtype, shape and data_offsets");
    if (!e["dtype"].is_string()) bad("dtype is not a string");
    StTensor t;
    t.name = name;
    t.file = path;
    t.dtype_name = e["dtype"].get<std::string>();
    const DtypeInfo* di = nullptr;
    for (const DtypeInfo& d : kDtypes)
      if (t.dtype_name == d.name) di = &d;
    if (!di) bad("unknown dtype '" + t.dtype_name + "'");
    t.dtype = di->dtype;
    if (!e["shape"].is_array()) bad("shape is not an array");
    uint64_t n = 1;
    for (const auto& d : e["shape"]) {
      if (!d.is_number_unsigned()) bad("shape holds a value that is not a non-negative integer");
      t.shape.push_back(d.get<uint64_t>());
      if (__builtin_mul_overflow(n, t.shape.back(), &n)) bad("shape overflows");
    }
    const auto& offs = e["data_offsets"];
    if (!offs.is_array() || offs.size() != 2 || !offs[0].is_number_unsigned() || !offs[1].is_number_unsigned())
      bad("data_offsets must be two non-negative integers");
    const uint64_t begin = offs[0].get<uint64_t>(), end = offs[1].get<uint64_t>();
    if (begin > end || end > data_size)
      bad("data [" + std::to_string(begin) + ", " + std::to_string(end) + ") lies outside the " +
          std::to_string(data_size) + " data bytes: the file is truncated or corrupt");
    uint64_t expect;
    if (__builtin_mul_overflow(n, uint64_t{di->bytes}, &expect) || expect != end - begin)
      bad("shape and dtype need " + std::to_string(n * di->bytes) + " bytes, data_offsets give " +
          std::to_string(end - begin));
    t.data = data + begin;
    t.n_bytes = end - begin;
    f.tensors_.push_back(std::move(t));
  }
  return f;
}

SafetensorsFolder SafetensorsFolder::open(const std::string& dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) throw Error(dir + ": not a folder (expected a Hugging Face model folder)");
  std::vector<std::string> paths;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") paths.push_back(e.path().string());
  std::sort(paths.begin(), paths.end());
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  nlohmann::json index;
  if (fs::exists(index_path)) {
    std::ifstream in(index_path);
    try {
      index = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw Error(index_path.string() + ": not valid JSON: " + e.what());
    }
    if (!index.contains("weight_map") || !index["weight_map"].is_object())
      throw Error(index_path.string() + ": no weight_map object");
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it.value().is_string()) throw Error(index_path.string() + ": weight_map['" + it.key() + "'] is not a file name");
      const std::string shard = (fs::path(dir) / it.value().get<std::string>()).string();
      if (!fs::exists(shard))
        throw Error(index_path.string() + ": shard " + it.value().get<std::string>() + " (holding '" + it.key() +
                    "') is missing");
    }
  }
  if (paths.empty()) throw Error(dir + ": no *.safetensors files (keel converts safetensors checkpoints only)");
  SafetensorsFolder folder;
  folder.files_.reserve(paths.size());
  for (const std::string& p : paths) folder.files_.push_back(SafetensorsFile::open(p));
  for (const SafetensorsFile& f : folder.files_)
    for (const StTensor& t : f.tensors()) {
      auto [it, inserted] = folder.by_name_.emplace(t.name, &t);
      if (!inserted) throw Error(dir + ": tensor '" + t.name + "' is in both " + it->second->file + " and " + t.file);
    }
  if (!index.is_null())
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it)
      if (!folder.by_name_.count(it.key()))
        throw Error(index_path.string() + ": tensor '" + it.key() + "' is listed but not in " +
                    it.value().get<std::string>());
  return folder;
}

const StTensor* SafetensorsFolder::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<const StTensor*> SafetensorsFolder::tensors() const {
  std::vector<const StTensor*> out;
  for (const auto& [name, t] : by_name_) out.push_back(t);
  return out;
}

void read_row_f32(const StTensor& t, uint64_t row, float* out) {
  const uint64_t n = t.row_elems();
  switch (t.dtype) {
    case StDtype::f32:
      std::memcpy(out, t.data + row * n * 4, n * 4);
      return;
    case StDtype::f16: {
      const uint8_t* p = t.data + row * n * 2;
      for (uint64_t i = 0; i < n; ++i) {
        quant::f16_bits h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = quant::f16_to_f32(h);
      }
      return;
    }
    case StDtype::bf16: {
      const uint8_t* p = t.data + row * n * 2;
      for (uint64_t i = 0; i < n; ++i) {
        quant::bf16_bits h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = quant::bf16_to_f32(h);
      }
      return;
    }
    default:
      throw Error(t.file + ": tensor '" + t.name + "' has dtype " + t.dtype_name +
                  "; keel converts F32, F16 and BF16 weights");
  }
}

}  // namespace keel::tools
