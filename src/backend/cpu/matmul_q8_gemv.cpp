// The fast path's GEMV (decode): the scalar twins of the integer kernels, the kernel tables and
// the driver (see matmul_q8.h). The SIMD kernels are in matmul_q8_gemv_x86.h (AVX2, AVX-512 VNNI)
// and matmul_q8_gemv_arm.h (NEON, dotprod).
#include <algorithm>
#include <type_traits>

#include "backend/cpu/matmul_q8.h"
#include "quant/blocks.h"

namespace keel::cpu {
namespace {

using quant::Type;


// Σ_{k < n} w[k] · x[k] in int32 (exact: |w·x| <= 128·127 and n <= 32).
template <class W>
int32_t dot_i8(const W* w, const int8_t* x, int n) {
  int32_t s = 0;
  for (int k = 0; k < n; ++k) s += static_cast<int32_t>(w[k]) * x[k];
  return s;
}

// ---- one row against one token, per weight type -----------------------------------------------

// Q4_0, Q8_0: a signed quant per input, an f16 scale per 32.
float row_q8_0(const char* row, int64_t n_in, const GemvActQ8* a) {
  const auto* b = reinterpret_cast<const quant::BlockQ8_0*>(row);
  float acc = 0.0f;
  for (int64_t i = 0; i < n_in / 32; ++i) {
    const GemvActQ8& x = a[i / 8];
    const int g = static_cast<int>(i % 8);
    acc += quant::f16_to_f32(b[i].d) * x.d[g] * static_cast<float>(dot_i8(b[i].qs, x.q + 32 * g, 32));
  }
  return acc;
}

float row_q4_0(const char* row, int64_t n_in, const GemvActQ8* a) {
  const auto* b = reinterpret_cast<const quant::BlockQ4_0*>(row);
  float acc = 0.0f;
  for (int64_t i = 0; i < n_in / 32; ++i) {
    int8_t q[32];
    for (int j = 0; j < 16; ++j) {
      q[j] = static_cast<int8_t>((b[i].qs[j] & 0x0F) - 8);
      q[j + 16] = static_cast<int8_t>((b[i].qs[j] >> 4) - 8);
    }
    const GemvActQ8& x = a[i / 8];
    const int g = static_cast<int>(i % 8);
    acc += quant::f16_to_f32(b[i].d) * x.d[g] * static_cast<float>(dot_i8(q, x.q + 32 * g, 32));
  }
  return acc;
}

// Q4_K / Q5_K: q [256] unsigned quants of one block in input order, the block's 6-bit scales.
float k4_block(const uint8_t* q, const uint8_t* packed_scales, float d, float dmin, const GemvActQ8& x) {
  int32_t isum = 0;
  float min_term = 0.0f;
  for (int g = 0; g < 8; ++g) {
    uint8_t sc, m;
    quant::get_scale_min_k4(g, packed_scales, &sc, &m);
    isum += sc * dot_i8(q + 32 * g, x.q + 32 * g, 32);
    min_term += dmin * m * x.dsum[g];
  }
  return d * x.d[0] * static_cast<float>(isum) - min_term;
}

// Q4_K / Q5_K (Block is quant::BlockQ4_K or BlockQ5_K): the 4 low bits, and Q5_K's fifth from qh.
template <class Block>
float row_k45(const char* row, int64_t n_in, const GemvActQ8* a) {
  constexpr bool five = std::is_same_v<Block, quant::BlockQ5_K>;
  const auto* b = reinterpret_cast<const Block*>(row);
  float acc = 0.0f;
  for (int64_t ib = 0; ib < n_in / quant::QK_K; ++ib) {
    uint8_t q[quant::QK_K];
    for (int j = 0; j < 4; ++j)
      for (int l = 0; l < 32; ++l) {
        int lo = b[ib].qs[32 * j + l] & 0x0F, hi = b[ib].qs[32 * j + l] >> 4;
        if constexpr (five) {
          lo |= ((b[ib].qh[l] >> (2 * j)) & 1) << 4;
          hi |= ((b[ib].qh[l] >> (2 * j + 1)) & 1) << 4;
        }
        q[64 * j + l] = static_cast<uint8_t>(lo);
        q[64 * j + 32 + l] = static_cast<uint8_t>(hi);
      }
    acc += k4_block(q, b[ib].scales, quant::f16_to_f32(b[ib].d), quant::f16_to_f32(b[ib].dmin), a[ib]);
  }
  return acc;
}

// Q6_K: unsigned 6-bit quants (the stored value, 32 above the signed one), a signed scale per 16.
float row_q6_k(const char* row, int64_t n_in, const GemvActQ8* a) {
  const auto* b = reinterpret_cast<const quant::BlockQ6_K*>(row);
  float acc = 0.0f;
  for (int64_t ib = 0; ib < n_in / quant::QK_K; ++ib) {
    const quant::BlockQ6_K& blk = b[ib];
    uint8_t q[quant::QK_K];
    for (int n = 0; n < 2; ++n)
      for (int l = 0; l < 32; ++l) {
        const uint8_t* ql = blk.ql + 64 * n;
        const uint8_t h = blk.qh[32 * n + l];
        q[128 * n + l] = static_cast<uint8_t>((ql[l] & 0xF) | ((h & 3) << 4));
        q[128 * n + l + 32] = static_cast<uint8_t>((ql[l + 32] & 0xF) | (((h >> 2) & 3) << 4));
        q[128 * n + l + 64] = static_cast<uint8_t>((ql[l] >> 4) | (((h >> 4) & 3) << 4));
        q[128 * n + l + 96] = static_cast<uint8_t>((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4));
      }
    const GemvActQ8& x = a[ib];
    int32_t isum = 0;
    for (int g = 0; g < 16; ++g) isum += blk.scales[g] * (dot_i8(q + 16 * g, x.q + 16 * g, 16) - 32 * x.qsum[g]);
    acc += quant::f16_to_f32(blk.d) * x.d[0] * static_cast<float>(isum);
  }
  return acc;
}

using RowFn = float (*)(const char* row, int64_t n_in, const GemvActQ8* a);

template <RowFn kRow>
void gemv_generic(const void* w, size_t row_bytes, int64_t n_in, int64_t n_rows, const GemvActQ8* act,
                  int64_t n_tok, float* y, int64_t ldy) {
  const int64_t nkb = q8_act_blocks(n_in);
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t r = 0; r < n_rows; ++r)
      y[t * ldy + r] = kRow(static_cast<const char*>(w) + static_cast<size_t>(r) * row_bytes, n_in, act + t * nkb);
}

struct GemvJob {
  const WeightView* w;
  const GemvActQ8* act;
  int64_t n_tokens;
  float* y;
  Q8GemvFn gemv;
};

}  // namespace

Q8GemvFn q8_gemv_generic(Type type) {
  switch (type) {
    case Type::Q4_0: return gemv_generic<row_q4_0>;
    case Type::Q8_0: return gemv_generic<row_q8_0>;
    case Type::Q4_K: return gemv_generic<row_k45<quant::BlockQ4_K>>;
    case Type::Q5_K: return gemv_generic<row_k45<quant::BlockQ5_K>>;
    case Type::Q6_K: return gemv_generic<row_q6_k>;
    default: return nullptr;
  }
}

Q8GemvFn q8_gemv(Isa isa, Type type) {
  switch (isa) {
#if defined(__x86_64__)
    case Isa::avx512: return cpu_has_avx512_vnni() ? q8_gemv_vnni(type) : q8_gemv_avx2(type);
    case Isa::avxvnni: return q8_gemv_avxvnni(type);
    case Isa::avx2: return q8_gemv_avx2(type);
#elif defined(__aarch64__)
    case Isa::neon: return q8_gemv_neon(type);
    case Isa::dotprod: case Isa::i8mm: return q8_gemv_dotprod(type);
#endif
    default: return q8_gemv_generic(type);
  }
}

size_t matmul_q8_gemv_scratch_bytes(int64_t n_in, int64_t n_tokens) {
  return q8_align(static_cast<size_t>(n_tokens * q8_act_blocks(n_in)) * sizeof(GemvActQ8));
}

void matmul_q8_gemv_quantize(Type weight_type, const float* x, int64_t n_in, int64_t n_tokens, void* scratch) {
  // A few KiB per token: quantized on the calling thread (a pool round trip would cost more).
  quantize_activations_gemv_q8(weight_type, x, n_in, n_tokens, static_cast<GemvActQ8*>(scratch));
}

void matmul_q8_gemv_quantized(Isa isa, const WeightView& w, int64_t n_tokens, float* y, void* scratch,
                              ThreadPool& pool) {
  const GemvJob job{&w, static_cast<const GemvActQ8*>(scratch), n_tokens, y, q8_gemv(isa, w.type)};
  pool.run([&job](int ith, int nth) {
    const WeightView& w = *job.w;
    int64_t begin = 0, end = 0;
    gemv_row_range(w.n_out, ith, nth, begin, end);
    if (begin >= end) return;
    const size_t row_bytes = quant::row_bytes(w.type, static_cast<uint64_t>(w.n_in));
    job.gemv(static_cast<const char*>(w.data) + static_cast<size_t>(begin) * row_bytes, row_bytes, w.n_in,
             end - begin, job.act, job.n_tokens, job.y + begin, w.n_out);
  });
}

}  // namespace keel::cpu
