// CUDA paged KV writes and flash attention against the CPU backend (CpuBackend::kv_write and the
// scalar flash attention, cpu::flash_attention_with(attention_kernels_generic())), over the same
// shuffled page table on both sides (all sequences share one pool).
//   - kv_write: the device pages equal the CPU cache's bytes (f16 and q8_0: bit-exact).
//   - attention: |out - ref| <= 1e-2 * max|V| (f16 tensor-core inputs: Q and P rounded to f16,
//     q8_0 K/V dequantized to f16; f32 accumulation and softmax). Cases: head sizes 64/128/256,
//     GQA groups 1/4/5/6, page sizes 16/48/256, head sizes 8 and 32 (the SIMT fallback), decode-only calls (split-KV) and prefill chunks
//     mixed with decodes (one pass), a padding token whose output must stay untouched. On Hopper
//     prefill takes the wgmma kernels; scripts/test_cuda.sh runs these tests again without them.
//   - several sequences in one call equal each alone (bit-exact when both take the same path).
//   - scores that rise along the keys far past the online softmax's slack, and that peak early.
//   - slots no token was written to (NaN there) never reach the output.
//   - q8_0 pages give bit for bit what f16 pages holding their dequantized values give.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/attention.h"
#include "backend/cpu/attention_kernels.h"
#include "backend/cuda/attention.cuh"
#include "backend/cuda/gemv_q8.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/matmul.cuh"
#include "backend/cpu/cpu_backend.h"
#include "cuda_test_util.h"
#include "quant/blocks.h"

namespace {

using namespace keel;
using cuda_test::download;
using cuda_test::upload;

constexpr float kSentinel = -1234.5f;

struct SeqSpec {
  int history;  // positions already in the cache before this call
  int n_new;    // tokens of this sequence in the call
};

struct Case {
  int head_dim, n_head, n_kv, page_tokens;
  backend::KvType kv_type;
  std::vector<SeqSpec> seqs;
  float key_growth = 0.0f;  // keys at position p scaled by 1 + key_growth * p: scores that keep rising
  bool poison = false;      // the pool's bytes all 0x7C before the writes (f16 NaN, q8_0 scales NaN)
};

struct Result {
  std::vector<float> out;   // [n_tokens (+1 padding), n_head, hd]
  std::vector<float> ref;   // CPU
  double max_v = 0;
};

// Device state of one case: the pool, the page table and per-token K/V/Q for every position.
struct Fixture {
  Case c;
  int width = 0, max_pages = 0, n_pages = 0;
  std::vector<std::vector<float>> k, v, q;  // per sequence: [total_len, width] / [total_len, n_head*hd]
  std::vector<int32_t> pages;               // [n_seqs, max_pages]
  cuda::KvLayout layout;
  cuda::DeviceBuffer pool, dpages;

  explicit Fixture(const Case& cs, std::mt19937& rng) : c(cs) {
    width = c.n_kv * c.head_dim;
    int longest = 0;
    for (auto& s : c.seqs) longest = std::max(longest, s.history + s.n_new);
    max_pages = (longest + c.page_tokens - 1) / c.page_tokens;
    n_pages = max_pages * int(c.seqs.size());
    std::vector<int32_t> ids(n_pages);
    for (int i = 0; i < n_pages; ++i) ids[i] = i;
    std::shuffle(ids.begin(), ids.end(), rng);  // non-contiguous, interleaved page ids
    pages = ids;
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (auto& s : c.seqs) {
      const int len = s.history + s.n_new;
      std::vector<float> kk(size_t(len) * width), vv(size_t(len) * width), qq(size_t(len) * c.n_head * c.head_dim);
      for (size_t i = 0; i < kk.size(); ++i) kk[i] = 2.0f * u(rng) * (1.0f + c.key_growth * float(i / size_t(width)));
      for (auto& f : vv) f = u(rng);
      for (auto& f : qq) f = 2.0f * u(rng);
      k.push_back(kk);
      v.push_back(vv);
      q.push_back(qq);
    }
    layout.elem = c.kv_type == backend::KvType::f16 ? cuda::KvElem::f16 : cuda::KvElem::q8_0;
    layout.n_kv_heads = c.n_kv;
    layout.head_dim = c.head_dim;
    layout.page_tokens = c.page_tokens;
    layout.n_pages = n_pages;  // the prefill kernel's tensor copies where a tile stays in a page
    pool = cuda::DeviceBuffer(size_t(n_pages) * layout.page_bytes());
    cuda::check(cudaMemset(pool.data(), c.poison ? 0x7C : 0, pool.bytes()), "cudaMemset");
    dpages = upload(pages);
  }

  // Writes positions [from, to) of each listed sequence with one kv_write call.
  void write(const std::vector<int>& seq_ids, const std::vector<int>& from, const std::vector<int>& to) {
    std::vector<int32_t> seq, pos;
    std::vector<float> kk, vv;
    for (size_t i = 0; i < seq_ids.size(); ++i)
      for (int p = from[i]; p < to[i]; ++p) {
        seq.push_back(seq_ids[i]);
        pos.push_back(p);
        const int s = seq_ids[i];
        kk.insert(kk.end(), k[s].begin() + size_t(p) * width, k[s].begin() + size_t(p + 1) * width);
        vv.insert(vv.end(), v[s].begin() + size_t(p) * width, v[s].begin() + size_t(p + 1) * width);
      }
    if (seq.empty()) return;
    auto dseq = upload(seq);
    auto dpos = upload(pos);
    auto dk = upload(kk);
    auto dv = upload(vv);
    const auto b = cuda_test::attention_batch(int(seq.size()), int(c.seqs.size()), dseq, dpos, nullptr, dpages, max_pages);
    cuda::kv_write(layout, pool.data(), b, dk.as<float>(), dv.as<float>(), nullptr);
    cuda_test::sync();
  }

  // Attention for the new tokens of the listed sequences in one call (+ one padding token).
  std::vector<float> attend(const std::vector<int>& seq_ids, float scale) {
    std::vector<int32_t> seq, pos, q_start(c.seqs.size() + 1, 0);
    std::vector<float> qq;
    // Sequence indices in the call are the fixture's: sequences not in the call have no tokens.
    std::vector<int> count(c.seqs.size(), 0);
    for (int s : seq_ids) count[s] = c.seqs[s].n_new;
    for (size_t s = 0; s < c.seqs.size(); ++s) q_start[s + 1] = q_start[s] + count[s];
    for (size_t s = 0; s < c.seqs.size(); ++s)
      for (int i = 0; i < count[s]; ++i) {
        const int p = c.seqs[s].history + i;
        seq.push_back(int32_t(s));
        pos.push_back(p);
        const size_t w = size_t(c.n_head) * c.head_dim;
        qq.insert(qq.end(), q[s].begin() + size_t(p) * w, q[s].begin() + size_t(p + 1) * w);
      }
    seq.push_back(-1);  // padding
    pos.push_back(0);
    qq.resize(qq.size() + size_t(c.n_head) * c.head_dim, 0.5f);
    const int n_tokens = int(seq.size());
    auto dseq = upload(seq);
    auto dpos = upload(pos);
    auto dqs = upload(q_start);
    auto dq = upload(qq);
    std::vector<float> init(qq.size(), kSentinel);
    auto dout = upload(init);
    const auto b = cuda_test::attention_batch(n_tokens, int(c.seqs.size()), dseq, dpos, &dqs, dpages, max_pages);
    cuda::DeviceBuffer ws(cuda::attention_workspace_bytes(layout, c.n_head, n_tokens) + 256);
    // With 8-bit activations asked for: a decode-sized call on the tensor cores writes them, the
    // bits quantize_act_q8 gives for its output (the padding token's row is not written).
    const int64_t width = int64_t(c.n_head) * c.head_dim;
    // With an f16 copy asked for: the warpgroup prefill kernel writes it (f32_to_f16's bits).
    cuda::DeviceBuffer act(cuda::act_q8_bytes(width, n_tokens)), act_ref(cuda::act_q8_bytes(width, n_tokens));
    cuda::DeviceBuffer f16(size_t(n_tokens * width) * 2), f16_ref(f16.bytes());
    cuda::ActOut act_out;
    cuda::act_q8_parts(act.data(), width, n_tokens, act_out.q, act_out.s);
    act_out.f16 = f16.data();
    const bool wrote = cuda::attention(layout, pool.data(), b, dq.as<float>(), dout.as<float>(), c.n_head, scale,
                                       ws.as<float>(), nullptr, act_out);
    const bool decode_path = n_tokens <= cuda::kSplitMaxTokens && (c.head_dim == 64 || c.head_dim == 128 || c.head_dim == 256);
    const bool wgmma_path = n_tokens > cuda::kSplitMaxTokens && (c.head_dim == 128 || c.head_dim == 256) &&
                            cuda::wgmma_available();
    EXPECT_EQ(wrote, decode_path || wgmma_path) << "output of a call of " << n_tokens << " tokens, head size " << c.head_dim;
    if (wgmma_path) {
      cuda::f32_to_f16(dout.as<float>(), n_tokens * width, f16_ref.data(), nullptr);
      const size_t n = size_t(n_tokens - 1) * size_t(width);  // not the padding token's row
      const auto got = download<uint16_t>(f16, n), want = download<uint16_t>(f16_ref, n);
      EXPECT_EQ(got, want) << "attention's f16 copy, head size " << c.head_dim;
    }
    if (wrote && decode_path) {
      cuda::quantize_act_q8(dout.as<float>(), n_tokens, width, act_ref.data(), nullptr);
      const size_t rows = size_t(n_tokens - 1), q_bytes = rows * size_t(width);
      const size_t s_off = (size_t(n_tokens) * size_t(width) + 255) / 256 * 256, s_bytes = rows * size_t(width) / 32 * 8;
      const auto got = download<uint8_t>(act, act.bytes()), want = download<uint8_t>(act_ref, act_ref.bytes());
      EXPECT_TRUE(std::equal(got.begin(), got.begin() + q_bytes, want.begin())) << "attention's 8-bit quants";
      EXPECT_TRUE(std::equal(got.begin() + s_off, got.begin() + s_off + s_bytes, want.begin() + s_off))
          << "attention's 8-bit scales";
    }
    cuda_test::sync();
    const auto result = download<float>(dout, qq.size());
    // A second call on the same workspace gives the same bits: a decode leaves its count of
    // finished key ranges at zero for the next call (a range missing from the count, or a count
    // left over, would leave rows unmerged: the sentinel).
    auto again = upload(init);
    cuda::attention(layout, pool.data(), b, dq.as<float>(), again.as<float>(), c.n_head, scale, ws.as<float>(), nullptr);
    cuda_test::sync();
    const auto second = download<float>(again, qq.size());
    EXPECT_EQ(0, std::memcmp(result.data(), second.data(), result.size() * sizeof(float)))
        << "a second call on the same workspace, head size " << c.head_dim;
    return result;
  }

  // The CPU backend's pool over the same page table, written with its kv_write.
  std::unique_ptr<cpu::CpuBackend> cpu_be;
  backend::KvGeometry geo;
  std::vector<backend::SeqSlice> slices;

  void cpu_write_all() {
    cpu_be = std::make_unique<cpu::CpuBackend>(1);
    geo.type = c.kv_type;
    geo.n_layers = 1;
    geo.n_kv_heads = uint32_t(c.n_kv);
    geo.head_dim = uint32_t(c.head_dim);
    geo.page_tokens = uint32_t(c.page_tokens);
    geo.n_pages = uint32_t(n_pages);
    cpu_be->create_kv(geo);
    // One call per sequence writing all its positions.
    for (size_t s = 0; s < c.seqs.size(); ++s) {
      const int len = c.seqs[s].history + c.seqs[s].n_new;
      std::vector<int32_t> tokens(static_cast<size_t>(len), 0), pos(static_cast<size_t>(len));
      for (int p = 0; p < len; ++p) pos[p] = p;
      backend::SeqSlice sl{0, len, 0, int32_t(s)};
      backend::Batch b;
      b.n_tokens = len;
      b.tokens = tokens.data();
      b.pos = pos.data();
      b.n_seqs = 1;
      b.seqs = &sl;
      b.page_table = pages.data();
      b.max_pages_per_seq = max_pages;
      cpu_be->begin_batch(b);
      cpu_be->kv_write(0, k[s].data(), v[s].data());
    }
  }

  // CPU scalar flash attention over the new tokens of every sequence, in one call.
  std::vector<float> reference(float scale) {
    slices.clear();
    std::vector<float> qq;
    int64_t first = 0;
    const size_t w = size_t(c.n_head) * c.head_dim;
    for (size_t s = 0; s < c.seqs.size(); ++s) {
      const auto& spec = c.seqs[s];
      slices.push_back({first, spec.n_new, spec.history, int32_t(s)});
      qq.insert(qq.end(), q[s].begin() + size_t(spec.history) * w, q[s].begin() + size_t(spec.history + spec.n_new) * w);
      first += spec.n_new;
    }
    std::vector<float> out(qq.size());
    cpu::AttentionArgs a;
    a.q = qq.data();
    a.out = out.data();
    a.n_head = uint32_t(c.n_head);
    a.scale = scale;
    a.kv = cpu::KvLayerView{geo, cpu_be->kv_pages(0)};
    a.seqs = slices.data();
    a.n_seqs = int32_t(slices.size());
    a.page_table = pages.data();
    a.max_pages_per_seq = max_pages;
    cpu::ThreadPool pool_cpu(1);
    std::vector<float> ws(cpu::attention_workspace_bytes(geo, uint32_t(c.n_head), 1) / 4 + 64);
    cpu::flash_attention_with(cpu::attention_kernels_generic(), a, ws.data(), pool_cpu);
    return out;
  }
};

void run_case(const Case& c, std::mt19937& rng) {
  Fixture f(c, rng);
  const int n_seqs = int(c.seqs.size());
  std::vector<int> all(n_seqs), zeros(n_seqs, 0), hist(n_seqs), ends(n_seqs);
  for (int s = 0; s < n_seqs; ++s) {
    all[s] = s;
    hist[s] = c.seqs[s].history;
    ends[s] = c.seqs[s].history + c.seqs[s].n_new;
  }
  f.write(all, zeros, hist);  // earlier calls
  f.write(all, hist, ends);   // this call's tokens
  const float scale = 1.0f / std::sqrt(float(c.head_dim));
  const std::string name = "hd " + std::to_string(c.head_dim) + " heads " + std::to_string(c.n_head) + "/" +
                           std::to_string(c.n_kv) + " page " + std::to_string(c.page_tokens) + " " +
                           std::string(backend::kv_type_name(c.kv_type));

  // kv_write: the written part of every page equals the CPU backend's bytes (same page ids).
  f.cpu_write_all();
  const auto ref = f.reference(scale);
  const auto dev = download<uint8_t>(f.pool, size_t(f.n_pages) * f.layout.page_bytes());
  int bad = 0;
  const size_t tb = f.layout.token_bytes(), half = size_t(c.page_tokens) * tb;
  for (int s = 0; s < n_seqs; ++s)
    for (int i = 0; i * c.page_tokens < ends[s]; ++i) {
      const int32_t page = f.pages[size_t(s) * f.max_pages + i];
      const size_t used = size_t(std::min(c.page_tokens, ends[s] - i * c.page_tokens)) * tb;
      const uint8_t* mine = dev.data() + size_t(page) * f.layout.page_bytes();
      const uint8_t* theirs = f.cpu_be->kv_pages(0)[page];
      if ((std::memcmp(mine, theirs, used) != 0 || std::memcmp(mine + half, theirs + half, used) != 0) && bad++ < 3)
        ADD_FAILURE() << name << ": kv_write page " << i << " of sequence " << s << " differs from the CPU backend's";
    }

  const auto out = f.attend(all, scale);
  const size_t w = size_t(c.n_head) * c.head_dim;
  ASSERT_EQ(out.size(), ref.size() + w);
  double max_err = 0;
  bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double err = std::fabs(double(out[i]) - ref[i]);
    max_err = std::max(max_err, err);
    if (!(err <= 1e-2) && bad++ < 5) ADD_FAILURE() << name << ": attention element " << i << ": " << out[i] << " vs " << ref[i];
  }
  for (size_t i = ref.size(); i < out.size(); ++i)
    if (out[i] != kSentinel && bad++ < 5) ADD_FAILURE() << name << ": padding token output was written";
  std::printf("attention %-40s tokens %4zu: max |err| %.2e (max |V| 1)\n", name.c_str(), ref.size() / w, max_err);

  // Each sequence alone equals its rows of the call with everyone (same path: bit-exact).
  size_t offset = 0;
  for (int s = 0; s < n_seqs; ++s) {
    const auto alone = f.attend({s}, scale);
    const size_t n = size_t(c.seqs[s].n_new) * w;
    const bool same_path = (ref.size() / w + 1 <= size_t(cuda::kSplitMaxTokens)) == (c.seqs[s].n_new + 1 <= cuda::kSplitMaxTokens);
    double d = 0;
    for (size_t i = 0; i < n; ++i) d = std::max(d, std::fabs(double(alone[i]) - out[offset + i]));
    if (same_path) EXPECT_EQ(d, 0.0) << name << ": sequence " << s << " alone differs from the batch";
    else EXPECT_LE(d, 2e-2) << name << ": sequence " << s << " alone differs from the batch";
    offset += n;
  }
}

TEST(CudaAttention, DecodeSplitKv) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(31);
  for (auto kv : {backend::KvType::f16, backend::KvType::q8_0}) {
    run_case({128, 32, 8, 256, kv, {{700, 1}, {3, 1}, {2100, 1}}}, rng);
    run_case({64, 10, 2, 16, kv, {{95, 1}, {0, 1}, {333, 2}}}, rng);   // group 5, tiny pages
    run_case({256, 8, 2, 48, kv, {{130, 1}}}, rng);
    run_case({256, 24, 4, 256, kv, {{5000, 1}, {20, 1}}}, rng);  // the 27B's heads: two-warp CTAs, many key ranges
    run_case({256, 24, 4, 256, kv, {{13000, 1}, {700, 1}}}, rng);  // ranges up to the resident-CTA cap (q8_0 on an H200: 99)
    // The heads are the mma's columns, in blocks of 8: one head (MHA), a block and a half, two.
    run_case({128, 8, 8, 256, kv, {{600, 1}, {1, 1}}}, rng);
    run_case({64, 24, 2, 16, kv, {{300, 1}, {44, 1}}}, rng);
    run_case({128, 32, 2, 256, kv, {{1500, 1}}}, rng);
  }
}

TEST(CudaAttention, PrefillChunksWithDecodes) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(32);
  for (auto kv : {backend::KvType::f16, backend::KvType::q8_0}) {
    run_case({128, 32, 8, 256, kv, {{0, 300}, {517, 1}, {40, 1}}}, rng);  // fresh prompt + decodes
    run_case({128, 16, 16, 16, kv, {{77, 45}, {5, 1}}}, rng);             // a later chunk, MHA
    run_case({64, 10, 2, 48, kv, {{0, 37}, {200, 29}}}, rng);             // group 5 (12 tokens a tile)
    run_case({256, 8, 2, 256, kv, {{250, 70}}}, rng);                     // crosses a page
    run_case({256, 24, 4, 16, kv, {{0, 150}, {900, 60}}}, rng);           // the 27B's heads (128 rows a CTA: tiles begin inside a token), small pages
    run_case({128, 40, 8, 256, kv, {{0, 100}, {300, 77}}}, rng);          // group 5 at head size 128 (25.6 tokens a CTA)
    run_case({128, 32, 8, 48, kv, {{100, 200}, {0, 17}}}, rng);           // pages that tiles of 64 keys cross
    run_case({32, 8, 4, 16, kv, {{10, 20}, {37, 1}}}, rng);               // other head sizes: the SIMT path
  }
  run_case({8, 8, 4, 16, backend::KvType::f16, {{0, 19}, {40, 1}}}, rng);  // stories260K's head size
}

// Slots no token was written to (past a sequence's last position in its last page) hold NaN:
// no kernel may let them reach the output, though a tile copies them (the prefill kernels' tensor
// copies bring whole tiles of a page as they are). Zeros there would hide it: 0 x 0 is 0.
TEST(CudaAttention, UnwrittenSlotsNeverReachTheOutput) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(35);
  if (cuda::wgmma_available()) {  // so the first case below runs the tensor copies
    const cuda::KvLayout tensor{cuda::KvElem::f16, 4, 256, 256, 4}, threads{cuda::KvElem::f16, 4, 256, 48, 4};
    cuda::DeviceBuffer pool(size_t(4) * tensor.page_bytes());
    EXPECT_TRUE(cuda::prefill_tensor_copies(tensor, pool.data())) << "pages of 256 tokens: tensor copies";
    EXPECT_FALSE(cuda::prefill_tensor_copies(threads, pool.data())) << "pages of 48 tokens: the threads' copies";
  }
  for (auto kv : {backend::KvType::f16, backend::KvType::q8_0}) {
    run_case({256, 24, 4, 256, kv, {{0, 300}, {1000, 37}}, 0.0f, true}, rng);  // the 27B's heads, pages of 256
    run_case({256, 24, 4, 256, kv, {{5000, 1}, {20, 1}}, 0.0f, true}, rng);    // decode
    run_case({128, 32, 8, 256, kv, {{0, 100}, {300, 1}}, 0.0f, true}, rng);
    run_case({64, 10, 2, 16, kv, {{0, 37}, {200, 29}}, 0.0f, true}, rng);
  }
}

// Scores that keep rising along the keys (the running max passes the kernels' slack many times,
// so O and l are rescaled between tiles) and scores that peak early (the max stays put).
TEST(CudaAttention, RunningMaxMovingAlongTheKeys) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(33);
  for (auto kv : {backend::KvType::f16, backend::KvType::q8_0})
    for (float growth : {0.004f, -0.0015f}) {  // scores' spread x3.6 by position 650 (f16 Q, K stay accurate)
      run_case({128, 32, 8, 256, kv, {{400, 100}, {600, 1}}, growth}, rng);
      run_case({256, 24, 4, 256, kv, {{300, 90}, {650, 1}}, growth}, rng);
      run_case({64, 8, 8, 16, kv, {{100, 40}}, growth}, rng);
    }
}

// q8_0 pages dequantize in the kernels to exactly the f16 values of d * q (rounded once): a token
// decoded over a short history (one key range, so both kernels add in the same order) gives, bit
// for bit, what the same call gives over f16 pages that hold those values. Head sizes 64/128/256
// (staging pieces of 4, 8, 16 bytes), pages of 16 and of 40 tokens (tiles that cross pages),
// scales from subnormal to large, quants over the whole int8 range.
TEST(CudaAttention, Q8PagesDequantizeToTheirF16ValuesExactly) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(34);
  std::uniform_int_distribution<int> quant(-128, 127), exponent(-26, 2);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int hd : {64, 128, 256})
    for (int page : {16, 40}) {
      const int n_kv = 2, n_head = 8, pos = 100;  // 101 keys: 7 tiles of 16, one key range
      const cuda::KvLayout q8{cuda::KvElem::q8_0, n_kv, hd, page}, f16{cuda::KvElem::f16, n_kv, hd, page};
      const int n_pages = (pos + page) / page;
      // Both pools hold (page, K|V, token, head) rows in the same order: q8_0 block i is f16
      // elements 32 i .. 32 i + 31.
      std::vector<uint8_t> q8_pool(size_t(n_pages) * q8.page_bytes());
      std::vector<uint16_t> f16_pool(size_t(n_pages) * f16.page_bytes() / 2);
      for (size_t blk = 0; blk < q8_pool.size() / 34; ++blk) {
        const quant::f16_bits d = quant::f32_to_f16(std::ldexp(1.0f + 0.5f * u(rng), exponent(rng)));
        std::memcpy(&q8_pool[34 * blk], &d, 2);
        for (int i = 0; i < 32; ++i) {
          const int q = quant(rng);
          q8_pool[34 * blk + 2 + i] = static_cast<uint8_t>(static_cast<int8_t>(q));
          f16_pool[32 * blk + i] = quant::f32_to_f16(quant::f16_to_f32(d) * float(q));
        }
      }
      std::vector<int32_t> pages(n_pages);
      for (int i = 0; i < n_pages; ++i) pages[i] = n_pages - 1 - i;  // not in order
      std::vector<float> q(size_t(n_head) * hd);
      for (auto& x : q) x = u(rng);
      auto dq8 = upload(q8_pool), df16 = upload(f16_pool), dpages = upload(pages), dq = upload(q);
      auto dseq = upload(std::vector<int32_t>{0}), dpos = upload(std::vector<int32_t>{pos});
      auto dqs = upload(std::vector<int32_t>{0, 1});
      const auto b = cuda_test::attention_batch(1, 1, dseq, dpos, &dqs, dpages, n_pages);
      std::vector<float> out[2];
      for (int e = 0; e < 2; ++e) {
        const cuda::KvLayout& kv = e ? f16 : q8;
        cuda::DeviceBuffer dout(q.size() * 4), ws(cuda::attention_workspace_bytes(kv, n_head, 1) + 256);
        cuda::attention(kv, (e ? df16 : dq8).data(), b, dq.as<float>(), dout.as<float>(), n_head,
                        1.0f / std::sqrt(float(hd)), ws.as<float>(), nullptr);
        cuda_test::sync();
        out[e] = download<float>(dout, q.size());
      }
      int differ = 0;
      for (size_t i = 0; i < q.size(); ++i) differ += std::memcmp(&out[0][i], &out[1][i], 4) != 0;
      EXPECT_EQ(differ, 0) << "head size " << hd << ", pages of " << page << ": q8_0 vs f16 pages";
      EXPECT_GT(std::fabs(out[0][0]) + std::fabs(out[0][hd]), 0.0f) << "an output that is all zeros proves nothing";
    }
}

}  // namespace

namespace {

// A measurement, not a test (disabled; run with --gtest_also_run_disabled_tests on the GPU): prefill attention time at the 27B's geometry (24 heads over 4 KV heads of 256),
// a 4096-token chunk at the end of a 32768-token context, and a decode at that depth.
TEST(CudaAttention, DISABLED_TimeAt27bShape) {
  KEEL_SKIP_WITHOUT_GPU();
  const int n_head = 24, n_kv = 4, hd = 256, page = 256;
  for (auto [ctx, n] : {std::pair<int, int>{32768, 4096}, {32768, 1}, {173056, 1}}) {
  const int n_pages = ctx / page;
  const cuda::KvLayout kv{cuda::KvElem::f16, n_kv, hd, page, n_pages};
  cuda::DeviceBuffer pool(size_t(n_pages) * kv.page_bytes());
  cuda::check(cudaMemset(pool.data(), 0x2c, pool.bytes()), "cudaMemset");  // every half 0.0645 (timing only)
  std::vector<int32_t> pages(n_pages);
  for (int i = 0; i < n_pages; ++i) pages[i] = i;
  auto dpages = upload(pages);
  {
    std::vector<int32_t> pos(n), seq(n, 0), q_start = {0, n};
    for (int t = 0; t < n; ++t) pos[t] = ctx - n + t;
    auto dpos = upload(pos);
    auto dseq = upload(seq);
    auto dqs = upload(q_start);
    std::mt19937 rng(4);
    auto q = upload(cuda_test::random_floats(size_t(n) * n_head * hd, rng));
    cuda::DeviceBuffer out(size_t(n) * n_head * hd * 4), ws(cuda::attention_workspace_bytes(kv, n_head, n));
    const auto b = cuda_test::attention_batch(n, 1, dseq, dpos, &dqs, dpages, n_pages);
    const float scale = 1.0f / 16.0f;
    cuda::attention(kv, pool.data(), b, q.as<float>(), out.as<float>(), n_head, scale, ws.as<float>(), nullptr);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    const int reps = n > 1 ? 5 : 50;
    cudaEventRecord(e0);
    for (int i = 0; i < reps; ++i)
      cuda::attention(kv, pool.data(), b, q.as<float>(), out.as<float>(), n_head, scale, ws.as<float>(), nullptr);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    ms /= reps;
    double pairs = 0;  // (query, key) pairs attended
    for (int t = 0; t < n; ++t) pairs += pos[t] + 1;
    const double flops = 4.0 * pairs * hd * n_head;
    std::printf("[cuda] attention 24/4 heads of 256, %d tokens at depth %d: %.3f ms, %.0f TFLOP/s, %.0f GB/s of KV\n", n,
                ctx - n, ms, flops / ms / 1e9, double(ctx) * kv.token_bytes() * 2 / ms / 1e6);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
  }
  }
}

}  // namespace
