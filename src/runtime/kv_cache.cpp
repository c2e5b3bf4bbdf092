#include "runtime/kv_cache.h"

#include <cstring>

#include "keel/error.h"
#include "quant/blocks.h"
#include "quant/quantize_q8_0.h"

namespace keel::runtime {

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

KvCache::KvCache(const KvGeometry& geometry) : geo_(geometry) {
  if (geo_.type == KvType::q8_0 && geo_.head_dim % 32 != 0)
    throw Error("q8_0 KV cache needs a head size that is a multiple of 32, the model has " +
                std::to_string(geo_.head_dim));
  pages_.reserve(size_t{geo_.n_layers} * geo_.n_pages);
  for (size_t i = 0; i < size_t{geo_.n_layers} * geo_.n_pages; ++i)
    pages_.push_back(allocate_aligned(geo_.page_bytes(), "kv pages"));
}

void KvCache::write(uint32_t layer, int64_t pos0, int64_t n, const float* k, const float* v) {
  if (pos0 < 0 || static_cast<uint64_t>(pos0 + n) > geo_.capacity_tokens())
    throw Error("context full: position " + std::to_string(pos0 + n) + " exceeds the KV cache capacity of " +
                std::to_string(geo_.capacity_tokens()) + " tokens");
  const int64_t width = int64_t{geo_.n_kv_heads} * geo_.head_dim;
  const size_t rb = geo_.row_bytes();
  for (int64_t t = 0; t < n; ++t) {
    const int64_t pos = pos0 + t;
    const uint32_t page = static_cast<uint32_t>(pos / geo_.page_tokens);
    const size_t slot = static_cast<size_t>(pos % geo_.page_tokens);
    uint8_t* kdst = page_ptr(layer, page) + slot * geo_.token_bytes();
    uint8_t* vdst = kdst + size_t{geo_.page_tokens} * geo_.token_bytes();
    const float* ksrc = k + t * width;
    const float* vsrc = v + t * width;
    switch (geo_.type) {
      case KvType::f32:
        std::memcpy(kdst, ksrc, sizeof(float) * width);
        std::memcpy(vdst, vsrc, sizeof(float) * width);
        break;
      case KvType::f16: {
        auto* kh = reinterpret_cast<quant::f16_bits*>(kdst);
        auto* vh = reinterpret_cast<quant::f16_bits*>(vdst);
        for (int64_t i = 0; i < width; ++i) {
          kh[i] = quant::f32_to_f16(ksrc[i]);
          vh[i] = quant::f32_to_f16(vsrc[i]);
        }
        break;
      }
      case KvType::q8_0:
        for (uint32_t h = 0; h < geo_.n_kv_heads; ++h) {
          quant::quantize_row_q8_0(ksrc + h * geo_.head_dim, kdst + h * rb, geo_.head_dim);
          quant::quantize_row_q8_0(vsrc + h * geo_.head_dim, vdst + h * rb, geo_.head_dim);
        }
        break;
    }
  }
}

}  // namespace keel::runtime
