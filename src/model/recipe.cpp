#include "model/recipe.h"

#include <algorithm>
#include <cctype>

namespace keel::model {
namespace {

struct Name {
  FileType type;
  std::string_view name;
  uint32_t ftype;
};
constexpr Name kNames[] = {
    {FileType::f32, "f32", 0},     {FileType::f16, "f16", 1},       {FileType::bf16, "bf16", 32},
    {FileType::q8_0, "q8_0", 7},   {FileType::q4_0, "q4_0", 2},     {FileType::q4_k, "q4_k", 14},
    {FileType::q5_k, "q5_k", 16},  {FileType::q6_k, "q6_k", 18},    {FileType::q4_k_m, "q4_k_m", 15},
    {FileType::q5_k_m, "q5_k_m", 17},
};

quant::Type base_type(FileType t) {
  switch (t) {
    case FileType::f32: return quant::Type::F32;
    case FileType::f16: return quant::Type::F16;
    case FileType::bf16: return quant::Type::BF16;
    case FileType::q8_0: return quant::Type::Q8_0;
    case FileType::q4_0: return quant::Type::Q4_0;
    case FileType::q4_k: case FileType::q4_k_m: return quant::Type::Q4_K;
    case FileType::q5_k: case FileType::q5_k_m: return quant::Type::Q5_K;
    case FileType::q6_k: return quant::Type::Q6_K;
  }
  return quant::Type::F32;
}

bool is_quantized(FileType t) { return t != FileType::f32 && t != FileType::f16 && t != FileType::bf16; }

// keel computes with Q8_0 but not Q5_0/Q5_1: a K-quant row that 256 does not divide becomes
// Q8_0 (llama.cpp would pick Q5_0/Q5_1/Q8_0), and F16 when even 32 does not divide it.
quant::Type fit_row(quant::Type t, uint64_t ne0) {
  const uint32_t block = quant::info(t).block_elems;
  if (ne0 % block == 0) return t;
  if (ne0 % 32 == 0) return quant::Type::Q8_0;
  return quant::Type::F16;
}

}  // namespace

std::optional<FileType> file_type_from_name(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const Name& n : kNames)
    if (n.name == lower) return n.type;
  return std::nullopt;
}

std::string_view file_type_name(FileType t) {
  for (const Name& n : kNames)
    if (n.type == t) return n.name;
  return "?";
}

uint32_t llama_ftype_id(FileType t) {
  for (const Name& n : kNames)
    if (n.type == t) return n.ftype;
  return 0;
}

bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

std::vector<quant::Type> recipe_types(FileType file_type, const std::vector<TensorSpec>& specs) {
  const quant::Type base = base_type(file_type);
  const bool mixed = file_type == FileType::q4_k_m || file_type == FileType::q5_k_m;
  const bool tied = std::none_of(specs.begin(), specs.end(), [](const TensorSpec& s) { return s.role == TensorRole::output; });
  int n_attn_v = 0, n_ffn_down = 0;
  for (const TensorSpec& s : specs) {
    n_attn_v += s.role == TensorRole::attn_v || s.role == TensorRole::attn_qkv;
    n_ffn_down += s.role == TensorRole::ffn_down;
  }
  int i_attn_v = 0, i_ffn_down = 0;
  std::vector<quant::Type> out;
  out.reserve(specs.size());
  for (const TensorSpec& s : specs) {
    quant::Type t = base;
    if (!role_is_quantizable(s.role) || s.shape.size() < 2) {
      out.push_back(quant::Type::F32);
      continue;
    }
    const bool is_head = s.role == TensorRole::output || (tied && s.role == TensorRole::token_embd);
    if (is_quantized(file_type) && is_head) {
      t = base == quant::Type::Q8_0 ? quant::Type::Q8_0 : quant::Type::Q6_K;
    } else if (mixed && (s.role == TensorRole::attn_v || s.role == TensorRole::attn_qkv)) {
      t = use_more_bits(i_attn_v, n_attn_v) ? quant::Type::Q6_K : base;
    } else if (mixed && s.role == TensorRole::ffn_down) {
      t = use_more_bits(i_ffn_down, n_ffn_down) ? quant::Type::Q6_K : base;
    }
    if (s.role == TensorRole::attn_v || s.role == TensorRole::attn_qkv) ++i_attn_v;
    if (s.role == TensorRole::ffn_down) ++i_ffn_down;
    out.push_back(fit_row(t, s.shape[0]));
  }
  return out;
}

}  // namespace keel::model
