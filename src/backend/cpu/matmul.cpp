// The matmul driver: picks the kernel set, splits the work over threads, and runs the GEMV or the
// blocked GEMM loop. The kernels themselves are in matmul_generic.cpp, matmul_avx2.cpp and (AArch64)
// matmul_neon.cpp.
#include "backend/cpu/matmul.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cpu/matmul_q8.h"
#include "keel/error.h"
#include "quant/dequant.h"

namespace keel::cpu {
namespace {

constexpr size_t kAlign = 64;

size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// One thread's GEMM scratch, in floats.
struct GemmScratch {
  size_t xp_floats;     // packed activations: [tokens of the block / 6][kBlockK][6]
  size_t tmp_floats;    // dequantized rows:   [16][kBlockK]
  size_t panel_floats;  // packed weights:     [kBlockK][16]
  size_t bytes() const {
    return align_up(xp_floats * 4) + align_up(tmp_floats * 4) + align_up(panel_floats * 4);
  }
};

GemmScratch gemm_scratch(int64_t max_tokens) {
  const int64_t block_tokens = round_up(std::min(max_tokens, kBlockTokens), kTileTokens);
  return {static_cast<size_t>(block_tokens * kBlockK), static_cast<size_t>(kTileRows * kBlockK),
          static_cast<size_t>(kBlockK * kTileRows)};
}

// The GEMV path's scratch: the activation block sums.
size_t gemv_scratch_bytes(int64_t n_in, int64_t n_tokens) {
  return align_up(static_cast<size_t>(n_tokens * (n_in / kSumBlock)) * sizeof(float));
}

bool supported(quant::Type type) {
  switch (type) {
    case quant::Type::F32: case quant::Type::F16: case quant::Type::BF16:
    case quant::Type::Q4_0: case quant::Type::Q8_0:
    case quant::Type::Q4_K: case quant::Type::Q5_K: case quant::Type::Q6_K:
      return true;
    default:
      return false;
  }
}

[[noreturn]] void unsupported(quant::Type type) {
  throw Error("matmul: keel cannot multiply with tensor type " + std::string(quant::type_name(type)));
}

// x rows [n_tok][ldx] (from input k0) -> groups of 6 tokens, each [kc][6]; missing tokens are 0.
void pack_tokens(const float* x, int64_t ldx, int64_t n_tok, int64_t kc, float* xp) {
  for (int64_t g = 0; g * kTileTokens < n_tok; ++g) {
    float* dst = xp + g * kc * kTileTokens;
    for (int t = 0; t < kTileTokens; ++t) {
      const int64_t tok = g * kTileTokens + t;
      if (tok < n_tok) {
        const float* src = x + tok * ldx;
        for (int64_t k = 0; k < kc; ++k) dst[k * kTileTokens + t] = src[k];
      } else {
        for (int64_t k = 0; k < kc; ++k) dst[k * kTileTokens + t] = 0.0f;
      }
    }
  }
}

struct GemmJob {
  const WeightView* w;
  const float* x;
  int64_t n_tokens;
  float* y;
  char* scratch;
  size_t scratch_per_thread;
  GemmScratch layout;
  TypeKernels tk;
  GemmKernels gk;
};

// One thread's share of the GEMM: the row panels [panel_begin, panel_end).
void gemm_thread(const GemmJob& job, int64_t panel_begin, int64_t panel_end, char* scratch) {
  const WeightView& w = *job.w;
  float* xp = reinterpret_cast<float*>(scratch);
  float* tmp = reinterpret_cast<float*>(scratch + align_up(job.layout.xp_floats * 4));
  float* panel = reinterpret_cast<float*>(scratch + align_up(job.layout.xp_floats * 4) +
                                          align_up(job.layout.tmp_floats * 4));
  const size_t row_bytes = quant::row_bytes(w.type, static_cast<uint64_t>(w.n_in));
  const char* wdata = static_cast<const char*>(w.data);

  for (int64_t t0 = 0; t0 < job.n_tokens; t0 += kBlockTokens) {
    const int64_t mc = std::min(kBlockTokens, job.n_tokens - t0);
    for (int64_t k0 = 0; k0 < w.n_in; k0 += kBlockK) {
      const int64_t kc = std::min(kBlockK, w.n_in - k0);
      const size_t k_offset = quant::row_bytes(w.type, static_cast<uint64_t>(k0));
      pack_tokens(job.x + t0 * w.n_in + k0, w.n_in, mc, kc, xp);
      for (int64_t p = panel_begin; p < panel_end; ++p) {
        const int64_t r0 = p * kTileRows;
        const int n_rows = static_cast<int>(std::min<int64_t>(kTileRows, w.n_out - r0));
        for (int i = 0; i < n_rows; ++i)
          job.tk.dequant_row(wdata + static_cast<size_t>(r0 + i) * row_bytes + k_offset,
                             tmp + i * kBlockK, kc);
        job.gk.pack_panel(tmp, kBlockK, n_rows, kc, panel);
        for (int64_t g = 0; g * kTileTokens < mc; ++g) {
          const int n_tok = static_cast<int>(std::min<int64_t>(kTileTokens, mc - g * kTileTokens));
          float* yt = job.y + (t0 + g * kTileTokens) * w.n_out + r0;
          job.gk.micro(kc, xp + g * kc * kTileTokens, panel, yt, w.n_out, n_tok, n_rows, k0 > 0);
        }
      }
    }
  }
}

void run_gemm(const GemmJob& job, ThreadPool& pool) {
  const int64_t n_panels = (job.w->n_out + kTileRows - 1) / kTileRows;
  // A single std::function capture (one reference) keeps ThreadPool::run allocation-free.
  pool.run([&job = job, n_panels](int ith, int nth) {
    const int64_t per = (n_panels + nth - 1) / nth;
    const int64_t begin = std::min(n_panels, per * ith);
    const int64_t end = std::min(n_panels, per * (ith + 1));
    if (begin < end) gemm_thread(job, begin, end, job.scratch + job.scratch_per_thread * ith);
  });
}

struct GemvJob {
  const WeightView* w;
  const float* x;
  const float* xsum;
  int64_t n_tokens;
  float* y;
  GemvFn gemv;
};

void run_gemv(const GemvJob& job, ThreadPool& pool) {
  pool.run([&job = job](int ith, int nth) {
    const WeightView& w = *job.w;
    int64_t begin = 0, end = 0;
    gemv_row_range(w.n_out, ith, nth, begin, end);
    if (begin >= end) return;
    const size_t row_bytes = quant::row_bytes(w.type, static_cast<uint64_t>(w.n_in));
    job.gemv(static_cast<const char*>(w.data) + static_cast<size_t>(begin) * row_bytes, row_bytes,
             w.n_in, end - begin, job.x, w.n_in, job.xsum, job.n_tokens, job.y + begin, w.n_out);
  });
}

}  // namespace

void sum_activation_blocks(const float* x, int64_t n_in, int64_t n_tok, float* xsum) {
  const int64_t n_blocks = n_in / kSumBlock;
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t b = 0; b < n_blocks; ++b) {
      const float* xb = x + t * n_in + b * kSumBlock;
      float s = 0.0f;
      for (int64_t k = 0; k < kSumBlock; ++k) s += xb[k];
      xsum[t * n_blocks + b] = s;
    }
}

TypeKernels type_kernels(Isa isa, quant::Type type) {
#if defined(__x86_64__)
  const bool simd = is_x86_simd(isa);
  const TypeKernels k = simd ? type_kernels_avx2(type) : type_kernels_generic(type);
#elif defined(__aarch64__)
  const bool simd = isa == Isa::neon || isa == Isa::dotprod || isa == Isa::i8mm;
  const TypeKernels k = simd ? type_kernels_neon(type) : type_kernels_generic(type);
#else
  const TypeKernels k = type_kernels_generic(type);
#endif
  if (!k.dequant_row || !k.gemv) unsupported(type);
  return k;
}

GemmKernels gemm_kernels(Isa isa) {
  switch (isa) {
#if defined(__x86_64__)
    case Isa::avx512: return gemm_kernels_avx512();
    case Isa::avx2: case Isa::avxvnni: return gemm_kernels_avx2();
#elif defined(__aarch64__)
    case Isa::neon: case Isa::dotprod: case Isa::i8mm: return gemm_kernels_neon();
#endif
    default: return gemm_kernels_generic();
  }
}

size_t matmul_scratch_bytes(quant::Type type, int64_t n_in, int64_t max_tokens, int n_threads,
                            MatmulMode mode) {
  if (!supported(type)) unsupported(type);
  // Calls with fewer tokens than max_tokens may take the GEMV path.
  const bool fast = mode == MatmulMode::fast && q8_supported(type);
  const int64_t gemv_tokens = std::min(max_tokens, kGemmMinTokens - 1);
  const size_t gemv = fast ? matmul_q8_gemv_scratch_bytes(n_in, gemv_tokens) : gemv_scratch_bytes(n_in, gemv_tokens);
  if (max_tokens < kGemmMinTokens) return kAlign + gemv;
  const size_t gemm = fast
                          ? matmul_q8_scratch_bytes(n_in, max_tokens, n_threads)
                          : static_cast<size_t>(std::max(n_threads, 1)) * gemm_scratch(max_tokens).bytes();
  return kAlign + std::max(gemv, gemm);
}

namespace {

char* align_scratch(void* scratch) {
  const auto base = reinterpret_cast<uintptr_t>(scratch);
  return static_cast<char*>(scratch) + (align_up(base) - base);
}

// The fast path in its two steps: x quantized as w's type takes it (for the GEMV below
// kGemmMinTokens tokens, else for the GEMM), then w times the quantized x.
void quantize_fast(Isa isa, const WeightView& w, const float* x, int64_t n_tokens, char* aligned, ThreadPool& pool) {
  if (n_tokens < kGemmMinTokens)
    matmul_q8_gemv_quantize(w.type, x, w.n_in, n_tokens, aligned);
  else
    matmul_q8_quantize(isa, w.type, x, w.n_in, n_tokens, aligned, pool);
}

void multiply_fast(Isa isa, const WeightView& w, int64_t n_tokens, float* y, char* aligned, ThreadPool& pool) {
  if (n_tokens < kGemmMinTokens)
    matmul_q8_gemv_quantized(isa, w, n_tokens, y, aligned, pool);
  else
    matmul_q8_quantized(isa, w, n_tokens, y, aligned, pool);
}

}  // namespace

void matmul_with(Isa isa, const WeightView& w, const float* x, int64_t n_tokens, float* y,
                 void* scratch, ThreadPool& pool, MatmulMode mode) {
  if (n_tokens <= 0 || w.n_out <= 0) return;
  const TypeKernels tk = type_kernels(isa, w.type);
  if (w.n_in <= 0) {
    std::fill_n(y, n_tokens * w.n_out, 0.0f);
    return;
  }
  char* aligned = align_scratch(scratch);
  if (mode == MatmulMode::fast && q8_supported(w.type)) {
    quantize_fast(isa, w, x, n_tokens, aligned, pool);
    multiply_fast(isa, w, n_tokens, y, aligned, pool);
    return;
  }
  if (n_tokens < kGemmMinTokens) {
    float* xsum = reinterpret_cast<float*>(aligned);
    sum_activation_blocks(x, w.n_in, n_tokens, xsum);
    run_gemv({&w, x, xsum, n_tokens, y, tk.gemv}, pool);
    return;
  }
  const GemmScratch layout = gemm_scratch(n_tokens);
  run_gemm({&w, x, n_tokens, y, aligned, layout.bytes(), layout, tk, gemm_kernels(isa)}, pool);
}

void matmul(const WeightView& w, const float* x, int64_t n_tokens, float* y, void* scratch,
            ThreadPool& pool, MatmulMode mode) {
  matmul_with(best_isa(), w, x, n_tokens, y, scratch, pool, mode);
}

void matmuls_with(Isa isa, const float* x, int64_t n_tokens, std::span<const MatmulProduct> products,
                  void* scratch, ThreadPool& pool, MatmulMode mode) {
  for (const MatmulProduct& p : products)
    if (p.w->n_in != products[0].w->n_in)
      throw Error("matmuls: the weights of one x differ in their number of inputs");
  const auto shares = [&](const WeightView& w) {
    return mode == MatmulMode::fast && q8_supported(w.type) && n_tokens > 0 && w.n_in > 0 && w.n_out > 0;
  };
  const auto same_activations = [&](size_t i, size_t j) {
    return shares(*products[j].w) && q8_same_activations(products[i].w->type, products[j].w->type);
  };
  // The first weight of each activation format quantizes x; it and the later weights of that
  // format multiply it, before the next format's quantization reuses the scratch.
  for (size_t i = 0; i < products.size(); ++i) {
    const WeightView& w = *products[i].w;
    if (!shares(w)) {
      matmul_with(isa, w, x, n_tokens, products[i].y, scratch, pool, mode);
      continue;
    }
    bool done = false;
    for (size_t j = 0; j < i; ++j) done = done || same_activations(i, j);
    if (done) continue;
    char* aligned = align_scratch(scratch);
    quantize_fast(isa, w, x, n_tokens, aligned, pool);
    for (size_t j = i; j < products.size(); ++j)
      if (same_activations(i, j)) multiply_fast(isa, *products[j].w, n_tokens, products[j].y, aligned, pool);
  }
}

void matmuls(const float* x, int64_t n_tokens, std::span<const MatmulProduct> products, void* scratch,
             ThreadPool& pool, MatmulMode mode) {
  matmuls_with(best_isa(), x, n_tokens, products, scratch, pool, mode);
}

void matmul_reference(const WeightView& w, const float* x, int64_t n_tokens, float* y) {
  if (!supported(w.type)) unsupported(w.type);
  const size_t row_bytes = quant::row_bytes(w.type, static_cast<uint64_t>(w.n_in));
  std::vector<float> row(static_cast<size_t>(w.n_in));
  for (int64_t r = 0; r < w.n_out; ++r) {
    quant::dequantize_row(w.type, static_cast<const char*>(w.data) + static_cast<size_t>(r) * row_bytes,
                          row.data(), w.n_in);
    for (int64_t t = 0; t < n_tokens; ++t) {
      double s = 0.0;
      for (int64_t k = 0; k < w.n_in; ++k) s += static_cast<double>(row[k]) * x[t * w.n_in + k];
      y[t * w.n_out + r] = static_cast<float>(s);
    }
  }
}

}  // namespace keel::cpu
