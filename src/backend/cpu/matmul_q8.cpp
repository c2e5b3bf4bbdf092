// The fast path's activation quantizer, weight panel packing, scalar micro-kernel and driver
// (see matmul_q8.h). The SIMD micro-kernels are in matmul_q8_avx2.cpp and matmul_q8_vnni.cpp.
#include "backend/cpu/matmul_q8.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "quant/blocks.h"
#include "quant/dequant.h"
#include "quant/quantize_act.h"

namespace keel::cpu {
namespace {

using quant::Type;


// ---- activations ------------------------------------------------------------------------------

// K-quant weights take Q8_K activations (one scale per 256 inputs), the others Q8_0 (per 32).
bool takes_q8_k(Type weight_type) {
  return weight_type == Type::Q4_K || weight_type == Type::Q5_K || weight_type == Type::Q6_K;
}

// One token's row as Q8_0 blocks (ggml's x86 quantize_row_q8_0).
// A quant as ActBlockQ8::q holds it in a form.
uint8_t act_byte(int8_t q, Q8ActForm form) {
  return form == Q8ActForm::signed_q ? static_cast<uint8_t>(q) : static_cast<uint8_t>(q + 128);
}

void quantize_row_act_q8_0(const float* x, int64_t n_in, Q8ActForm form, ActBlockQ8* act) {
  quant::BlockQ8_0 blocks[kQ8BlockK / quant::QK8_0];
  for (int64_t k0 = 0; k0 < n_in; k0 += kQ8BlockK, ++act) {
    const int64_t kc = std::min(kQ8BlockK, n_in - k0);
    quant::quantize_row_q8_0_act(x + k0, blocks, kc);
    for (int64_t b = 0; b < kc / quant::QK8_0; ++b) {
      const float d = quant::f16_to_f32(blocks[b].d);
      int sum = 0;
      for (int j = 0; j < quant::QK8_0; ++j) {
        act->q[32 * b + j] = act_byte(blocks[b].qs[j], form);
        sum += blocks[b].qs[j];
      }
      if (form == Q8ActForm::offset_q16) std::copy_n(blocks[b].qs, quant::QK8_0, act->q16 + 32 * b);
      act->d[b] = d;
      act->dsum[b] = d * static_cast<float>(sum);
    }
  }
}

// One token's row as Q8_K blocks, regrouped by `group` (32 or 16) inputs.
void quantize_row_act_q8_k(const float* x, int64_t n_in, int group, Q8ActForm form, ActBlockQ8* act) {
  quant::BlockQ8_K block;
  for (int64_t k0 = 0; k0 < n_in; k0 += kQ8BlockK, ++act) {
    quant::quantize_row_q8_k(x + k0, &block, kQ8BlockK);
    for (int j = 0; j < quant::QK_K; ++j) act->q[j] = act_byte(block.qs[j], form);
    const int per = group / 16;  // bsums per group
    for (int g = 0; g < quant::QK_K / group; ++g) {
      int sum = 0;
      for (int i = 0; i < per; ++i) sum += block.bsums[g * per + i];
      act->d[g] = block.d;
      act->dsum[g] = block.d * static_cast<float>(sum);
    }
  }
}

// ---- weights: one row's inputs [k0, k0 + kc) as int8 quants + per-group scale and min --------
// Each type in two parts: the quants (int8, input order; AVX2 twins in
// matmul_q8_unpack_avx2.cpp) and the factors of each group.

struct RowQ8 {
  int8_t q[kQ8BlockK];
  float scale[kQ8MaxGroups];
  float min[kQ8MaxGroups];
  int16_t group_scale[kQ8MaxGroups];  // K-quants: scale = d · group_scale
  float d = 0.0f;                     // K-quants: the super-block's scale
};

using FactorsFn = void (*)(const char* src, int64_t kc, RowQ8& r);

void q4_0_quants(const char* src, int64_t kc, int8_t* q) {
  const auto* b = reinterpret_cast<const quant::BlockQ4_0*>(src);
  for (int64_t i = 0; i < kc / 32; ++i)
    for (int j = 0; j < 16; ++j) {
      q[32 * i + j] = static_cast<int8_t>((b[i].qs[j] & 0x0F) - 8);
      q[32 * i + j + 16] = static_cast<int8_t>((b[i].qs[j] >> 4) - 8);
    }
}

void q8_0_quants(const char* src, int64_t kc, int8_t* q) {
  const auto* b = reinterpret_cast<const quant::BlockQ8_0*>(src);
  for (int64_t i = 0; i < kc / 32; ++i) std::memcpy(q + 32 * i, b[i].qs, 32);
}

// Q4_0, Q8_0: an f16 scale per 32 inputs.
template <class Block>
void d_factors(const char* src, int64_t kc, RowQ8& r) {
  const auto* b = reinterpret_cast<const Block*>(src);
  for (int64_t i = 0; i < kc / 32; ++i) {
    r.scale[i] = quant::f16_to_f32(b[i].d);
    r.min[i] = 0.0f;
  }
}

// Q4_K / Q5_K: scale d·sc and min dmin·m per 32 (the float products dequantize_row uses).
template <class Block>
void k4_factors(const char* src, int64_t, RowQ8& r) {
  const auto& b = *reinterpret_cast<const Block*>(src);
  const float d = quant::f16_to_f32(b.d), dmin = quant::f16_to_f32(b.dmin);
  for (int s = 0; s < 8; ++s) {
    uint8_t sc, m;
    quant::get_scale_min_k4(s, b.scales, &sc, &m);
    r.scale[s] = d * sc;
    r.min[s] = dmin * m;
    r.group_scale[s] = sc;
  }
  r.d = d;
}

void q4_k_quants(const char* src, int64_t, int8_t* q) {
  const auto& b = *reinterpret_cast<const quant::BlockQ4_K*>(src);
  for (int j = 0; j < 4; ++j)
    for (int l = 0; l < 32; ++l) {
      q[64 * j + l] = static_cast<int8_t>(b.qs[32 * j + l] & 0x0F);
      q[64 * j + 32 + l] = static_cast<int8_t>(b.qs[32 * j + l] >> 4);
    }
}

void q5_k_quants(const char* src, int64_t, int8_t* q) {
  const auto& b = *reinterpret_cast<const quant::BlockQ5_K*>(src);
  for (int j = 0; j < 4; ++j)
    for (int l = 0; l < 32; ++l) {
      const int h0 = (b.qh[l] >> (2 * j)) & 1, h1 = (b.qh[l] >> (2 * j + 1)) & 1;
      q[64 * j + l] = static_cast<int8_t>((b.qs[32 * j + l] & 0x0F) + 16 * h0);
      q[64 * j + 32 + l] = static_cast<int8_t>((b.qs[32 * j + l] >> 4) + 16 * h1);
    }
}

void q6_k_quants(const char* src, int64_t, int8_t* out) {
  const auto& b = *reinterpret_cast<const quant::BlockQ6_K*>(src);
  for (int n = 0; n < 2; ++n) {
    const uint8_t* ql = b.ql + 64 * n;
    const uint8_t* qh = b.qh + 32 * n;
    int8_t* q = out + 128 * n;
    for (int l = 0; l < 32; ++l) {
      q[l] = static_cast<int8_t>(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
      q[l + 32] = static_cast<int8_t>(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
      q[l + 64] = static_cast<int8_t>(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
      q[l + 96] = static_cast<int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
    }
  }
}

void q6_k_factors(const char* src, int64_t, RowQ8& r) {
  const auto& b = *reinterpret_cast<const quant::BlockQ6_K*>(src);
  const float d = quant::f16_to_f32(b.d);
  for (int s = 0; s < 16; ++s) {
    r.scale[s] = d * b.scales[s];
    r.min[s] = 0.0f;
    r.group_scale[s] = b.scales[s];
  }
  r.d = d;
}

struct Unpacker {
  Q8QuantsFn quants = nullptr;
  FactorsFn factors = nullptr;
};

Unpacker unpacker(Type type, Isa isa = Isa::generic) {
  Unpacker u;
  switch (type) {
    case Type::Q4_0: u = {q4_0_quants, d_factors<quant::BlockQ4_0>}; break;
    case Type::Q8_0: u = {q8_0_quants, d_factors<quant::BlockQ8_0>}; break;
    case Type::Q4_K: u = {q4_k_quants, k4_factors<quant::BlockQ4_K>}; break;
    case Type::Q5_K: u = {q5_k_quants, k4_factors<quant::BlockQ5_K>}; break;
    case Type::Q6_K: u = {q6_k_quants, q6_k_factors}; break;
    default: return u;
  }
#if defined(__x86_64__)
  if (is_x86_simd(isa))
    if (const Q8QuantsFn simd = q8_unpack_quants_avx2(type)) u.quants = simd;
#else
  (void)isa;
#endif
  return u;
}

// ---- the scalar micro-kernel -------------------------------------------------------------------

void micro_generic(const PanelQ8& p, int64_t kc, const ActBlockQ8* x, int64_t ldx, int n_tok,
                   float* y, int64_t ldy, int n_rows, bool accumulate) {
  const int n_groups = static_cast<int>(kc / p.group);
  for (int t = 0; t < n_tok; ++t) {
    const ActBlockQ8& a = x[t * ldx];
    for (int r = 0; r < n_rows; ++r) {
      float sum = 0.0f;
      for (int g = 0; g < n_groups; ++g) {
        int32_t acc = 0;
        for (int k = g * p.group; k < (g + 1) * p.group; ++k) acc += a.q[k] * p.q[k / 4][r][k % 4];
        sum = std::fma(a.d[g], p.scale[g][r] * static_cast<float>(acc - p.offset[g][r]), sum);
        sum -= a.dsum[g] * p.min[g][r];
      }
      y[t * ldy + r] = (accumulate ? y[t * ldy + r] : 0.0f) + sum;
    }
  }
}

struct Q8Job {
  Isa isa;
  const WeightView* w;
  int64_t n_tokens;
  float* y;
  ActBlockQ8* act;
  char* panels;  // one PanelQ8 per thread
  Q8MicroFn micro;
  Q8MicroPairFn micro_pair;  // nullptr where the kernel takes one panel a call
  Q8PrepareFn prepare;
  int micro_tokens;  // tokens a micro-kernel call takes
  bool with_offsets;  // pack_panel_q8's offsets: for kernels of unsigned activations
  std::atomic<int64_t>* next_panel;  // the first panel no thread has taken yet
};

// Prefetches the weight bytes pack_panel_q8 reads for panel p's input block kb.
void prefetch_panel(const WeightView& w, int64_t p, int64_t kb) {
  const size_t row_bytes = quant::row_bytes(w.type, static_cast<uint64_t>(w.n_in));
  const int64_t r0 = p * kQ8Rows, k0 = kb * kQ8BlockK;
  const size_t begin = quant::row_bytes(w.type, static_cast<uint64_t>(k0));
  const size_t end = quant::row_bytes(w.type, static_cast<uint64_t>(std::min(w.n_in, k0 + kQ8BlockK)));
  for (int64_t r = r0; r < std::min(w.n_out, r0 + kQ8Rows); ++r) {
    const char* row = static_cast<const char*>(w.data) + static_cast<size_t>(r) * row_bytes;
    for (size_t b = begin; b < end; b += 64) __builtin_prefetch(row + b);
  }
}

// Panels [panel_begin, panel_end) of the job (of n_panels), kQ8SweepPanels at a time: they are
// packed together and swept over the job's tokens (at most kQ8TokenBlock) together, so that each
// token tile's activations are fetched once for all their rows.
void q8_panels(const Q8Job& job, int64_t panel_begin, int64_t panel_end, int64_t n_panels, PanelQ8* panels) {
  const WeightView& w = *job.w;
  const int64_t nkb = q8_act_blocks(w.n_in);
  for (int64_t p0 = panel_begin; p0 < panel_end; p0 += kQ8SweepPanels) {
    const int n_sweep = static_cast<int>(std::min<int64_t>(kQ8SweepPanels, panel_end - p0));
    int n_rows[kQ8SweepPanels];
    for (int j = 0; j < n_sweep; ++j) n_rows[j] = static_cast<int>(std::min<int64_t>(kQ8Rows, w.n_out - (p0 + j) * kQ8Rows));
    for (int64_t kb = 0; kb < nkb; ++kb) {
      const int64_t k0 = kb * kQ8BlockK, kc = std::min(kQ8BlockK, w.n_in - k0);
      for (int j = 0; j < n_sweep; ++j) {
        pack_panel_q8(w, (p0 + j) * kQ8Rows, n_rows[j], k0, kc, &panels[j], job.with_offsets, job.isa);
        if (job.prepare) job.prepare(panels[j], kc);
      }
      // The next panels' weights arrive while the micro-kernel passes over the tokens.
      for (int j = 0; j < n_sweep; ++j) {
        if (kb + 1 < nkb) prefetch_panel(w, p0 + j, kb + 1);
        else if (p0 + n_sweep + j < n_panels) prefetch_panel(w, p0 + n_sweep + j, 0);
      }
      for (int64_t t0 = 0; t0 < job.n_tokens; t0 += job.micro_tokens) {
        const int n_tok = static_cast<int>(std::min<int64_t>(job.micro_tokens, job.n_tokens - t0));
        // The next tile's rows of y (read and written at the end of each call; the first tile's
        // own too) are fetched ahead, to arrive while the calls multiply: rows n_out floats apart
        // fall in few L1 sets, and the calls' ends waited on them. Measured end to end, 2 threads,
        // pp512 of a Qwen3-0.6B shape, AMX kernel: Q8_0 389 -> 474 tok/s and Q4_K_M 398 -> 452
        // fetching a call's own rows at its start, 482 / 476 the tile's for both panels, 492 / 473
        // the next tile's.
        const int64_t tp = t0 == 0 ? 0 : t0 + job.micro_tokens;  // the next tile's (the first: its own too)
        for (int64_t t = tp; t < std::min(job.n_tokens, t0 + 2 * job.micro_tokens); ++t)
          for (int j = 0; j < n_sweep; ++j) __builtin_prefetch(job.y + t * w.n_out + (p0 + j) * kQ8Rows, 1);
        const ActBlockQ8* x = job.act + t0 * nkb + kb;
        float* y = job.y + t0 * w.n_out + p0 * kQ8Rows;
        if (job.micro_pair && n_sweep == 2)
          job.micro_pair(panels, kc, x, nkb, n_tok, y, w.n_out, n_rows[1], kb > 0);
        else
          for (int j = 0; j < n_sweep; ++j)
            job.micro(panels[j], kc, x, nkb, n_tok, y + j * kQ8Rows, w.n_out, n_rows[j], kb > 0);
      }
    }
  }
}

}  // namespace

bool q8_supported(Type type) { return unpacker(type).quants != nullptr; }

int q8_group(Type type) { return type == Type::Q6_K ? 16 : 32; }

bool q8_same_activations(Type a, Type b) { return takes_q8_k(a) == takes_q8_k(b) && q8_group(a) == q8_group(b); }

void quantize_activations_q8(Isa isa, Type weight_type, const float* x, int64_t n_in, int64_t t_begin,
                             int64_t t_end, ActBlockQ8* act, Q8ActForm form) {
  const int64_t nkb = q8_act_blocks(n_in);
  const bool q8_k = takes_q8_k(weight_type);
  for (int64_t t = t_begin; t < t_end; ++t) {
    const float* xt = x + t * n_in;
    ActBlockQ8* at = act + t * nkb;
#if defined(__x86_64__)
    if (is_x86_simd(isa)) {
      if (q8_k) quantize_row_act_q8_k_avx2(xt, n_in, q8_group(weight_type), form, at);
      else quantize_row_act_q8_0_avx2(xt, n_in, form, at);
      continue;
    }
#endif
    if (q8_k) quantize_row_act_q8_k(xt, n_in, q8_group(weight_type), form, at);
    else quantize_row_act_q8_0(xt, n_in, form, at);
  }
}

void quantize_activations_gemv_q8(Type weight_type, const float* x, int64_t n_in, int64_t n_tokens,
                                  GemvActQ8* act) {
  const int64_t nkb = q8_act_blocks(n_in);
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t kb = 0; kb < nkb; ++kb) {
      const int64_t k0 = kb * kQ8BlockK, kc = std::min(kQ8BlockK, n_in - k0);
      ActBlockQ8 a{};  // quantized as the GEMM does: one token, one block
      quantize_activations_q8(Isa::generic, weight_type, x + t * n_in + k0, kc, 0, 1, &a, Q8ActForm::offset);
      GemvActQ8& g = act[t * nkb + kb];
      for (int64_t k = 0; k < kc; ++k) g.q[k] = static_cast<int8_t>(static_cast<int>(a.q[k]) - 128);
      std::copy_n(a.d, kQ8MaxGroups, g.d);
      std::copy_n(a.dsum, kQ8MaxGroups, g.dsum);
      for (int64_t s = 0; s < kc / 16; ++s) {
        int sum = 0;
        for (int64_t k = 16 * s; k < 16 * s + 16; ++k) sum += g.q[k];
        g.qsum[s] = static_cast<int16_t>(sum);
      }
    }
}

void pack_panel_q8(const WeightView& w, int64_t r0, int n_rows, int64_t k0, int64_t kc, PanelQ8* panel,
                   bool with_offsets, Isa isa) {
  const Unpacker unpack = unpacker(w.type, isa);
  const size_t row_bytes = quant::row_bytes(w.type, static_cast<uint64_t>(w.n_in));
  const size_t k_offset = quant::row_bytes(w.type, static_cast<uint64_t>(k0));
  const int group = q8_group(w.type);
  const int n_groups = static_cast<int>(kc / group);
  panel->group = group;
  panel->has_min = w.type == Type::Q4_K || w.type == Type::Q5_K;
  panel->wide = w.type == Type::Q8_0;
  panel->nibbles = w.type == Type::Q4_K;
  panel->block_scale = w.type == Type::Q4_K || w.type == Type::Q5_K || w.type == Type::Q6_K;
  // All rows are unpacked before any is interleaved: reading a row's bytes back right after its
  // unpack wrote them stalls on store forwarding.
  RowQ8 rows[kQ8Rows];
  for (int r = 0; r < kQ8Rows; ++r) {
    RowQ8& row = rows[r];
    if (r < n_rows) {
      const char* src = static_cast<const char*>(w.data) + static_cast<size_t>(r0 + r) * row_bytes + k_offset;
      unpack.quants(src, kc, row.q);
      unpack.factors(src, kc, row);
    } else {
      std::memset(row.q, 0, sizeof row.q);
      std::fill_n(row.scale, kQ8MaxGroups, 0.0f);
      std::fill_n(row.min, kQ8MaxGroups, 0.0f);
      std::fill_n(row.group_scale, kQ8MaxGroups, int16_t{0});
      row.d = 0.0f;
    }
  }
#if defined(__x86_64__)
  if (is_x86_simd(isa)) {
    q8_interleave_rows_avx2(rows[0].q, sizeof(RowQ8), kc, panel->q);
  } else
#endif
  {
    for (int64_t k = 0; k < kc; k += 4)
      for (int r = 0; r < kQ8Rows; ++r) std::memcpy(panel->q[k / 4][r], rows[r].q + k, 4);
  }
  for (int g = 0; g < n_groups; ++g)
    for (int r = 0; r < kQ8Rows; ++r) {
      int32_t sum = 0;
      if (with_offsets)
        for (int k = g * group; k < (g + 1) * group; ++k) sum += rows[r].q[k];
      panel->offset[g][r] = 128 * sum;
      panel->scale[g][r] = rows[r].scale[g];
      panel->min[g][r] = rows[r].min[g];
      panel->group_scale[g][r] = panel->block_scale ? rows[r].group_scale[g] : int16_t{0};
    }
  for (int r = 0; r < kQ8Rows; ++r) {
    int32_t offset = 0;
    for (int g = 0; g < n_groups; ++g) offset += panel->group_scale[g][r] * panel->offset[g][r];
    panel->block_offset[r] = offset;
    panel->block_d[r] = panel->block_scale ? rows[r].d : 0.0f;
  }
}

Q8MicroFn q8_micro_generic() { return micro_generic; }

bool cpu_has_avx512_vnni() {
#if defined(__x86_64__)
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  }();
  return has;
#else
  return false;
#endif
}

Q8MicroFn q8_micro(Isa isa) {
  switch (isa) {
#if defined(__x86_64__)
    case Isa::avx512:
      if (amx_int8_usable()) return q8_micro_amx();
      return cpu_has_avx512_vnni() ? q8_micro_vnni() : q8_micro_avx2();
    case Isa::avxvnni: return q8_micro_avxvnni();
    case Isa::avx2: return q8_micro_avx2();
#elif defined(__aarch64__)
    case Isa::neon: return q8_micro_neon();
    case Isa::dotprod: return q8_micro_dotprod();
    case Isa::i8mm: return q8_micro_i8mm();
#endif
    default: return q8_micro_generic();
  }
}

Q8MicroPairFn q8_micro_pair(Isa isa) {
#if defined(__x86_64__)
  if (q8_micro(isa) == q8_micro_vnni()) return q8_micro_pair_vnni();
#else
  (void)isa;
#endif
  return nullptr;
}

int q8_micro_tokens(Isa isa) {
#if defined(__x86_64__)
  if (q8_micro(isa) == q8_micro_amx()) return kQ8AmxTokens;
#endif
  return kQ8Tokens;
}

Q8PrepareFn q8_prepare(Isa isa) {
#if defined(__x86_64__)
  if (q8_micro(isa) == q8_micro_avx2()) return q8_prepare_avx2();
  if (q8_micro(isa) == q8_micro_amx()) return q8_prepare_amx();
#endif
  return nullptr;
}

Q8ActForm q8_act_form(Isa isa, Type weight_type) {
#if defined(__x86_64__)
  if (q8_micro(isa) == q8_micro_amx()) return Q8ActForm::signed_q;
  if (q8_micro(isa) == q8_micro_avx2() && !takes_q8_k(weight_type)) return Q8ActForm::offset_q16;
#else
  (void)isa;
  (void)weight_type;
#endif
  return Q8ActForm::offset;
}

size_t matmul_q8_scratch_bytes(int64_t n_in, int64_t max_tokens, int n_threads) {
  const size_t act = static_cast<size_t>(max_tokens * q8_act_blocks(n_in)) * sizeof(ActBlockQ8);
  return q8_align(act) + static_cast<size_t>(std::max(n_threads, 1)) * kQ8SweepPanels * q8_align(sizeof(PanelQ8));
}

namespace {

ActBlockQ8* act_of(void* scratch) { return static_cast<ActBlockQ8*>(scratch); }

char* panels_of(void* scratch, int64_t n_in, int64_t n_tokens) {
  return static_cast<char*>(scratch) + q8_align(static_cast<size_t>(n_tokens * q8_act_blocks(n_in)) * sizeof(ActBlockQ8));
}

// Tokens [0, n_tokens) of act (at most kQ8TokenBlock) times w into y.
void matmul_q8_block(Isa isa, const WeightView& w, int64_t n_tokens, ActBlockQ8* act, float* y, char* panels,
                     ThreadPool& pool) {
  std::atomic<int64_t> next_panel{0};
  const Q8Job job{isa, &w, n_tokens, y, act, panels, q8_micro(isa), q8_micro_pair(isa), q8_prepare(isa), q8_micro_tokens(isa),
                  q8_act_form(isa, w.type) != Q8ActForm::signed_q, &next_panel};
  // Threads take chunks of panels as they go, so one that runs late (a busy core) holds the
  // others up by one chunk at most. A chunk is enough panels for ~256 panel-tokens of work (one
  // sweep from 256 tokens on), but no more than leaves 4 chunks per thread. A panel's results do
  // not depend on the thread that computes it.
  pool.run([&job](int ith, int nth) {
    const int64_t n_panels = (job.w->n_out + kQ8Rows - 1) / kQ8Rows;
    const int64_t chunk = std::max<int64_t>(
        kQ8SweepPanels, std::min((256 + job.n_tokens - 1) / job.n_tokens, n_panels / (4 * nth)));
    auto* panels = reinterpret_cast<PanelQ8*>(job.panels + kQ8SweepPanels * q8_align(sizeof(PanelQ8)) * ith);
    for (int64_t begin; (begin = job.next_panel->fetch_add(chunk)) < n_panels;)
      q8_panels(job, begin, std::min(n_panels, begin + chunk), n_panels, panels);
  });
}

}  // namespace

void matmul_q8_quantize(Isa isa, quant::Type weight_type, const float* x, int64_t n_in, int64_t n_tokens,
                        void* scratch, ThreadPool& pool) {
  ActBlockQ8* act = act_of(scratch);
  const Q8ActForm form = q8_act_form(isa, weight_type);
  pool.run([&](int ith, int nth) {
    const int64_t per = (n_tokens + nth - 1) / nth;
    const int64_t begin = std::min(n_tokens, per * ith), end = std::min(n_tokens, per * (ith + 1));
    quantize_activations_q8(isa, weight_type, x, n_in, begin, end, act, form);
  });
}

void matmul_q8_quantized(Isa isa, const WeightView& w, int64_t n_tokens, float* y, void* scratch, ThreadPool& pool) {
  const int64_t nkb = q8_act_blocks(w.n_in);
  char* panels = panels_of(scratch, w.n_in, n_tokens);
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kQ8TokenBlock)
    matmul_q8_block(isa, w, std::min(kQ8TokenBlock, n_tokens - t0), act_of(scratch) + t0 * nkb, y + t0 * w.n_out,
                    panels, pool);
}

void matmul_q8_with(Isa isa, const WeightView& w, const float* x, int64_t n_tokens, float* y,
                    void* scratch, ThreadPool& pool) {
  matmul_q8_quantize(isa, w.type, x, w.n_in, n_tokens, scratch, pool);
  matmul_q8_quantized(isa, w, n_tokens, y, scratch, pool);
}

void matmul_q8_reference(const WeightView& w, const float* x, int64_t n_tokens, float* y) {
  const int64_t nkb = q8_act_blocks(w.n_in);
  std::vector<ActBlockQ8> act(static_cast<size_t>(n_tokens * nkb));
  quantize_activations_q8(Isa::generic, w.type, x, w.n_in, 0, n_tokens, act.data(), Q8ActForm::offset);
  // The activations as the kernels see them: quant · d of its group.
  const int group = q8_group(w.type);
  std::vector<double> xq(static_cast<size_t>(n_tokens * w.n_in));
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t k = 0; k < w.n_in; ++k) {
      const ActBlockQ8& a = act[t * nkb + k / kQ8BlockK];
      const int64_t kk = k % kQ8BlockK;
      xq[t * w.n_in + k] = static_cast<double>(a.d[kk / group]) * (static_cast<int>(a.q[kk]) - 128);
    }
  const size_t row_bytes = quant::row_bytes(w.type, static_cast<uint64_t>(w.n_in));
  std::vector<float> row(static_cast<size_t>(w.n_in));
  for (int64_t r = 0; r < w.n_out; ++r) {
    quant::dequantize_row(w.type, static_cast<const char*>(w.data) + static_cast<size_t>(r) * row_bytes,
                          row.data(), w.n_in);
    for (int64_t t = 0; t < n_tokens; ++t) {
      double s = 0.0;
      for (int64_t k = 0; k < w.n_in; ++k) s += static_cast<double>(row[k]) * xq[t * w.n_in + k];
      y[t * w.n_out + r] = static_cast<float>(s);
    }
  }
}

}  // namespace keel::cpu
