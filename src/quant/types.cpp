#include "quant/types.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <string>

#include "keel/error.h"

namespace keel::quant {
namespace {

constexpr std::array kTypes = {
    TypeInfo{Type::F32, "f32", 1, 4, true},
    TypeInfo{Type::F16, "f16", 1, 2, true},
    TypeInfo{Type::Q4_0, "q4_0", 32, 18, true},
    TypeInfo{Type::Q4_1, "q4_1", 32, 20, false},
    TypeInfo{Type::Q5_0, "q5_0", 32, 22, false},
    TypeInfo{Type::Q5_1, "q5_1", 32, 24, false},
    TypeInfo{Type::Q8_0, "q8_0", 32, 34, true},
    TypeInfo{Type::Q8_1, "q8_1", 32, 36, false},
    TypeInfo{Type::Q2_K, "q2_K", 256, 84, false},
    TypeInfo{Type::Q3_K, "q3_K", 256, 110, false},
    TypeInfo{Type::Q4_K, "q4_K", 256, 144, true},
    TypeInfo{Type::Q5_K, "q5_K", 256, 176, true},
    TypeInfo{Type::Q6_K, "q6_K", 256, 210, true},
    TypeInfo{Type::Q8_K, "q8_K", 256, 292, false},
    TypeInfo{Type::IQ2_XXS, "iq2_xxs", 256, 66, false},
    TypeInfo{Type::IQ2_XS, "iq2_xs", 256, 74, false},
    TypeInfo{Type::IQ3_XXS, "iq3_xxs", 256, 98, false},
    TypeInfo{Type::IQ1_S, "iq1_s", 256, 50, false},
    TypeInfo{Type::IQ4_NL, "iq4_nl", 32, 18, false},
    TypeInfo{Type::IQ3_S, "iq3_s", 256, 110, false},
    TypeInfo{Type::IQ2_S, "iq2_s", 256, 82, false},
    TypeInfo{Type::IQ4_XS, "iq4_xs", 256, 136, false},
    TypeInfo{Type::I8, "i8", 1, 1, false},
    TypeInfo{Type::I16, "i16", 1, 2, false},
    TypeInfo{Type::I32, "i32", 1, 4, false},
    TypeInfo{Type::I64, "i64", 1, 8, false},
    TypeInfo{Type::F64, "f64", 1, 8, false},
    TypeInfo{Type::IQ1_M, "iq1_m", 256, 56, false},
    TypeInfo{Type::BF16, "bf16", 1, 2, true},
    TypeInfo{Type::TQ1_0, "tq1_0", 256, 54, false},
    TypeInfo{Type::TQ2_0, "tq2_0", 256, 66, false},
    TypeInfo{Type::MXFP4, "mxfp4", 32, 17, false},
};

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

}  // namespace

std::optional<TypeInfo> type_info(uint32_t id) {
  for (const TypeInfo& ti : kTypes)
    if (static_cast<uint32_t>(ti.type) == id) return ti;
  return std::nullopt;
}

TypeInfo info(Type type) {
  auto ti = type_info(static_cast<uint32_t>(type));
  if (!ti) throw Error("unknown tensor type id " + std::to_string(static_cast<uint32_t>(type)));
  return *ti;
}

std::string_view type_name(Type type) { return info(type).name; }

std::optional<Type> type_from_name(std::string_view name) {
  std::string wanted = lower(name);
  for (const TypeInfo& ti : kTypes)
    if (lower(ti.name) == wanted) return ti.type;
  return std::nullopt;
}

}  // namespace keel::quant
