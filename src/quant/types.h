// The ggml tensor type table: ids as stored in GGUF tensor records, block geometry, names.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace keel::quant {

enum class Type : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
  IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
};

struct TypeInfo {
  Type type;
  std::string_view name;     // as llama.cpp prints it: "q5_K", "f16"
  uint32_t block_elems;      // elements per block along ne0
  uint32_t block_bytes;      // bytes per block
  bool computable;           // keel can dequantize / multiply with it
};

// nullopt for an id that is not a ggml type.
std::optional<TypeInfo> type_info(uint32_t id);
TypeInfo info(Type type);
std::string_view type_name(Type type);
std::optional<Type> type_from_name(std::string_view name);  // case-insensitive: "q8_0", "Q4_K"

// Bytes of one row of `row_elems` elements; row_elems must be a multiple of block_elems.
inline size_t row_bytes(Type type, uint64_t row_elems) {
  TypeInfo ti = info(type);
  return static_cast<size_t>(row_elems / ti.block_elems) * ti.block_bytes;
}

}  // namespace keel::quant
