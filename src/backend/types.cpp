#include "backend/types.h"

namespace keel::backend {

std::string_view device_name(Device device) {
  switch (device) {
    case Device::host: return "host";
    case Device::cuda: return "cuda";
  }
  return "?";
}

std::string_view kv_type_name(KvType type) {
  switch (type) {
    case KvType::f32: return "f32";
    case KvType::f16: return "f16";
    case KvType::q8_0: return "q8_0";
  }
  return "?";
}

std::optional<KvType> kv_type_from_name(std::string_view name) {
  if (name == "f32") return KvType::f32;
  if (name == "f16") return KvType::f16;
  if (name == "q8_0") return KvType::q8_0;
  return std::nullopt;
}

quant::Type kv_element_type(KvType type) {
  switch (type) {
    case KvType::f32: return quant::Type::F32;
    case KvType::f16: return quant::Type::F16;
    case KvType::q8_0: return quant::Type::Q8_0;
  }
  return quant::Type::F32;
}

}  // namespace keel::backend
