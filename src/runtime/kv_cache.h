// Paged KV cache: fixed-size pages of tokens, one allocation per (attention layer, page), so no
// buffer grows with the context. Page layout: K [page_tokens][n_kv_heads][row], then V likewise;
// a row is one head's head_dim values in the cache's element type.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "quant/types.h"
#include "runtime/buffer_set.h"

namespace keel::runtime {

enum class KvType { f32, f16, q8_0 };
std::string_view kv_type_name(KvType type);
std::optional<KvType> kv_type_from_name(std::string_view name);
quant::Type kv_element_type(KvType type);

struct KvGeometry {
  KvType type = KvType::f16;
  uint32_t n_layers = 0;     // attention layers only
  uint32_t n_kv_heads = 0;
  uint32_t head_dim = 0;
  uint32_t page_tokens = 256;
  uint32_t n_pages = 0;      // per layer

  size_t row_bytes() const { return quant::row_bytes(kv_element_type(type), head_dim); }
  size_t token_bytes() const { return n_kv_heads * row_bytes(); }      // K (or V) of one layer
  size_t page_bytes() const { return 2 * size_t{page_tokens} * token_bytes(); }
  uint64_t capacity_tokens() const { return uint64_t{page_tokens} * n_pages; }
  uint64_t bytes_per_token() const { return 2ull * n_layers * token_bytes(); }  // all layers, K+V
  uint64_t total_bytes() const { return uint64_t{n_layers} * n_pages * page_bytes(); }
};

class KvCache {
 public:
  explicit KvCache(const KvGeometry& geometry);  // allocates every page now

  const KvGeometry& geometry() const { return geo_; }

  // Stores K and V of tokens at positions pos0..pos0+n-1 of attention layer `layer`.
  // k, v: [n, n_kv_heads * head_dim] f32.
  void write(uint32_t layer, int64_t pos0, int64_t n, const float* k, const float* v);

  const uint8_t* k_page(uint32_t layer, uint32_t page) const { return page_ptr(layer, page); }
  const uint8_t* v_page(uint32_t layer, uint32_t page) const {
    return page_ptr(layer, page) + size_t{geo_.page_tokens} * geo_.token_bytes();
  }

 private:
  uint8_t* page_ptr(uint32_t layer, uint32_t page) const { return pages_[size_t{layer} * geo_.n_pages + page].get(); }
  KvGeometry geo_;
  std::vector<AlignedBytes> pages_;
};

}  // namespace keel::runtime
