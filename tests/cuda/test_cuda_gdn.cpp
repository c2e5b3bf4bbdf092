// The CUDA Gated DeltaNet kernels against their CPU twins (backend/cpu/gated_delta.*): several
// sequences per call in permuted state slots, lengths around the chunk size, GQA head sharing,
// value widths that are not a multiple of the CTA's column block, strong decay.
// Tolerances: the small ops do the CPU's float operations (1e-6 relative); the delta rule
// reorders f32 sums (fused multiply-adds, another blocking), so outputs and states are held to
// 1e-4 of the largest magnitude of their sequence.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "backend/cpu/gated_delta.h"
#include "backend/cuda/gdn.cuh"
#include "backend/cuda/gemv_q8.cuh"
#include "cuda_test_util.h"

namespace {

using namespace keel;
using cuda_test::download;
using cuda_test::upload;

// Device copy of a batch of sequences: lengths in call order, slots as given.
struct DeviceSeqs {
  std::vector<int32_t> q_start, slot, seq, chunk_first, chunk_len, seq_chunk;
  cuda::DeviceBuffer d_q_start, d_slot, d_seq, d_chunk_first, d_chunk_len, d_seq_chunk;
  cuda::SeqBatch batch;

  DeviceSeqs(const std::vector<int>& lengths, const std::vector<int32_t>& slots) : slot(slots) {
    q_start.push_back(0);
    for (size_t s = 0; s < lengths.size(); ++s) {
      for (int t = 0; t < lengths[s]; ++t) seq.push_back(int32_t(s));
      q_start.push_back(q_start.back() + lengths[s]);
    }
    const int n_seqs = int(lengths.size());
    const std::vector<int32_t> len(lengths.begin(), lengths.end());
    chunk_first.resize(size_t(cuda::gdn_max_chunks(q_start.back(), n_seqs)));
    chunk_len.resize(chunk_first.size());
    seq_chunk.resize(size_t(n_seqs) + 1);
    batch.n_chunks =
        cuda::fill_gdn_chunks(q_start.data(), len.data(), n_seqs, chunk_first.data(), chunk_len.data(), seq_chunk.data());
    d_q_start = upload(q_start);
    d_slot = upload(slot);
    d_seq = upload(seq);
    d_chunk_first = upload(chunk_first);
    d_chunk_len = upload(chunk_len);
    d_seq_chunk = upload(seq_chunk);
    batch.n_seqs = n_seqs;
    batch.n_tokens = q_start.back();
    batch.q_start = d_q_start.as<int32_t>();
    batch.slot = d_slot.as<int32_t>();
    batch.seq = d_seq.as<int32_t>();
    batch.chunk_first = d_chunk_first.as<int32_t>();
    batch.chunk_len = d_chunk_len.as<int32_t>();
    batch.seq_chunk = d_seq_chunk.as<int32_t>();
  }
  cuda::DeviceBuffer workspace(const cuda::DeltaArgs& a) const {
    return cuda::DeviceBuffer(
        cuda::gated_delta_workspace_bytes(batch.n_tokens, batch.n_seqs, a.n_v_heads, a.d_k, a.d_v));
  }
  int64_t first(size_t s) const { return q_start[s]; }
  int64_t length(size_t s) const { return q_start[s + 1] - q_start[s]; }
};

// max |got - want| over max |want|, over a range.
double rel_err(const float* got, const float* want, size_t n) {
  double err = 0, mag = 0;
  for (size_t i = 0; i < n; ++i) {
    err = std::max(err, std::fabs(double(got[i]) - want[i]));
    mag = std::max(mag, std::fabs(double(want[i])));
  }
  return mag > 0 ? err / mag : err;
}

TEST(CudaGdn, Conv1dSiluPerSequenceStateSlots) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(31);
  const int64_t channels = 777;
  for (int kernel : {4, 2, 1}) {
    const std::vector<int> lengths = {1, 5, 300, 2, 64};
    const std::vector<int32_t> slots = {3, 0, 4, 1, 2};
    DeviceSeqs seqs(lengths, slots);
    const int64_t n = seqs.batch.n_tokens, n_state = kernel - 1;
    const auto x = cuda_test::random_floats(size_t(n * channels), rng);
    const auto w = cuda_test::random_floats(size_t(channels * kernel), rng, 0.5f);
    auto state = cuda_test::random_floats(size_t(5 * n_state * channels + 1), rng);
    auto dx = upload(x);
    auto dw = upload(w);
    auto dstate = upload(state);
    cuda::DeviceBuffer dout(x.size() * 4);
    cuda::conv1d_silu(dx.as<float>(), channels, dw.as<float>(), kernel, dstate.as<float>(), dout.as<float>(),
                      seqs.batch, nullptr);
    cuda_test::sync();
    const auto got = download<float>(dout, x.size());
    const auto got_state = download<float>(dstate, state.size());
    std::vector<float> want(x.size());
    cpu::ThreadPool pool(2);
    for (size_t s = 0; s < lengths.size(); ++s)
      cpu::causal_conv1d_silu(x.data() + seqs.first(s) * channels, seqs.length(s), channels, w.data(), kernel,
                              state.data() + slots[s] * n_state * channels, want.data() + seqs.first(s) * channels, pool);
    EXPECT_LT(rel_err(got.data(), want.data(), want.size()), 1e-6) << "kernel " << kernel;
    EXPECT_EQ(rel_err(got_state.data(), state.data(), state.size()), 0.0) << "kernel " << kernel << " state";
  }
}

TEST(CudaGdn, L2NormGatesGatedRmsNorm) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(32);
  {  // l2 norm over heads inside wider rows (q then k of the conv output)
    const int64_t rows = 37, heads = 3, dim = 128, stride = 1000;
    auto x = cuda_test::random_floats(size_t(rows * stride), rng, 2.0f);
    auto dx = upload(x);
    cuda::l2_norm_heads(dx.as<float>() + 7, rows, stride, heads, dim, 1e-6f, 0.125f, nullptr);
    cuda_test::sync();
    const auto got = download<float>(dx, x.size());
    cpu::l2_norm_heads(x.data() + 7, rows, stride, heads, dim, 1e-6f, 0.125f);
    EXPECT_LT(rel_err(got.data(), x.data(), x.size()), 1e-6);
  }
  {  // gates, with large and small pre-activations (softplus' linear branch)
    const int64_t n = 301, heads = 48;
    auto beta = cuda_test::random_floats(size_t(n * heads), rng, 4.0f);
    auto alpha = cuda_test::random_floats(size_t(n * heads), rng, 12.0f);
    auto a = cuda_test::random_floats(size_t(heads), rng);
    for (auto& v : a) v = -std::exp(v);
    const auto dt = cuda_test::random_floats(size_t(heads), rng);
    auto db = upload(beta);
    auto dal = upload(alpha);
    auto da = upload(a);
    auto ddt = upload(dt);
    cuda::gdn_gates(db.as<float>(), dal.as<float>(), da.as<float>(), ddt.as<float>(), n, heads, nullptr);
    cuda_test::sync();
    const auto got_b = download<float>(db, beta.size()), got_a = download<float>(dal, alpha.size());
    cpu::gdn_gates(beta.data(), alpha.data(), a.data(), dt.data(), n, heads);
    EXPECT_LT(rel_err(got_b.data(), beta.data(), beta.size()), 1e-6);
    EXPECT_LT(rel_err(got_a.data(), alpha.data(), alpha.size()), 1e-6);
  }
  {
    const int64_t rows = 97, dim = 128;
    auto o = cuda_test::random_floats(size_t(rows * dim), rng, 3.0f);
    const auto o0 = o;
    const auto z = cuda_test::random_floats(size_t(rows * dim), rng, 2.0f);
    const auto w = cuda_test::random_floats(size_t(dim), rng);
    auto dox = upload(o);
    auto dz = upload(z);
    auto dw = upload(w);
    cuda::gated_rms_norm(dox.as<float>(), dz.as<float>(), dw.as<float>(), rows, dim, 1e-6f, nullptr);
    cuda_test::sync();
    const auto got = download<float>(dox, o.size());
    cpu::gated_rms_norm(o.data(), z.data(), w.data(), rows, dim, 1e-6f);
    EXPECT_LT(rel_err(got.data(), o.data(), o.size()), 1e-6);
    // With 8-bit activations asked for (decode: 97 heads of one token's row): the same output, and
    // the bits quantize_act_q8 gives for it.
    const int64_t width = rows * dim;
    cuda::DeviceBuffer act(cuda::act_q8_bytes(width, 1)), act_ref(cuda::act_q8_bytes(width, 1));
    int8_t* q = nullptr;
    float2* s = nullptr;
    cuda::act_q8_parts(act.data(), width, 1, q, s);
    auto dox2 = upload(o0);
    cuda::gated_rms_norm(dox2.as<float>(), dz.as<float>(), dw.as<float>(), rows, dim, 1e-6f, nullptr, q, s);
    cuda::quantize_act_q8(dox2.as<float>(), 1, width, act_ref.data(), nullptr);
    cuda_test::sync();
    EXPECT_EQ(download<float>(dox2, o.size()), got);
    EXPECT_TRUE(download<uint8_t>(act, act.bytes()) == download<uint8_t>(act_ref, act_ref.bytes()))
        << "gated_rms_norm's 8-bit activations";
  }
}

// The one-launch decode inputs against conv1d_silu, the two l2_norm_heads and gdn_gates
// launched one by one: the same bits in the output, the conv states and the gates. Sequences of
// one token in permuted slots; head sizes 32 and 128 (Qwen3.5's), the value channels not a
// multiple of the kernel's block; conv kernels 4 (Qwen3.5's), 2 and 1.
TEST(CudaGdn, DecodeInputsInOneLaunchEqualTheOpsOneByOne) {
  KEEL_SKIP_WITHOUT_GPU();
  std::mt19937 rng(33);
  struct Case {
    int n_k, d_k, value_dim, n_v, kernel;
  };
  for (const Case c : {Case{16, 128, 48 * 128, 48, 4}, Case{3, 32, 777, 5, 2}, Case{2, 64, 64 * 4, 4, 1}}) {
    const std::vector<int> lengths = {1, 1, 1, 1, 1};
    const std::vector<int32_t> slots = {3, 0, 4, 1, 2};
    DeviceSeqs seqs(lengths, slots);
    const int64_t n = seqs.batch.n_tokens, key_dim = int64_t{c.n_k} * c.d_k;
    const int64_t channels = 2 * key_dim + c.value_dim, n_state = c.kernel - 1;
    const auto x = cuda_test::random_floats(size_t(n * channels), rng);
    const auto w = cuda_test::random_floats(size_t(channels * c.kernel), rng, 0.5f);
    const auto state = cuda_test::random_floats(size_t(5 * n_state * channels + 1), rng);
    const auto beta = cuda_test::random_floats(size_t(n * c.n_v), rng, 4.0f);
    const auto alpha = cuda_test::random_floats(size_t(n * c.n_v), rng, 12.0f);
    auto a = cuda_test::random_floats(size_t(c.n_v), rng);
    for (auto& v : a) v = -std::exp(v);
    const auto dt = cuda_test::random_floats(size_t(c.n_v), rng);
    auto dx = upload(x), dw = upload(w), da = upload(a), ddt = upload(dt);
    const float q_scale = 1.0f / std::sqrt(float(c.d_k));

    auto one_by_one_state = upload(state), one_by_one_beta = upload(beta), one_by_one_alpha = upload(alpha);
    cuda::DeviceBuffer one_by_one_out(x.size() * 4);
    float* out = one_by_one_out.as<float>();
    cuda::conv1d_silu(dx.as<float>(), channels, dw.as<float>(), c.kernel, one_by_one_state.as<float>(), out,
                      seqs.batch, nullptr);
    cuda::l2_norm_heads(out, n, channels, c.n_k, c.d_k, 1e-6f, q_scale, nullptr);
    cuda::l2_norm_heads(out + key_dim, n, channels, c.n_k, c.d_k, 1e-6f, 1.0f, nullptr);
    cuda::gdn_gates(one_by_one_beta.as<float>(), one_by_one_alpha.as<float>(), da.as<float>(), ddt.as<float>(), n,
                    c.n_v, nullptr);

    auto fused_state = upload(state), fused_beta = upload(beta), fused_alpha = upload(alpha);
    cuda::DeviceBuffer fused_out(x.size() * 4);
    cuda::GdnInputs in;
    in.x = dx.as<float>();
    in.channels = channels;
    in.conv_w = dw.as<float>();
    in.kernel = c.kernel;
    in.state = fused_state.as<float>();
    in.out = fused_out.as<float>();
    in.n_k_heads = c.n_k;
    in.d_k = c.d_k;
    in.eps = 1e-6f;
    in.q_scale = q_scale;
    in.beta = fused_beta.as<float>();
    in.alpha = fused_alpha.as<float>();
    in.ssm_a = da.as<float>();
    in.dt_bias = ddt.as<float>();
    in.n_v_heads = c.n_v;
    ASSERT_TRUE(cuda::gdn_decode_inputs_fit(c.d_k, c.kernel));
    cuda::gdn_decode_inputs(in, seqs.batch, nullptr);
    cuda_test::sync();
    const std::string what = "d_k " + std::to_string(c.d_k) + ", kernel " + std::to_string(c.kernel);
    EXPECT_EQ(download<float>(fused_out, x.size()), download<float>(one_by_one_out, x.size())) << what << ": output";
    EXPECT_EQ(download<float>(fused_state, state.size()), download<float>(one_by_one_state, state.size()))
        << what << ": conv state";
    EXPECT_EQ(download<float>(fused_beta, beta.size()), download<float>(one_by_one_beta, beta.size())) << what;
    EXPECT_EQ(download<float>(fused_alpha, alpha.size()), download<float>(one_by_one_alpha, alpha.size())) << what;
    // And the state moved: the test would not notice a kernel that leaves everything alone.
    if (c.kernel > 1) {
      EXPECT_NE(download<float>(fused_state, state.size()), state) << what;
    }
    EXPECT_NE(download<float>(fused_beta, beta.size()), beta) << what;
  }
}

// The delta rule's arguments over rows of q | k | v heads (rows of `stride` floats; keys and
// queries n_k heads of d_k, values n_v heads of d_v), the gates, and where its state and output go.
cuda::DeltaArgs delta_args(const float* qkv, int64_t stride, const float* g, const float* beta, float* state,
                           float* out, int n_k, int n_v, int d_k, int d_v) {
  cuda::DeltaArgs d;
  const int64_t key_dim = int64_t{n_k} * d_k;
  d.q = qkv;
  d.k = qkv + key_dim;
  d.v = qkv + 2 * key_dim;
  d.qk_stride = d.v_stride = stride;
  d.g = g;
  d.beta = beta;
  d.state = state;
  d.out = out;
  d.n_k_heads = n_k;
  d.n_v_heads = n_v;
  d.d_k = d_k;
  d.d_v = d_v;
  return d;
}

struct DeltaCase {
  int n_k, n_v, d_k, d_v;
  std::vector<int> lengths;
  float decay_sigma;  // spread of the log-decay pre-activation (large: strong decay)
};

void check_delta(const DeltaCase& c, uint32_t seed) {
  std::mt19937 rng(seed);
  const size_t n_seqs = c.lengths.size();
  std::vector<int32_t> slots(n_seqs);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  DeviceSeqs seqs(c.lengths, slots);
  const int64_t n = seqs.batch.n_tokens;
  const int64_t key_dim = int64_t{c.n_k} * c.d_k, stride = 2 * key_dim + int64_t{c.n_v} * c.d_v;  // q | k | v rows
  auto qkv = cuda_test::random_floats(size_t(n * stride), rng);
  cpu::l2_norm_heads(qkv.data(), n, stride, c.n_k, c.d_k, 1e-6f, 1.0f / std::sqrt(float(c.d_k)));
  cpu::l2_norm_heads(qkv.data() + key_dim, n, stride, c.n_k, c.d_k, 1e-6f, 1.0f);
  auto beta = cuda_test::random_floats(size_t(n * c.n_v), rng);
  auto g = cuda_test::random_floats(size_t(n * c.n_v), rng, c.decay_sigma);
  std::vector<float> a(size_t(c.n_v), -1.0f), dt(size_t(c.n_v), 0.0f);
  cpu::gdn_gates(beta.data(), g.data(), a.data(), dt.data(), n, c.n_v);
  const int64_t state_floats = int64_t{c.n_v} * c.d_k * c.d_v;
  auto state = cuda_test::random_floats(size_t(n_seqs * state_floats), rng, 0.3f);

  auto dqkv = upload(qkv);
  auto dg = upload(g);
  auto dbeta = upload(beta);
  auto dstate = upload(state);
  cuda::DeviceBuffer dout(size_t(n * c.n_v * c.d_v) * 4);
  const cuda::DeltaArgs d = delta_args(dqkv.as<float>(), stride, dg.as<float>(), dbeta.as<float>(), dstate.as<float>(),
                                      dout.as<float>(), c.n_k, c.n_v, c.d_k, c.d_v);
  auto ws = seqs.workspace(d);
  cuda::gated_delta(d, seqs.batch, ws.data(), nullptr);
  cuda_test::sync();
  const auto got = download<float>(dout, size_t(n * c.n_v * c.d_v));
  const auto got_state = download<float>(dstate, state.size());

  std::vector<float> want(got.size());
  cpu::ThreadPool pool(2);
  std::vector<float> cpu_ws(cpu::gated_delta_workspace_bytes(c.d_k, c.d_v, pool.size()) / 4 + 16);
  for (size_t s = 0; s < n_seqs; ++s) {
    cpu::GatedDeltaArgs ca;
    const int64_t f = seqs.first(s);
    ca.q = qkv.data() + f * stride;
    ca.k = ca.q + key_dim;
    ca.v = ca.q + 2 * key_dim;
    ca.qk_stride = ca.v_stride = stride;
    ca.g = g.data() + f * c.n_v;
    ca.beta = beta.data() + f * c.n_v;
    ca.state = state.data() + slots[s] * state_floats;
    ca.out = want.data() + f * c.n_v * c.d_v;
    ca.n_tokens = seqs.length(s);
    ca.n_k_heads = c.n_k;
    ca.n_v_heads = c.n_v;
    ca.d_k = c.d_k;
    ca.d_v = c.d_v;
    if (ca.n_tokens == 1) cpu::gated_delta_recurrent(ca, cpu_ws.data(), pool);
    else cpu::gated_delta_chunked(ca, cpu_ws.data(), pool);
    const size_t out_n = size_t(ca.n_tokens * c.n_v * c.d_v);
    const double e_out = rel_err(got.data() + f * c.n_v * c.d_v, ca.out, out_n);
    const double e_state = rel_err(got_state.data() + slots[s] * state_floats, ca.state, size_t(state_floats));
    EXPECT_LT(e_out, 1e-4) << "sequence " << s << " (" << ca.n_tokens << " tokens) output";
    EXPECT_LT(e_state, 1e-4) << "sequence " << s << " (" << ca.n_tokens << " tokens) state";
    std::printf("gated_delta k%d v%d %dx%d seq of %4lld: rel err out %.2e state %.2e\n", c.n_k, c.n_v, c.d_k, c.d_v,
                (long long)ca.n_tokens, e_out, e_state);
  }
}

TEST(CudaGdn, GatedDeltaMatchesCpuChunkedAndRecurrent) {
  KEEL_SKIP_WITHOUT_GPU();
  check_delta({2, 4, 128, 128, {1, 63, 64, 65, 200, 1, 513}, 1.0f}, 41);  // GQA 2:1, real head sizes
  check_delta({2, 4, 64, 64, {7, 1, 130}, 1.0f}, 42);                      // tiny-qwen35's sizes
  check_delta({1, 3, 96, 96, {70, 1}, 1.0f}, 43);                          // partial column block, padded keys
  check_delta({4, 4, 128, 128, {300}, 8.0f}, 44);                          // strong decay
  check_delta({2, 4, 128, 128, {1, 1, 1}, 1.0f}, 45);                      // decode calls: the recurrence kernel
  check_delta({1, 3, 96, 96, {1, 1}, 4.0f}, 46);                           // ... with partial blocks
}

// The decode delta rule with the gated RMSNorm in the same launch (gated_delta_norm) against
// gated_delta, then gated_rms_norm with its 8-bit activations: the same bits in the output, the
// states and the activations. Sequences of one token in permuted slots, Qwen3.5's heads of 128
// (one CTA cluster a head), with and without GQA sharing; other widths do not fit it.
TEST(CudaGdn, DecodeDeltaWithNormEqualsDeltaThenNorm) {
  KEEL_SKIP_WITHOUT_GPU();
  struct Case {
    int n_k, n_v, d_k, d_v, n_seqs;
  };
  for (const Case c : {Case{2, 6, 128, 128, 3}, Case{4, 4, 128, 128, 1}, Case{2, 4, 64, 64, 2}}) {
    std::mt19937 rng(uint32_t(60 + c.d_v + c.n_seqs));
    std::vector<int32_t> slots(size_t(c.n_seqs));
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), rng);
    DeviceSeqs seqs(std::vector<int>(size_t(c.n_seqs), 1), slots);
    const int64_t n = c.n_seqs, key_dim = int64_t{c.n_k} * c.d_k, stride = 2 * key_dim + int64_t{c.n_v} * c.d_v;
    auto qkv = cuda_test::random_floats(size_t(n * stride), rng);
    cpu::l2_norm_heads(qkv.data(), n, stride, c.n_k, c.d_k, 1e-6f, 1.0f / std::sqrt(float(c.d_k)));
    cpu::l2_norm_heads(qkv.data() + key_dim, n, stride, c.n_k, c.d_k, 1e-6f, 1.0f);
    auto beta = cuda_test::random_floats(size_t(n * c.n_v), rng);
    auto g = cuda_test::random_floats(size_t(n * c.n_v), rng);
    std::vector<float> a(size_t(c.n_v), -1.0f), dt(size_t(c.n_v), 0.0f);
    cpu::gdn_gates(beta.data(), g.data(), a.data(), dt.data(), n, c.n_v);
    const auto state = cuda_test::random_floats(size_t(n * c.n_v * c.d_k * c.d_v), rng, 0.3f);
    const int64_t width = int64_t{c.n_v} * c.d_v;
    const auto z = cuda_test::random_floats(size_t(n * width), rng, 2.0f);
    const auto w = cuda_test::random_floats(size_t(c.d_v), rng);
    auto dqkv = upload(qkv), dg = upload(g), dbeta = upload(beta), dz = upload(z), dw = upload(w);
    auto state_a = upload(state), state_b = upload(state);
    cuda::DeviceBuffer out_a(size_t(n * width) * 4), out_b(size_t(n * width) * 4);
    cuda::DeviceBuffer act_a(cuda::act_q8_bytes(width, n)), act_b(cuda::act_q8_bytes(width, n));
    cuda::check(cudaMemset(act_a.data(), 0x5A, act_a.bytes()), "memset");  // the padding compares equal
    cuda::check(cudaMemset(act_b.data(), 0x5A, act_b.bytes()), "memset");
    cuda::DeltaArgs d = delta_args(dqkv.as<float>(), stride, dg.as<float>(), dbeta.as<float>(), nullptr, nullptr, c.n_k,
                                   c.n_v, c.d_k, c.d_v);
    int8_t *qa = nullptr, *qb = nullptr;
    float2 *sa = nullptr, *sb = nullptr;
    cuda::act_q8_parts(act_a.data(), width, n, qa, sa);
    cuda::act_q8_parts(act_b.data(), width, n, qb, sb);
    if (c.d_v != 128) {
      EXPECT_FALSE(cuda::gated_delta_norm_fits(d, seqs.batch)) << c.d_v;
      continue;
    }
    ASSERT_TRUE(cuda::gated_delta_norm_fits(d, seqs.batch));
    d.state = state_a.as<float>();
    d.out = out_a.as<float>();
    auto ws = seqs.workspace(d);
    cuda::gated_delta(d, seqs.batch, ws.data(), nullptr);
    cuda::gated_rms_norm(out_a.as<float>(), dz.as<float>(), dw.as<float>(), n * c.n_v, c.d_v, 1e-6f, nullptr, qa, sa);
    d.state = state_b.as<float>();
    d.out = out_b.as<float>();
    cuda::gated_delta_norm(d, seqs.batch, dz.as<float>(), dw.as<float>(), 1e-6f, qb, sb, nullptr);
    cuda_test::sync();
    const std::string what = "heads of " + std::to_string(c.d_v) + ", " + std::to_string(c.n_seqs) + " sequences";
    const auto got_state = download<uint32_t>(state_b, state.size());
    EXPECT_EQ(download<uint32_t>(out_a, size_t(n * width)), download<uint32_t>(out_b, size_t(n * width))) << what;
    EXPECT_EQ(download<uint32_t>(state_a, state.size()), got_state) << what;
    EXPECT_TRUE(download<uint8_t>(act_a, act_a.bytes()) == download<uint8_t>(act_b, act_b.bytes())) << what;
    // The state moved (a kernel that leaves it alone would pass the comparisons above).
    EXPECT_NE(download<float>(state_b, state.size()), state) << what;
  }
}

// A measurement, not a test (disabled; run with --gtest_also_run_disabled_tests on the GPU): the time of one 27B-sized GDN layer's delta rule, 2048 tokens, and of a decode.
TEST(CudaGdn, DISABLED_GatedDeltaTimeAt27bShape) {
  KEEL_SKIP_WITHOUT_GPU();
  const int n_k = 16, n_v = 48, dk = 128, dv = 128;
  for (int n_tokens : {2048, 1}) {
    DeviceSeqs seqs({n_tokens}, {0});
    const int64_t key_dim = n_k * dk, stride = 2 * key_dim + n_v * dv;
    std::mt19937 rng(5);
    auto qkv = cuda_test::random_floats(size_t(n_tokens * stride), rng, 0.05f);
    std::vector<float> g(size_t(n_tokens * n_v), -0.05f), beta(size_t(n_tokens * n_v), 0.5f);
    auto dqkv = upload(qkv);
    auto dg = upload(g);
    auto dbeta = upload(beta);
    cuda::DeviceBuffer dstate(size_t(n_v) * dk * dv * 4), dout(size_t(n_tokens) * n_v * dv * 4);
    cuda::DeltaArgs d;
    d.q = dqkv.as<float>();
    d.k = d.q + key_dim;
    d.v = d.q + 2 * key_dim;
    d.qk_stride = d.v_stride = stride;
    d.g = dg.as<float>();
    d.beta = dbeta.as<float>();
    d.state = dstate.as<float>();
    d.out = dout.as<float>();
    d.n_k_heads = n_k;
    d.n_v_heads = n_v;
    d.d_k = dk;
    d.d_v = dv;
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    auto ws = seqs.workspace(d);
    cuda::gated_delta(d, seqs.batch, ws.data(), nullptr);
    cudaEventRecord(e0);
    const int reps = 10;
    for (int i = 0; i < reps; ++i) cuda::gated_delta(d, seqs.batch, ws.data(), nullptr);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    std::printf("[cuda] gated_delta 27B layer shape, %d tokens: %.3f ms per call (%.0f tokens/s per layer)\n",
                n_tokens, ms / reps, n_tokens * reps / (ms / 1000));
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
  }
}

}  // namespace
