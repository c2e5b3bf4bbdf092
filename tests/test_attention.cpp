// CPU flash attention: the tiled online-softmax kernel (scalar and AVX2) equals a naive
// full-softmax reference over the same cached K/V, for several head sizes, GQA groups, chunk
// offsets and cache types, with several sequences in one call whose pages are scattered over the
// pool; outputs outside the written range stay untouched (sentinels).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/attention.h"
#include "backend/cpu/attention_kernels.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/matmul.h"
#include "quant/blocks.h"
#include "quant/dequant.h"
#include "runtime/session.h"

using namespace keel;

namespace {

struct AttnCase {
  uint32_t head_dim, n_head, n_kv;
  int64_t pos0, n_tokens;
  runtime::KvType kv_type;
};

constexpr uint32_t kPage = 16;

struct Seq {
  int64_t pos0, n_tokens;
};

// softmax(q·K^T * scale) V over positions 0..pos of the token's sequence, reading K/V back from
// the cache's rows through the sequence's page table.
std::vector<float> naive(const AttnCase& s, const cpu::KvLayerView& kv, const backend::Batch& b,
                         const std::vector<float>& q, float scale) {
  const int hd = static_cast<int>(s.head_dim);
  const auto& g = kv.geo;
  std::vector<float> out(static_cast<size_t>(b.n_tokens * s.n_head * hd));
  std::vector<float> krow(hd), vrow(hd);
  for (int32_t si = 0; si < b.n_seqs; ++si) {
    const backend::SeqSlice& seq = b.seqs[si];
    const int32_t* pages = b.page_table + int64_t{seq.slot} * b.max_pages_per_seq;
    for (int64_t i = 0; i < seq.n_tokens; ++i)
      for (uint32_t h = 0; h < s.n_head; ++h) {
        const int64_t t = seq.first + i;
        const uint32_t kvh = h / (s.n_head / s.n_kv);
        const int64_t n = seq.pos0 + i + 1;
        std::vector<double> sc(static_cast<size_t>(n));
        double mx = -INFINITY;
        for (int64_t j = 0; j < n; ++j) {
          const uint8_t* kp = kv.k_page(pages[j / g.page_tokens]) +
                              (static_cast<size_t>(j % g.page_tokens) * g.n_kv_heads + kvh) * g.row_bytes();
          quant::dequantize_row(runtime::kv_element_type(g.type), kp, krow.data(), hd);
          double d = 0;
          for (int k = 0; k < hd; ++k) d += static_cast<double>(q[(t * s.n_head + h) * hd + k]) * krow[k];
          sc[j] = d * scale;
          mx = std::max(mx, sc[j]);
        }
        double sum = 0;
        for (auto& x : sc) sum += x = std::exp(x - mx);
        std::vector<double> acc(hd, 0.0);
        for (int64_t j = 0; j < n; ++j) {
          const uint8_t* vp = kv.v_page(pages[j / g.page_tokens]) +
                              (static_cast<size_t>(j % g.page_tokens) * g.n_kv_heads + kvh) * g.row_bytes();
          quant::dequantize_row(runtime::kv_element_type(g.type), vp, vrow.data(), hd);
          for (int k = 0; k < hd; ++k) acc[k] += sc[j] * vrow[k];
        }
        for (int k = 0; k < hd; ++k) out[(t * s.n_head + h) * hd + k] = static_cast<float>(acc[k] / sum);
      }
  }
  return out;
}

// The sequences of one call: a case's own, or it beside two others (a decode deep into its
// context, a short prefill) so that tasks span sequences and pages interleave in the pool.
void check_seqs(const AttnCase& s, const std::vector<Seq>& seqs, const cpu::AttentionKernels& kernels, int threads) {
  std::mt19937 rng(s.head_dim * 31 + s.n_head * 7 + static_cast<uint32_t>(s.pos0) + static_cast<uint32_t>(seqs.size()));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const auto n_seqs = static_cast<int32_t>(seqs.size());
  int32_t max_pages = 0, n_pages = 0;
  for (const Seq& q : seqs) {
    const auto p = static_cast<int32_t>((q.pos0 + q.n_tokens + kPage - 1) / kPage);
    max_pages = std::max(max_pages, p);
    n_pages += p;
  }
  runtime::KvGeometry geo;
  geo.type = s.kv_type;
  geo.n_layers = 1;
  geo.n_kv_heads = s.n_kv;
  geo.head_dim = s.head_dim;
  geo.page_tokens = kPage;
  geo.n_pages = static_cast<uint32_t>(n_pages + 3);  // spare pages stay unused
  cpu::CpuBackend be(threads);
  be.create_kv(geo);

  // Scattered page ids: a shuffled pool handed out in order.
  std::vector<int32_t> pool_ids(geo.n_pages);
  for (size_t i = 0; i < pool_ids.size(); ++i) pool_ids[i] = static_cast<int32_t>(i);
  std::shuffle(pool_ids.begin(), pool_ids.end(), rng);
  std::vector<int32_t> table(static_cast<size_t>(n_seqs * max_pages), -1);
  size_t next = 0;
  for (int32_t si = 0; si < n_seqs; ++si)
    for (int64_t p = 0; p < (seqs[si].pos0 + seqs[si].n_tokens + kPage - 1) / kPage; ++p)
      table[static_cast<size_t>(si * max_pages + p)] = pool_ids[next++];

  // Two calls: every sequence's earlier positions, then the query tokens.
  const int64_t width = int64_t{s.n_kv} * s.head_dim;
  auto write_call = [&](bool prefix, std::vector<backend::SeqSlice>& slices, std::vector<int32_t>& pos) {
    int64_t first = 0;
    slices.clear();
    pos.clear();
    for (int32_t si = 0; si < n_seqs; ++si) {
      const int64_t p0 = prefix ? 0 : seqs[si].pos0, n = prefix ? seqs[si].pos0 : seqs[si].n_tokens;
      if (n == 0) continue;
      slices.push_back({first, n, p0, si});
      for (int64_t i = 0; i < n; ++i) pos.push_back(static_cast<int32_t>(p0 + i));
      first += n;
    }
    backend::Batch b;
    b.n_tokens = first;
    b.pos = pos.data();
    b.n_seqs = static_cast<int32_t>(slices.size());
    b.seqs = slices.data();
    b.page_table = table.data();
    b.max_pages_per_seq = max_pages;
    return b;
  };
  std::vector<backend::SeqSlice> slices;
  std::vector<int32_t> pos;
  backend::Batch prefix = write_call(true, slices, pos);
  if (prefix.n_tokens > 0) {
    std::vector<float> k(static_cast<size_t>(prefix.n_tokens * width)), v(k.size());
    for (auto& x : k) x = normal(rng);
    for (auto& x : v) x = normal(rng);
    be.begin_batch(prefix);
    be.kv_write(0, k.data(), v.data());
  }
  backend::Batch b = write_call(false, slices, pos);
  std::vector<float> k(static_cast<size_t>(b.n_tokens * width)), v(k.size());
  for (auto& x : k) x = normal(rng);
  for (auto& x : v) x = normal(rng);
  be.begin_batch(b);
  be.kv_write(0, k.data(), v.data());
  std::vector<float> q(static_cast<size_t>(b.n_tokens * s.n_head * s.head_dim));
  for (auto& x : q) x = normal(rng);

  const size_t n_out = q.size();
  std::vector<float> out(n_out + 32, 12345.0f);  // 16 sentinels each side
  std::vector<float> ws(cpu::attention_workspace_bytes(geo, s.n_head, threads) / sizeof(float));
  cpu::AttentionArgs a;
  a.q = q.data();
  a.out = out.data() + 16;
  a.n_head = s.n_head;
  a.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  a.kv = {geo, be.kv_pages(0)};
  a.seqs = b.seqs;
  a.n_seqs = b.n_seqs;
  a.page_table = b.page_table;
  a.max_pages_per_seq = b.max_pages_per_seq;
  cpu::flash_attention_with(kernels, a, ws.data(), be.pool());
  auto want = naive(s, a.kv, b, q, a.scale);
  double max_err = 0;
  for (size_t i = 0; i < n_out; ++i) max_err = std::max(max_err, static_cast<double>(std::fabs(out[16 + i] - want[i])));
  EXPECT_LT(max_err, 2e-5) << "hd " << s.head_dim << " heads " << s.n_head << "/" << s.n_kv << " pos0 " << s.pos0
                           << " seqs " << seqs.size();
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(out[i], 12345.0f);
    EXPECT_EQ(out[16 + n_out + i], 12345.0f);
  }
}

void check(const AttnCase& s, const cpu::AttentionKernels& kernels, int threads) {
  check_seqs(s, {{s.pos0, s.n_tokens}}, kernels, threads);
  check_seqs(s, {{45, 1}, {s.pos0, s.n_tokens}, {0, 3}}, kernels, threads);
}

// Every kernel table this CPU runs besides the generic one, with the head sizes it takes.
struct SimdKernels {
  const cpu::AttentionKernels* kernels;
  uint32_t head_dim_multiple;
};
std::vector<SimdKernels> simd_kernels() {
  std::vector<SimdKernels> out;
#if defined(__x86_64__)
  if (cpu::isa_supported(cpu::Isa::avx2)) out.push_back({&cpu::attention_kernels_avx2(), 8});
  if (cpu::isa_supported(cpu::Isa::avx512)) out.push_back({&cpu::attention_kernels_avx512(), 16});
#elif defined(__aarch64__)
  if (cpu::isa_supported(cpu::Isa::neon)) out.push_back({&cpu::attention_kernels_neon(), 4});
#endif
  return out;
}

}  // namespace

TEST(Attention, TiledEqualsNaiveForHeadSizesGroupsOffsetsAndCacheTypes) {
  for (auto type : {runtime::KvType::f32, runtime::KvType::f16, runtime::KvType::q8_0})
    for (uint32_t hd : {64u, 128u, 256u})
      for (auto [heads, kvh] : {std::pair{4u, 4u}, std::pair{6u, 1u}, std::pair{8u, 2u}})
        for (auto [pos0, n] : {std::pair{int64_t{0}, int64_t{1}}, std::pair{int64_t{0}, int64_t{33}}, std::pair{int64_t{37}, int64_t{9}}}) {
          AttnCase s{hd, heads, kvh, pos0, n, type};
          check(s, cpu::attention_kernels_generic(), 2);
          // The SIMD tables on 1 thread for the offset cases, 2 for the others.
          for (const SimdKernels& k : simd_kernels()) check(s, *k.kernels, pos0 == 37 ? 1 : 2);
        }
}

TEST(Attention, OddHeadSizeUsesTheScalarPath) {
  AttnCase s{8, 8, 4, 20, 5, runtime::KvType::f32};  // stories260K's head size
  check(s, cpu::attention_kernels_generic(), 1);
  for (const SimdKernels& k : simd_kernels())
    if (s.head_dim % k.head_dim_multiple == 0) check(s, *k.kernels, 3);
}
