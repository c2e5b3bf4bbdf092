// CPU flash attention: the tiled online-softmax kernel (scalar and AVX2) equals a naive
// full-softmax reference over the same cached K/V, for several head sizes, GQA groups, chunk
// offsets and cache types; outputs outside the written range stay untouched (sentinels).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/attention.h"
#include "backend/cpu/attention_kernels.h"
#include "quant/blocks.h"
#include "quant/dequant.h"

using namespace keel;

namespace {

struct AttnCase {
  uint32_t head_dim, n_head, n_kv;
  int64_t pos0, n_tokens;
  runtime::KvType kv_type;
};

// softmax(q·K^T * scale) V over positions 0..pos0+t, reading K/V back from the cache's rows.
std::vector<float> naive(const AttnCase& s, const runtime::KvCache& kv, const std::vector<float>& q, float scale) {
  const int hd = static_cast<int>(s.head_dim);
  const auto& g = kv.geometry();
  std::vector<float> out(static_cast<size_t>(s.n_tokens * s.n_head * hd));
  std::vector<float> krow(hd), vrow(hd);
  for (int64_t t = 0; t < s.n_tokens; ++t)
    for (uint32_t h = 0; h < s.n_head; ++h) {
      const uint32_t kvh = h / (s.n_head / s.n_kv);
      const int64_t n = s.pos0 + t + 1;
      std::vector<double> sc(static_cast<size_t>(n));
      double mx = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        const uint8_t* kp = kv.k_page(0, static_cast<uint32_t>(j / g.page_tokens)) +
                            (static_cast<size_t>(j % g.page_tokens) * g.n_kv_heads + kvh) * g.row_bytes();
        quant::dequantize_row(runtime::kv_element_type(g.type), kp, krow.data(), hd);
        double d = 0;
        for (int i = 0; i < hd; ++i) d += static_cast<double>(q[(t * s.n_head + h) * hd + i]) * krow[i];
        sc[j] = d * scale;
        mx = std::max(mx, sc[j]);
      }
      double sum = 0;
      for (auto& x : sc) sum += x = std::exp(x - mx);
      std::vector<double> acc(hd, 0.0);
      for (int64_t j = 0; j < n; ++j) {
        const uint8_t* vp = kv.v_page(0, static_cast<uint32_t>(j / g.page_tokens)) +
                            (static_cast<size_t>(j % g.page_tokens) * g.n_kv_heads + kvh) * g.row_bytes();
        quant::dequantize_row(runtime::kv_element_type(g.type), vp, vrow.data(), hd);
        for (int i = 0; i < hd; ++i) acc[i] += sc[j] * vrow[i];
      }
      for (int i = 0; i < hd; ++i) out[(t * s.n_head + h) * hd + i] = static_cast<float>(acc[i] / sum);
    }
  return out;
}

void check(const AttnCase& s, const cpu::AttentionKernels& kernels, int threads) {
  std::mt19937 rng(s.head_dim * 31 + s.n_head * 7 + static_cast<uint32_t>(s.pos0));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  runtime::KvGeometry geo;
  geo.type = s.kv_type;
  geo.n_layers = 1;
  geo.n_kv_heads = s.n_kv;
  geo.head_dim = s.head_dim;
  geo.page_tokens = 16;
  geo.n_pages = static_cast<uint32_t>((s.pos0 + s.n_tokens + 15) / 16);
  runtime::KvCache kv(geo);
  const int64_t total = s.pos0 + s.n_tokens;
  std::vector<float> k(static_cast<size_t>(total * s.n_kv * s.head_dim)), v(k.size());
  for (auto& x : k) x = normal(rng);
  for (auto& x : v) x = normal(rng);
  kv.write(0, 0, total, k.data(), v.data());
  std::vector<float> q(static_cast<size_t>(s.n_tokens * s.n_head * s.head_dim));
  for (auto& x : q) x = normal(rng);

  const size_t n_out = q.size();
  std::vector<float> out(n_out + 32, 12345.0f);  // 16 sentinels each side
  cpu::ThreadPool pool(threads);
  std::vector<float> ws(cpu::attention_workspace_bytes(geo, s.n_head, threads) / sizeof(float));
  cpu::AttentionArgs a;
  a.q = q.data();
  a.out = out.data() + 16;
  a.n_tokens = s.n_tokens;
  a.pos0 = s.pos0;
  a.n_head = s.n_head;
  a.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  a.kv = &kv;
  cpu::flash_attention_with(kernels, a, ws.data(), pool);
  auto want = naive(s, kv, q, a.scale);
  double max_err = 0;
  for (size_t i = 0; i < n_out; ++i) max_err = std::max(max_err, static_cast<double>(std::fabs(out[16 + i] - want[i])));
  EXPECT_LT(max_err, 2e-5) << "hd " << s.head_dim << " heads " << s.n_head << "/" << s.n_kv << " pos0 " << s.pos0;
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(out[i], 12345.0f);
    EXPECT_EQ(out[16 + n_out + i], 12345.0f);
  }
}

bool has_avx2() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
bool has_avx512() { return has_avx2() && __builtin_cpu_supports("avx512f"); }

}  // namespace

TEST(Attention, TiledEqualsNaiveForHeadSizesGroupsOffsetsAndCacheTypes) {
  for (auto type : {runtime::KvType::f32, runtime::KvType::f16, runtime::KvType::q8_0})
    for (uint32_t hd : {64u, 128u, 256u})
      for (auto [heads, kvh] : {std::pair{4u, 4u}, std::pair{6u, 1u}, std::pair{8u, 2u}})
        for (auto [pos0, n] : {std::pair{int64_t{0}, int64_t{1}}, std::pair{int64_t{0}, int64_t{33}}, std::pair{int64_t{37}, int64_t{9}}}) {
          AttnCase s{hd, heads, kvh, pos0, n, type};
          check(s, cpu::attention_kernels_generic(), 2);
          if (has_avx2()) check(s, cpu::attention_kernels_avx2(), 2);
          if (has_avx512()) check(s, cpu::attention_kernels_avx512(), 2);
        }
}

TEST(Attention, OddHeadSizeUsesTheScalarPath) {
  AttnCase s{8, 8, 4, 20, 5, runtime::KvType::f32};  // stories260K's head size
  check(s, cpu::attention_kernels_generic(), 1);
  if (has_avx2()) check(s, cpu::attention_kernels_avx2(), 3);
}
