// CPU flash attention: the tiled online-softmax kernel (scalar and AVX2) equals a naive
// full-softmax reference over the same cached K/V, for several head sizes, GQA groups, chunk
// offsets and cache types, with several sequences in one call whose pages are scattered over the
// pool; outputs outside the written range stay untouched (sentinels).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <iterator>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "backend/cpu/attention.h"
#include "backend/cpu/attention_kernels.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/matmul.h"
#include "quant/blocks.h"
#include "quant/dequant.h"
#include "quant/quantize_q8_0.h"
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
// bf16 kernels round q, K, probabilities and V to 8 significant bits (relative error 2^-9 each):
// scores of unit-variance q and K move by about 2^-9, outputs by about as much relative to |V|
// (values up to ~4 here). The worst output of Bf16RowBlocksEqualNaiveWithinBf16Rounding measured
// 1.5e-2; f32 kernels stay within 2e-5.
constexpr double kBf16Tolerance = 3e-2;

void check_seqs(const AttnCase& s, const std::vector<Seq>& seqs, const cpu::AttentionKernels& kernels, int threads,
                cpu::AttentionPath path = cpu::AttentionPath::automatic, const cpu::AttentionBf16Kernels* bf16 = nullptr) {
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
  std::vector<float> ws(
      cpu::attention_workspace_bytes(geo, s.n_head, threads, bf16 != nullptr, b.n_seqs, b.n_tokens) / sizeof(float));
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
  a.workspace_floats = ws.size();
  cpu::flash_attention_with(kernels, a, ws.data(), be.pool(), path, bf16);
  auto want = naive(s, a.kv, b, q, a.scale);
  double max_err = 0;
  for (size_t i = 0; i < n_out; ++i) max_err = std::max(max_err, static_cast<double>(std::fabs(out[16 + i] - want[i])));
  EXPECT_LT(max_err, bf16 ? kBf16Tolerance : 2e-5) << (bf16 ? "bf16 " : "") << "hd " << s.head_dim << " heads " << s.n_head << "/" << s.n_kv << " pos0 " << s.pos0
                           << " n " << s.n_tokens << " seqs " << seqs.size() << " path " << static_cast<int>(path)
                           << " threads " << threads;
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(out[i], 12345.0f);
    EXPECT_EQ(out[16 + n_out + i], 12345.0f);
  }
}

void check(const AttnCase& s, const cpu::AttentionKernels& kernels, int threads,
           cpu::AttentionPath path = cpu::AttentionPath::automatic, const cpu::AttentionBf16Kernels* bf16 = nullptr) {
  check_seqs(s, {{s.pos0, s.n_tokens}}, kernels, threads, path, bf16);
  check_seqs(s, {{45, 1}, {s.pos0, s.n_tokens}, {0, 3}}, kernels, threads, path, bf16);
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

// Each kernel set alone (the automatic choice mixes them by task size) over odd chunk lengths,
// chunks that start or end on a page boundary (pages of 16), GQA groups of 1, 2, 3 and 6, and
// several sequences per call (a decode, a short prefill and the case), on 1 and 2 threads.
TEST(Attention, RowBlocksAndPerRowKernelsEachEqualNaive) {
  const std::pair<int64_t, int64_t> chunks[] = {{0, 1}, {0, 7}, {0, 16}, {0, 33}, {13, 19}, {16, 16}, {37, 9}, {5, 60}};
  // Every head size with every chunk; the GQA shapes rotate over them (each meets every head size
  // and, across head sizes, every chunk): the whole product ran 108 s under the sanitizers.
  const std::pair<uint32_t, uint32_t> shapes[] = {{4, 4}, {6, 1}, {8, 2}, {6, 2}};
  for (auto path : {cpu::AttentionPath::per_row, cpu::AttentionPath::row_blocks})
    for (auto type : {runtime::KvType::f16, runtime::KvType::q8_0})
      for (uint32_t hd : {64u, 128u, 256u})
        for (size_t c = 0; c < std::size(chunks); ++c) {
          const auto [heads, kvh] = shapes[(c + hd / 64) % std::size(shapes)];
          const AttnCase s{hd, heads, kvh, chunks[c].first, chunks[c].second, type};
          const int threads = 1 + static_cast<int>(c % 2);
          check(s, cpu::attention_kernels_generic(), threads, path);
          for (const SimdKernels& k : simd_kernels()) check(s, *k.kernels, threads, path);
        }
}

TEST(Attention, RowBlocksOnOddHeadSizesAndF32Cache) {
  for (auto [hd, heads, kvh] : {std::tuple{8u, 8u, 4u}, std::tuple{24u, 3u, 1u}, std::tuple{80u, 4u, 2u}}) {
    const AttnCase s{hd, heads, kvh, 11, 29, runtime::KvType::f32};
    check(s, cpu::attention_kernels_generic(), 2, cpu::AttentionPath::row_blocks);
    for (const SimdKernels& k : simd_kernels())
      if (hd % k.head_dim_multiple == 0) check(s, *k.kernels, 1, cpu::AttentionPath::row_blocks);
  }
}

namespace {

// The single-tile kernel checks below keep their outputs between 16 sentinels each side.
constexpr float kSentinel = 12345.0f;

// Scores or probabilities, n_keys rows of ld floats (kernel lanes r < n_rows), between sentinels.
std::vector<float> guarded_tile(int64_t n_keys, int64_t ld) {
  return std::vector<float>(static_cast<size_t>(n_keys * ld) + 32, kSentinel);
}

// A guarded_tile a kernel wrote against its reference: lanes within tol, every other float (lanes
// past n_rows, the sentinels) untouched. Stops at the first difference (ASSERT_NO_FATAL_FAILURE).
void expect_tile_near(const std::vector<float>& got, const std::vector<float>& want, int64_t ld, int n_rows, float tol,
                      const char* what) {
  const size_t n = got.size() - 32;
  for (size_t i = 0; i < got.size(); ++i) {
    const bool lane = i >= 16 && i < 16 + n && static_cast<int64_t>((i - 16) % ld) < n_rows;
    if (lane) {
      ASSERT_NEAR(got[i], want[i], tol) << what << " " << i;
    } else {
      ASSERT_EQ(got[i], kSentinel) << what << " sentinel " << i;
    }
  }
}

// n random accumulators between sentinels.
std::vector<float> guarded_accumulators(size_t n, std::mt19937& rng, std::normal_distribution<float>& normal) {
  std::vector<float> acc(n + 32);
  for (auto& x : acc) x = normal(rng);
  for (int i = 0; i < 16; ++i) acc[i] = acc[acc.size() - 1 - i] = kSentinel;
  return acc;
}

// guarded_accumulators a kernel updated against its reference: within 1e-4 relative, sentinels
// untouched. Stops at the first difference (ASSERT_NO_FATAL_FAILURE).
void expect_accumulators_near(const std::vector<float>& got, const std::vector<float>& want) {
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-4f * (1.0f + std::fabs(want[i]))) << i;
  for (int i = 0; i < 16; ++i) {
    ASSERT_EQ(got[i], kSentinel);
    ASSERT_EQ(got[got.size() - 1 - i], kSentinel);
  }
}

// The SIMD row-block kernels against their scalar twins on one tile, outputs between sentinels.
void check_block_kernels(const cpu::AttentionKernels& simd, int hd, int n_rows, int64_t n_keys, int64_t first_visible,
                         int group) {
  SCOPED_TRACE("hd " + std::to_string(hd) + " rows " + std::to_string(n_rows) + " keys " + std::to_string(n_keys) +
               " first_visible " + std::to_string(first_visible) + " group " + std::to_string(group));
  const cpu::AttentionKernels& ref = cpu::attention_kernels_generic();
  std::mt19937 rng(static_cast<uint32_t>(hd * 7 + n_rows * 3 + n_keys));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t ld = n_rows + 16;  // a stride wider than the rows: lanes past n_rows stay untouched
  std::vector<float> qt(static_cast<size_t>(hd * ld)), keys(static_cast<size_t>(n_keys * hd)), values(keys.size());
  for (auto& x : qt) x = normal(rng) * 0.2f;
  for (auto& x : keys) x = normal(rng);
  for (auto& x : values) x = normal(rng);
  std::vector<float> st_ref = guarded_tile(n_keys, ld), st = st_ref;
  ref.scores_rows(qt.data(), ld, n_rows, keys.data(), n_keys, hd, st_ref.data() + 16, ld);
  simd.scores_rows(qt.data(), ld, n_rows, keys.data(), n_keys, hd, st.data() + 16, ld);
  ASSERT_NO_FATAL_FAILURE(expect_tile_near(st, st_ref, ld, n_rows, 1e-4f, "score"));

  // Softmax from a running state (m, l) as a second tile would see it, on the same scores.
  st = st_ref;
  std::vector<float> m_ref(static_cast<size_t>(n_rows)), l_ref(m_ref.size()), c_ref(m_ref.size());
  for (int r = 0; r < n_rows; ++r) {
    m_ref[r] = normal(rng);
    l_ref[r] = 1.0f + std::fabs(normal(rng));
  }
  std::vector<float> m = m_ref, l = l_ref, c(m_ref.size());
  ref.softmax_rows(st_ref.data() + 16, ld, n_rows, n_keys, first_visible, group, m_ref.data(), l_ref.data(), c_ref.data());
  simd.softmax_rows(st.data() + 16, ld, n_rows, n_keys, first_visible, group, m.data(), l.data(), c.data());
  for (int r = 0; r < n_rows; ++r) {
    ASSERT_EQ(m[r], m_ref[r]) << "row " << r;
    ASSERT_NEAR(c[r], c_ref[r], 1e-6f * c_ref[r] + 1e-30f) << "row " << r;
    ASSERT_NEAR(l[r], l_ref[r], 1e-5f * l_ref[r]) << "row " << r;
  }
  ASSERT_NO_FATAL_FAILURE(expect_tile_near(st, st_ref, ld, n_rows, 2e-6f, "probability"));

  std::vector<float> acc_ref = guarded_accumulators(static_cast<size_t>(n_rows * hd), rng, normal), acc = acc_ref;
  ref.accumulate_rows(acc_ref.data() + 16, c_ref.data(), n_rows, st_ref.data() + 16, ld, values.data(), n_keys, hd);
  simd.accumulate_rows(acc.data() + 16, c_ref.data(), n_rows, st_ref.data() + 16, ld, values.data(), n_keys, hd);
  ASSERT_NO_FATAL_FAILURE(expect_accumulators_near(acc, acc_ref));
}

}  // namespace

TEST(Attention, RowBlockKernelsEqualTheirScalarTwins) {
  for (int hd : {16, 64, 128, 256})
    for (int n_rows : {16, 32, 48, 64})
      for (int64_t n_keys : {int64_t{1}, int64_t{5}, int64_t{13}, int64_t{31}, int64_t{33}, int64_t{256}})
        for (auto [first_visible, group] : {std::pair{int64_t{1000}, 2}, std::pair{int64_t{1}, 1}, std::pair{int64_t{-3}, 3},
                                            std::pair{int64_t{4}, 2}}) {
          for (const SimdKernels& k : simd_kernels())
            check_block_kernels(*k.kernels, hd, n_rows, n_keys, first_visible, group);
        }
}

// softmax_rows skips the masks on keys every lane of a vector sees and the exponentials of keys
// none sees: a row's step must come out bit for bit the same whichever path its keys took. Each
// row of a block whose rows see different key counts (masks on the keys between) against the same
// row alone (every row of the block a copy of it, seeing what it sees: no key masked), from
// random running states, for key counts odd and even and visibility below, across and past a tile.
TEST(Attention, SoftmaxRowsOfARowDoNotDependOnTheRowsBesideIt) {
  std::vector<SimdKernels> tables = simd_kernels();
  tables.push_back({&cpu::attention_kernels_generic(), 1});
  std::mt19937 rng(57);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto bits = [](float x) { return std::bit_cast<uint32_t>(x); };
  constexpr int n_rows = 48;
  int masked_rows = 0;  // rows that shared a vector with rows seeing another key count
  for (const SimdKernels& t : tables)
    for (int64_t n_keys : {int64_t{1}, int64_t{2}, int64_t{7}, int64_t{33}, int64_t{256}})
      for (auto [first_visible, group] : {std::pair{int64_t{1}, 1}, std::pair{int64_t{-3}, 3}, std::pair{int64_t{4}, 2},
                                          std::pair{n_keys - 20, 1}, std::pair{n_keys - 1, 5}, std::pair{int64_t{1000}, 2}}) {
        SCOPED_TRACE("keys " + std::to_string(n_keys) + " first_visible " + std::to_string(first_visible) + " group " +
                     std::to_string(group));
        std::vector<float> block(static_cast<size_t>(n_keys * n_rows)), m(n_rows), l(n_rows), c(n_rows);
        for (auto& x : block) x = 3.0f * normal(rng);
        for (int r = 0; r < n_rows; ++r) {
          m[r] = 2.0f * normal(rng);
          l[r] = 1.0f + std::fabs(normal(rng));
        }
        const std::vector<float> scores = block, m0 = m, l0 = l;
        t.kernels->softmax_rows(block.data(), n_rows, n_rows, n_keys, first_visible, group, m.data(), l.data(), c.data());
        for (int r = 0; r < n_rows; ++r) {
          const int64_t visible = std::clamp<int64_t>(first_visible + r / group, 0, n_keys);
          masked_rows += visible != std::clamp<int64_t>(first_visible + (r - r % 8) / group, 0, n_keys) ||
                         visible != std::clamp<int64_t>(first_visible + (r - r % 8 + 7) / group, 0, n_keys);
          std::vector<float> alone(block.size()), am(n_rows, m0[r]), al(n_rows, l0[r]), ac(n_rows);
          for (int64_t j = 0; j < n_keys; ++j) std::fill_n(alone.begin() + j * n_rows, n_rows, scores[j * n_rows + r]);
          // group n_rows: every row of the block sees first_visible keys.
          t.kernels->softmax_rows(alone.data(), n_rows, n_rows, n_keys, visible, n_rows, am.data(), al.data(), ac.data());
          ASSERT_EQ(bits(am[0]), bits(m[r])) << "row " << r;
          ASSERT_EQ(bits(al[0]), bits(l[r])) << "row " << r;
          ASSERT_EQ(bits(ac[0]), bits(c[r])) << "row " << r;
          for (int64_t j = 0; j < n_keys; ++j)
            ASSERT_EQ(bits(alone[j * n_rows]), bits(block[j * n_rows + r])) << "row " << r << " key " << j;
        }
      }
  EXPECT_GT(masked_rows, 0);
}

namespace {

// The SIMD exponentials' scalar model (exp_avx2, exp_neon, exp_nonpositive of simd_avx512.h) for
// x <= 0: x = n ln2 + r (n rounded to nearest even, ln2 in two parts), a degree-6 polynomial for
// e^r by FMAs, times 2^n.
float exp_model(float x) {
  x = std::max(x, -87.0f);
  const float n = std::nearbyint(x * 1.44269504088896341f);
  float r = std::fma(-n, 0.693359375f, x);
  r = std::fma(-n, -2.12194440e-4f, r);
  float p = 1.0f / 720.0f;
  for (float c : {1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f}) p = std::fma(p, r, c);
  return p * std::ldexp(1.0f, static_cast<int>(n));
}

}  // namespace

// Each SIMD table's softmax_rows probabilities bit for bit exp_model of the scores (every row's
// running max 0, so each exponential's argument is the score itself), over scores from 0 down past
// the clamp at -87, and the corner values of the range reduction.
TEST(Attention, SoftmaxExponentialsEqualTheirScalarModel) {
  constexpr int n_rows = 32;
  constexpr int64_t n_keys = 999;
  std::mt19937 rng(71);
  std::uniform_real_distribution<float> uniform(-100.0f, 0.0f);
  std::vector<float> scores(static_cast<size_t>(n_keys * n_rows));
  for (auto& x : scores) x = uniform(rng);
  const float corners[] = {0.0f,     -0.0f,  -1e-30f, -1e-7f, -0.34657359f, -0.34657362f, -1.0f, -86.99f,
                           -87.0f,   -87.01f, -87.5f, -88.0f, -103.3f,      -1e30f};
  std::copy(std::begin(corners), std::end(corners), scores.begin());
  for (int i = 0; i < 3000; ++i) scores[200 + i] = -87.0f * static_cast<float>(i) / 2999.0f;  // the range, evenly
  for (const SimdKernels& t : simd_kernels()) {
    std::vector<float> st = scores, m(n_rows, 0.0f), l(n_rows, 0.0f), c(n_rows);
    t.kernels->softmax_rows(st.data(), n_rows, n_rows, n_keys, n_keys, 1, m.data(), l.data(), c.data());
    for (size_t i = 0; i < st.size(); ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(st[i]), std::bit_cast<uint32_t>(exp_model(scores[i])))
          << "score " << scores[i] << " (" << i << ")";
  }
}

// Decode over an f16 or q8_0 cache reads its rows in place (scores_f16 / accumulate_f16,
// scores_q8 / accumulate_q8), for a GQA group's query rows at once: each table's results, row by
// row, bit for bit as its own f32 kernels on the converted rows one row at a time, for head sizes
// it takes, key counts across its 4-key and vector steps, rows a cache's stride apart (q8_0 rows
// 2-byte aligned but not 4, as a cache of 34-byte blocks has them), and group sizes across its
// pieces of rows.
namespace {

void check_in_place_kernels(backend::KvType type) {
  const bool q8 = type == backend::KvType::q8_0;
  std::vector<SimdKernels> tables = simd_kernels();
  tables.push_back({&cpu::attention_kernels_generic(), 1});
  std::mt19937 rng(31);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  int checked = 0;
  for (const SimdKernels& t : tables) {
    const cpu::AttentionKernels& k = *t.kernels;
    if (q8 ? !k.scores_q8 || !k.accumulate_q8 : !k.scores_f16 || !k.accumulate_f16) continue;
    for (int hd : {16, 64, 128, 256, 40, 24}) {
      if (hd % static_cast<int>(t.head_dim_multiple) != 0 || (q8 && hd % 32 != 0)) continue;
      for (int64_t n_keys : {int64_t{1}, int64_t{3}, int64_t{4}, int64_t{7}, int64_t{37}, int64_t{256}}) {
        for (int n_q : {1, 2, 3, 6, 7}) {
          // Another head's rows between two of this one's; bytes.
          const int64_t row_bytes = q8 ? hd / 32 * 34 : 2 * hd, stride = 3 * row_bytes + (q8 ? 6 : 16);
          std::vector<uint8_t> rows(static_cast<size_t>(n_keys * stride + row_bytes));
          std::vector<float> tile(static_cast<size_t>(n_keys * hd));
          for (int64_t j = 0; j < n_keys; ++j) {
            uint8_t* row = rows.data() + j * stride;
            for (int i = 0; i < hd; ++i) {
              if (q8) {  // blocks of an f16 scale (normal, some subnormal) and 32 quants
                uint8_t* block = row + i / 32 * 34;
                if (i % 32 == 0) {
                  const uint16_t d = quant::f32_to_f16(normal(rng) * (j % 5 == 4 ? 1e-6f : 0.02f));
                  std::memcpy(block, &d, sizeof d);
                }
                block[2 + i % 32] = static_cast<uint8_t>(static_cast<int8_t>(rng() % 255 - 127));
              } else {
                const uint16_t h = quant::f32_to_f16(normal(rng));
                std::memcpy(row + 2 * i, &h, sizeof h);
              }
            }
            if (q8) {
              quant::dequantize_row(quant::Type::Q8_0, row, tile.data() + j * hd, hd);
            } else {
              for (int i = 0; i < hd; ++i) {
                uint16_t h;
                std::memcpy(&h, row + 2 * i, sizeof h);
                tile[j * hd + i] = quant::f16_to_f32(h);
              }
            }
          }
          const int64_t ldp = n_keys + 5;
          std::vector<float> q(static_cast<size_t>(n_q * hd)), p(static_cast<size_t>(n_q * ldp)), acc0(q.size()),
              correction(n_q);
          for (auto& x : q) x = normal(rng);
          for (auto& x : p) x = std::abs(normal(rng));
          for (auto& x : acc0) x = normal(rng);
          for (auto& x : correction) x = std::abs(normal(rng));

          std::vector<float> got(static_cast<size_t>(n_q * n_keys)), got_max(n_q);
          std::vector<float> acc_got = acc0;
          if (q8) {
            k.scores_q8(q.data(), n_q, rows.data(), stride, n_keys, hd, 0.125f, got.data(), got_max.data());
            k.accumulate_q8(acc_got.data(), correction.data(), n_q, p.data(), ldp, rows.data(), stride, n_keys, hd);
          } else {
            const auto* halves = reinterpret_cast<const uint16_t*>(rows.data());  // std::vector's storage is aligned
            k.scores_f16(q.data(), n_q, halves, stride / 2, n_keys, hd, 0.125f, got.data(), got_max.data());
            k.accumulate_f16(acc_got.data(), correction.data(), n_q, p.data(), ldp, halves, stride / 2, n_keys, hd);
          }
          for (int r = 0; r < n_q; ++r) {
            const std::string where = "hd " + std::to_string(hd) + ", " + std::to_string(n_keys) + " keys, row " +
                                      std::to_string(r) + " of " + std::to_string(n_q);
            std::vector<float> want(n_keys);
            const float want_max = k.scores(q.data() + r * hd, tile.data(), n_keys, hd, 0.125f, want.data());
            ASSERT_EQ(std::memcmp(want.data(), got.data() + r * n_keys, want.size() * sizeof(float)), 0)
                << "scores, " << where;
            ASSERT_EQ(want_max, got_max[r]) << where;
            std::vector<float> acc_want(acc0.begin() + r * hd, acc0.begin() + (r + 1) * hd);
            k.accumulate(acc_want.data(), correction[r], p.data() + r * ldp, tile.data(), n_keys, hd);
            ASSERT_EQ(std::memcmp(acc_want.data(), acc_got.data() + r * hd, acc_want.size() * sizeof(float)), 0)
                << "accumulate, " << where;
          }
          ++checked;
        }
      }
    }
  }
  EXPECT_GT(checked, 0);
}

}  // namespace

TEST(Attention, F16RowKernelsEqualTheF32KernelsOnConvertedRows) { check_in_place_kernels(backend::KvType::f16); }
TEST(Attention, Q8RowKernelsEqualTheF32KernelsOnDequantizedRows) { check_in_place_kernels(backend::KvType::q8_0); }

// f32 -> f16 (the K/V cache's writes): each SIMD table bit for bit as the scalar conversion on
// finite values (normal, subnormal and overflowing in f16, exact ties), every length up to 40
// (vector bodies and scalar tails), nothing written past the end.
TEST(Attention, F32ToF16EqualsTheScalarConversion) {
  std::mt19937 rng(29);
  std::uniform_real_distribution<float> exponent(-30.0f, 18.0f);
  std::vector<float> x;
  for (int i = 0; i < 40; ++i) {
    const float magnitude = std::exp2(exponent(rng));
    x.push_back(i % 2 ? -magnitude : magnitude);
  }
  x[3] = 1.0f + 1.0f / 2048;   // a tie between two f16 values: rounds to even (1.0)
  x[4] = 1.0f + 3.0f / 2048;   // the other tie: rounds up (to even)
  x[5] = 0.0f;
  x[6] = -0.0f;
  x[7] = 65520.0f;             // the first value that rounds to infinity
  x[8] = 3.0f * std::ldexp(1.0f, -26);  // a subnormal tie
  for (const SimdKernels& k : simd_kernels())
    for (int64_t n = 0; n <= static_cast<int64_t>(x.size()); ++n) {
      std::vector<uint16_t> got(x.size() + 1, 0xABCD);
      k.kernels->f32_to_f16(x.data(), got.data(), n);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], quant::f32_to_f16(x[i])) << "n=" << n << " i=" << i << " x=" << x[i];
      for (size_t i = n; i < got.size(); ++i) ASSERT_EQ(got[i], 0xABCD) << "wrote past n=" << n;
    }
  const cpu::AttentionKernels& generic = cpu::attention_kernels_generic();
  std::vector<uint16_t> got(x.size());
  generic.f32_to_f16(x.data(), got.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(got[i], quant::f32_to_f16(x[i])) << "generic, i=" << i;
}

// f32 -> q8_0 (a q8_0 cache's writes): each table's blocks bit for bit quant::quantize_row_q8_0's,
// on rows whose products x * id land exactly on halves (rounded away from zero, both signs), at
// random, small (scales subnormal in f16, or below its range), all zero, and with the extremes in
// any lane; nothing written past the row. (Inputs below about 3e-37 make 1 / d overflow, where
// the scalar quantizer's std::lround is undefined: a cache never holds such rows.)
TEST(Attention, F32ToQ8EqualsTheScalarQuantizer) {
  std::mt19937 rng(37);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  constexpr int kBlocks = 9;
  std::vector<float> x(32 * kBlocks);
  for (int i = 0; i < 32; ++i) x[i] = i == 5 ? -127.0f : static_cast<float>(i % 7 - 3) + (i % 2 ? 0.5f : -0.5f);  // d = 1
  for (int i = 32; i < 64; ++i) x[i] = 0.0f;
  for (int i = 64; i < 96; ++i) x[i] = normal(rng) * 1e-4f;    // d subnormal in f16
  for (int i = 96; i < 128; ++i) x[i] = normal(rng) * 1e-30f;  // d below f16's range
  for (int i = 128; i < 32 * kBlocks; ++i) x[i] = normal(rng) * (i / 32 % 2 ? 3.0f : 0.01f);
  x[32 * 5 + 31] = 40.0f;  // the block maximum in the last lane
  x[32 * 6] = -40.0f;      // and negative in the first
  std::vector<SimdKernels> tables = simd_kernels();
  tables.push_back({&cpu::attention_kernels_generic(), 1});
  std::vector<uint8_t> want(34 * kBlocks);
  quant::quantize_row_q8_0(x.data(), want.data(), static_cast<int64_t>(x.size()));
  for (const SimdKernels& t : tables) {
    std::vector<uint8_t> got(want.size() + 8, 0xAB);
    t.kernels->f32_to_q8_0(x.data(), got.data(), static_cast<int64_t>(x.size()));
    for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], want[i]) << "byte " << i << " (block " << i / 34 << ")";
    for (size_t i = want.size(); i < got.size(); ++i) ASSERT_EQ(got[i], 0xAB) << "wrote past the row";
  }
}

namespace {

// The bf16 tables this CPU runs: the scalar twin always (even head sizes), SIMD where present.
struct Bf16Kernels {
  const cpu::AttentionBf16Kernels* kernels;
  uint32_t head_dim_multiple;
};
std::vector<Bf16Kernels> bf16_kernels() {
  std::vector<Bf16Kernels> out{{&cpu::attention_bf16_kernels_generic(), 2}};
  if (const cpu::AttentionBf16Kernels* simd = cpu::attention_bf16_kernels_for(16)) out.push_back({simd, 16});
#if defined(__x86_64__)
  if (cpu::amx_bf16_usable()) out.push_back({&cpu::attention_bf16_kernels_amx(), 32});
#endif
  return out;
}

}  // namespace

// Fast mode's bf16 row blocks against the double reference, within bf16's rounding: each table
// alone (row_blocks) and mixed with the f32 per-row kernels (automatic), odd chunks, chunks on
// page boundaries, GQA groups 1, 2, 3 and 6, several sequences per call, 1 and 2 threads.
TEST(Attention, Bf16RowBlocksEqualNaiveWithinBf16Rounding) {
  const std::pair<int64_t, int64_t> chunks[] = {{0, 1}, {0, 33}, {13, 19}, {16, 16}, {5, 60}, {37, 130}};
  // Every head size with every chunk; the GQA shapes and the cache types rotate over them (each
  // meets every head size and path and, across head sizes, every chunk): the whole product ran 6
  // minutes under the sanitizers, shapes alone rotating 96 s.
  const std::pair<uint32_t, uint32_t> shapes[] = {{4, 4}, {6, 1}, {8, 2}, {6, 2}};
  const runtime::KvType types[] = {runtime::KvType::f16, runtime::KvType::q8_0, runtime::KvType::f32};
  for (const Bf16Kernels& bf : bf16_kernels())
    for (auto path : {cpu::AttentionPath::automatic, cpu::AttentionPath::row_blocks})
      for (uint32_t hd : {64u, 128u, 256u})
        for (size_t c = 0; c < std::size(chunks); ++c) {
          const auto [heads, kvh] = shapes[(c + hd / 64) % std::size(shapes)];
          const auto type = types[(c + hd / 64 + static_cast<size_t>(path)) % std::size(types)];
          const AttnCase s{hd, heads, kvh, chunks[c].first, chunks[c].second, type};
          const int threads = 1 + static_cast<int>(c % 2);
          check(s, cpu::attention_kernels_for(static_cast<int>(hd)), threads, path, bf.kernels);
        }
}

namespace {

// The SIMD bf16 kernels against their scalar twin on one tile (operands packed by each table's
// own packers from the same floats), outputs between sentinels. Both round to nearest even, so
// packed operands match bit for bit; sums differ only in order.
void check_bf16_kernels(const cpu::AttentionBf16Kernels& simd, int hd, int n_rows, int64_t n_keys) {
  SCOPED_TRACE("hd " + std::to_string(hd) + " rows " + std::to_string(n_rows) + " keys " + std::to_string(n_keys));
  const cpu::AttentionBf16Kernels& ref = cpu::attention_bf16_kernels_generic();
  std::mt19937 rng(static_cast<uint32_t>(hd * 5 + n_rows * 3 + n_keys));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  constexpr uint16_t kMark = 0xABCD;
  const int64_t n_pairs = (n_keys + 1) / 2;
  std::vector<float> q(static_cast<size_t>(hd * n_rows)), keys(static_cast<size_t>(n_keys * hd)), values(keys.size());
  for (auto& x : q) x = normal(rng) * 0.1f;
  for (auto& x : keys) x = normal(rng);
  for (auto& x : values) x = normal(rng);

  // Packers: keys, values (odd counts completed with zeros), queries through pack_probabilities
  // (the same pair layout over rows).
  auto packed = [&](size_t n, auto pack) {
    std::vector<uint16_t> a(n + 32, kMark), b(n + 32, kMark);
    pack(ref, a.data() + 16);
    pack(simd, b.data() + 16);
    EXPECT_EQ(a, b);
    for (int i = 0; i < 16; ++i) EXPECT_EQ(b[i], kMark);
    for (int i = 0; i < 16; ++i) EXPECT_EQ(b[n + 16 + i], kMark);
    return a;
  };
  auto kb = packed(static_cast<size_t>(n_keys * hd),
                   [&](const cpu::AttentionBf16Kernels& k, uint16_t* o) { k.pack_keys(keys.data(), n_keys, hd, o); });
  auto vb = packed(static_cast<size_t>(n_pairs * 2 * hd),
                   [&](const cpu::AttentionBf16Kernels& k, uint16_t* o) { k.pack_values(values.data(), n_keys, hd, o); });
  auto qp = packed(static_cast<size_t>(hd * n_rows), [&](const cpu::AttentionBf16Kernels& k, uint16_t* o) {
    k.pack_probabilities(q.data(), n_rows, n_rows, hd, o);
  });

  const int64_t ld = n_rows + 16;  // lanes past n_rows stay untouched
  std::vector<float> st_ref = guarded_tile(n_keys, ld), st = st_ref;
  ref.scores_rows(qp.data() + 16, n_rows, kb.data() + 16, n_keys, hd, st_ref.data() + 16, ld);
  simd.scores_rows(qp.data() + 16, n_rows, kb.data() + 16, n_keys, hd, st.data() + 16, ld);
  ASSERT_NO_FATAL_FAILURE(expect_tile_near(st, st_ref, ld, n_rows, 1e-4f, "score"));

  // pack_f16 and pack_q8 on a cache's rows (stride apart): what the packers make of the rows
  // converted (k32, v32), each table's output between sentinels.
  auto check_in_place = [&](const std::vector<float>& k32, const std::vector<float>& v32, auto pack_in_place) {
    const auto want_k = packed(k32.size(), [&](const cpu::AttentionBf16Kernels& k, uint16_t* o) {
      k.pack_keys(k32.data(), n_keys, hd, o);
    });
    const auto want_v = packed(static_cast<size_t>(n_pairs * 2 * hd), [&](const cpu::AttentionBf16Kernels& k, uint16_t* o) {
      k.pack_values(v32.data(), n_keys, hd, o);
    });
    for (const cpu::AttentionBf16Kernels* table : {&ref, &simd}) {
      std::vector<uint16_t> kb(want_k.size(), kMark), vb(want_v.size(), kMark);
      pack_in_place(*table, kb.data() + 16, vb.data() + 16);
      EXPECT_EQ(kb, want_k) << (table == &ref ? "generic" : "simd");
      EXPECT_EQ(vb, want_v) << (table == &ref ? "generic" : "simd");
    }
  };
  {
    const int64_t stride = hd + 24;
    std::vector<uint16_t> k16(static_cast<size_t>(n_keys * stride)), v16(k16.size());
    std::vector<float> k32(keys.size()), v32(values.size());
    for (int64_t j = 0; j < n_keys; ++j)
      for (int i = 0; i < hd; ++i) {
        k16[j * stride + i] = quant::f32_to_f16(keys[j * hd + i]);
        v16[j * stride + i] = quant::f32_to_f16(values[j * hd + i]);
        k32[j * hd + i] = quant::f16_to_f32(k16[j * stride + i]);
        v32[j * hd + i] = quant::f16_to_f32(v16[j * stride + i]);
      }
    check_in_place(k32, v32, [&](const cpu::AttentionBf16Kernels& t, uint16_t* kb, uint16_t* vb) {
      t.pack_f16(k16.data(), v16.data(), stride, n_keys, hd, kb, vb);
    });
  }
  if (hd % 32 == 0) {  // q8_0 rows 2-byte aligned, as in a cache
    const int64_t stride = static_cast<int64_t>(quant::row_bytes(quant::Type::Q8_0, static_cast<uint64_t>(hd))) + 6;
    std::vector<uint8_t> k8(static_cast<size_t>(n_keys * stride)), v8(k8.size());
    std::vector<float> k32(keys.size()), v32(values.size());
    for (int64_t j = 0; j < n_keys; ++j) {
      quant::quantize_row_q8_0(keys.data() + j * hd, k8.data() + j * stride, hd);
      quant::quantize_row_q8_0(values.data() + j * hd, v8.data() + j * stride, hd);
      quant::dequantize_row(quant::Type::Q8_0, k8.data() + j * stride, k32.data() + j * hd, hd);
      quant::dequantize_row(quant::Type::Q8_0, v8.data() + j * stride, v32.data() + j * hd, hd);
    }
    check_in_place(k32, v32, [&](const cpu::AttentionBf16Kernels& t, uint16_t* kb, uint16_t* vb) {
      t.pack_q8(k8.data(), v8.data(), stride, n_keys, hd, kb, vb);
    });
  }

  // softmax_pack: bit for bit softmax_rows of the f32 table beside it, then pack_probabilities
  // (every row seeing all keys; rows a key apart in pairs; the first rows seeing a few); the
  // scalar and SIMD tables within rounding of each other (exp differs in its last bits).
  for (const auto& visibility : {std::pair<int64_t, int>{n_keys, 1}, {1, 2}, {(n_keys + 1) / 2, 3}}) {
    const int64_t first_visible = visibility.first;  // named copies: lambdas below capture them
    const int group = visibility.second;
    SCOPED_TRACE("first_visible " + std::to_string(first_visible) + " group " + std::to_string(group));
    struct State {
      std::vector<float> m, l, c;
      std::vector<uint16_t> pp;
    };
    State start{std::vector<float>(static_cast<size_t>(n_rows)), std::vector<float>(static_cast<size_t>(n_rows)),
                std::vector<float>(static_cast<size_t>(n_rows)),
                std::vector<uint16_t>(static_cast<size_t>(n_pairs * 2 * n_rows) + 32, kMark)};
    for (int r = 0; r < n_rows; ++r) {
      start.m[r] = normal(rng);
      start.l[r] = 1.0f + std::fabs(normal(rng));
    }
    auto fused = [&](const cpu::AttentionBf16Kernels& k) {
      State o = start;
      k.softmax_pack(st_ref.data() + 16, ld, n_rows, n_keys, first_visible, group, o.m.data(), o.l.data(), o.c.data(),
                     o.pp.data() + 16);
      return o;
    };
    auto unfused = [&](const cpu::AttentionKernels& f32, const cpu::AttentionBf16Kernels& k) {
      State o = start;
      std::vector<float> probabilities = st_ref;
      f32.softmax_rows(probabilities.data() + 16, ld, n_rows, n_keys, first_visible, group, o.m.data(), o.l.data(),
                       o.c.data());
      k.pack_probabilities(probabilities.data() + 16, ld, n_rows, n_keys, o.pp.data() + 16);
      return o;
    };
    const State a = fused(ref), b = fused(simd);
    for (const auto& [got, want, what] :
         {std::tuple{&a, unfused(cpu::attention_kernels_generic(), ref), "generic"},
          std::tuple{&b, unfused(cpu::attention_kernels_for(hd), simd), "simd"}}) {
      EXPECT_EQ(got->m, want.m) << what;
      EXPECT_EQ(got->l, want.l) << what;
      EXPECT_EQ(got->c, want.c) << what;
      EXPECT_EQ(got->pp, want.pp) << what;
    }
    for (int r = 0; r < n_rows; ++r) {
      ASSERT_EQ(b.m[r], a.m[r]) << "row " << r;
      ASSERT_NEAR(b.c[r], a.c[r], 1e-6f * a.c[r] + 1e-30f) << "row " << r;
      ASSERT_NEAR(b.l[r], a.l[r], 1e-5f * a.l[r]) << "row " << r;
    }
    for (size_t i = 0; i < a.pp.size(); ++i) {
      const float x = quant::bf16_to_f32(a.pp[i]), y = quant::bf16_to_f32(b.pp[i]);
      ASSERT_NEAR(y, x, std::fabs(x) / 128) << "probability " << i;  // a bf16 step either way
    }
  }

  // Probabilities in (0, 1] from the scores; odd key counts completed with zeros.
  for (int64_t j = 0; j < n_keys; ++j)
    for (int r = 0; r < n_rows; ++r) st_ref[16 + j * ld + r] = std::exp(-std::fabs(st_ref[16 + j * ld + r]));
  auto pp = packed(static_cast<size_t>(n_pairs * 2 * n_rows), [&](const cpu::AttentionBf16Kernels& k, uint16_t* o) {
    k.pack_probabilities(st_ref.data() + 16, ld, n_rows, n_keys, o);
  });

  std::vector<float> correction(static_cast<size_t>(n_rows));
  for (auto& c : correction) c = std::exp(-std::fabs(normal(rng)));
  std::vector<float> acc_ref = guarded_accumulators(static_cast<size_t>(n_rows * hd), rng, normal), acc = acc_ref;
  ref.accumulate_rows(acc_ref.data() + 16, correction.data(), n_rows, pp.data() + 16, vb.data() + 16, n_keys, hd);
  simd.accumulate_rows(acc.data() + 16, correction.data(), n_rows, pp.data() + 16, vb.data() + 16, n_keys, hd);
  ASSERT_NO_FATAL_FAILURE(expect_accumulators_near(acc, acc_ref));
}

}  // namespace

// The AMX tiles: whole tiles of 16 keys (scores) and 32 keys (sums) and the AVX-512 kernels' tails
// beside them, row blocks of 16 and 32, calls longer than one transposed V tile (256 keys).
TEST(Attention, AmxKernelsEqualTheirScalarTwins) {
#if defined(__x86_64__)
  if (!cpu::amx_bf16_usable()) GTEST_SKIP() << "no AMX-BF16 tiles on this CPU, or the OS does not grant them";
  for (int hd : {64, 128, 256})
    for (int n_rows : {16, 32, 48, 128})
      for (int64_t n_keys : {1, 15, 16, 31, 32, 33, 100, 256, 300})
        check_bf16_kernels(cpu::attention_bf16_kernels_amx(), hd, n_rows, n_keys);
#else
  GTEST_SKIP() << "AMX is x86-64's";
#endif
}

TEST(Attention, Bf16KernelsEqualTheirScalarTwins) {
  const cpu::AttentionBf16Kernels* simd = cpu::attention_bf16_kernels_for(16);
  if (simd == nullptr) GTEST_SKIP() << "no bf16 SIMD kernels on this CPU";
  for (int hd : {16, 64, 128, 256})
    for (int n_rows : {16, 32, 48, 64, 128})
      for (int64_t n_keys : {int64_t{1}, int64_t{2}, int64_t{5}, int64_t{13}, int64_t{31}, int64_t{256}})
        check_bf16_kernels(*simd, hd, n_rows, n_keys);
}
