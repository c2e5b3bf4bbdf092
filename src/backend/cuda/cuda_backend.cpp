#include "backend/cuda/cuda_backend.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gdn.cuh"
#include "backend/cuda/ops.cuh"
#include "backend/host_memory.h"
#include "keel/error.h"

namespace keel::cuda {
namespace {

size_t align256(size_t n) { return (n + 255) / 256 * 256; }

// Bytes of the matmul scratch for weights `n_in` wide: the bf16 panel (at most kGemmPanelBytes
// whatever the row count) and the bf16 activations.
size_t matmul_bound(int64_t n_in, int64_t max_tokens) {
  if (max_tokens <= kGemvMaxTokens) return 0;
  return align256(kGemmPanelBytes) + align256(static_cast<size_t>(max_tokens * n_in) * 2);
}

// Rows of the compact page table one call can need (one per sequence in the call).
int64_t max_meta_seqs(const backend::WorkloadShape& s) { return std::max<int64_t>(1, std::min<int64_t>(s.max_tokens, s.n_seqs)); }

KvLayout layout_of(const backend::KvGeometry& g) {
  KvLayout l;
  l.elem = g.type == backend::KvType::q8_0 ? KvElem::q8_0 : KvElem::f16;
  l.n_kv_heads = static_cast<int>(g.n_kv_heads);
  l.head_dim = static_cast<int>(g.head_dim);
  l.page_tokens = static_cast<int>(g.page_tokens);
  l.n_pages = static_cast<int>(g.n_pages);
  return l;
}

int select_device(int ordinal) {
  if (ordinal < 0 || ordinal >= device_count())
    throw Error("no CUDA device " + std::to_string(ordinal) + " (this machine has " + std::to_string(device_count()) + ")",
                ErrorKind::usage);
  check(cudaSetDevice(ordinal), "cudaSetDevice");
  return ordinal;
}

DeviceWeight device_weight(const backend::WeightView& w) { return {w.type, w.data, w.n_in, w.n_out}; }

// The shape of a decode step (every sequence one token), 0 for other calls (step_graphs.h).
uint64_t step_key(const backend::Batch& b, int32_t page_stride, int n_chunks) {
  uint64_t h = hash_args("step", b.n_tokens, b.n_seqs, b.n_logit_rows, page_stride, n_chunks);
  for (int32_t s = 0; s < b.n_seqs; ++s) {
    if (b.seqs[s].n_tokens != 1) return 0;
    h = hash_mix(h, hash_args("seq", b.seqs[s].first, b.seqs[s].n_tokens));
  }
  return h == 0 ? 1 : h;
}

// The 8-bit GEMV's activation rows: the widest input of a weight it multiplies (0: none, or exact).
int64_t q8_act_width(const backend::WorkloadShape& s) {
  int64_t width = 0;
  for (const auto& m : s.matrices)
    if (!s.exact && gemv_q8_supports({m.type, nullptr, m.n_in, 1})) width = std::max(width, m.n_in);
  return width;
}

bool graphs_wanted() {
  const char* graphs = std::getenv("KEEL_CUDA_GRAPHS");
  const char* profile = std::getenv("KEEL_PROFILE");
  return !(graphs && std::strcmp(graphs, "0") == 0) && !(profile && std::strcmp(profile, "0") != 0);
}


}  // namespace

std::vector<backend::BufferSpec> workspace_buffers(const backend::WorkloadShape& s) {
  size_t matmul_bytes = 0;
  for (const auto& m : s.matrices) matmul_bytes = std::max(matmul_bytes, matmul_bound(m.n_in, s.max_tokens));
  std::vector<backend::BufferSpec> out = {{"matmul", matmul_bytes}, {"blas", kBlasWorkspaceBytes}};
  if (const int64_t act_in = q8_act_width(s); act_in > 0)
    out.push_back({"gemv_act", act_q8_bytes(act_in, kGemvMaxTokens)});
  if (s.kv.n_layers > 0)
    out.push_back({"attention", attention_workspace_bytes(layout_of(s.kv), int(s.n_head), int(s.max_tokens))});
  if (s.gdn_d_k > 0)
    out.push_back({"gdn", gated_delta_workspace_bytes(s.max_tokens, max_meta_seqs(s), s.gdn_v_heads, s.gdn_d_k, s.gdn_d_v)});
  const uint64_t chunks = uint64_t(gdn_max_chunks(s.max_tokens, max_meta_seqs(s)));
  const uint64_t meta_ints =
      4 * uint64_t(s.max_tokens) + 3 + uint64_t(max_meta_seqs(s)) * (s.kv.n_pages + 3) + 2 * chunks;
  out.push_back({"meta", meta_ints * 4 + 10 * 256});
  return out;
}

bool device_memory(int ordinal, uint64_t& free_bytes, uint64_t& total_bytes, std::string& name) {
  if (ordinal < 0 || ordinal >= device_count()) return false;
  int previous = 0;
  if (cudaGetDevice(&previous) != cudaSuccess) return false;
  cudaDeviceProp prop{};
  size_t f = 0, t = 0;
  const bool ok = cudaSetDevice(ordinal) == cudaSuccess && cudaGetDeviceProperties(&prop, ordinal) == cudaSuccess &&
                  cudaMemGetInfo(&f, &t) == cudaSuccess;
  cudaSetDevice(previous);
  if (!ok) {
    (void)cudaGetLastError();
    return false;
  }
  free_bytes = f;
  total_bytes = t;
  name = prop.name;
  return true;
}

bool device_capability(int ordinal, int& major, int& minor) {
  if (ordinal < 0 || ordinal >= device_count()) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, ordinal) == cudaSuccess &&
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, ordinal) == cudaSuccess)
    return true;
  (void)cudaGetLastError();
  return false;
}

CudaBackend::CudaBackend(int ordinal)
    : ordinal_(select_device(ordinal)), graphs_(graphs_wanted()), staging_(kStagingBytes) {}

CudaBackend::~CudaBackend() {
  cudaStreamSynchronize(stream_.get());
  blas_.reset();
}

void* CudaBackend::device_alloc(std::string_view name, size_t bytes) {
  if (frozen_)
    throw Error("internal: device buffer '" + std::string(name) + "' requested after session start");
  backend::Memory m = allocate(name, bytes);
  void* p = m.get();
  owned_.push_back(std::move(m));
  return p;
}

backend::Memory CudaBackend::allocate(std::string_view name, size_t bytes) {
  if (frozen_)
    throw Error("internal: device buffer '" + std::string(name) + "' requested after session start; every device byte must be planned");
  const size_t rounded = align256(std::max<size_t>(bytes, 1));
  void* raw = nullptr;
  try {
    raw = device_malloc(rounded);  // counted
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + " for '" + std::string(name) + "'", ErrorKind::refused);
  }
  backend::Memory m(static_cast<uint8_t*>(raw), backend::MemoryFree{device_free});
  check(cudaMemsetAsync(raw, 0, rounded, stream_.get()), "cudaMemset");
  return m;
}

// The host block page-locked in place (cudaHostRegister): the same planned bytes, no new
// allocation. A decode step ends by copying its logits rows into it (Qwen3.5's 248,320 floats,
// about 1 MB a token); into pageable memory that copy goes through the driver's bounce buffer.
// Where the system refuses to lock it (a memlock limit), it stays pageable: slower, not wrong.
backend::Memory CudaBackend::allocate_host_block(std::string_view name, size_t bytes) {
  backend::Memory m = backend::allocate_host(name, bytes);
  if (cudaHostRegister(m.get(), std::max<size_t>(bytes, 1), cudaHostRegisterDefault) != cudaSuccess) {
    cudaGetLastError();  // not sticky; cleared so no later check reports it
    return m;
  }
  return backend::Memory(m.release(), backend::MemoryFree{[](void* p) {
                           cudaHostUnregister(p);
                           backend::free_host(p);
                         }});
}

void CudaBackend::reserve(const backend::WorkloadShape& shape) {
  if (shape.gdn_d_k > 0 && !gated_delta_supports(shape.gdn_d_k, shape.gdn_d_v))
    throw Error("the CUDA gated delta rule takes heads of at most " + std::to_string(kGdnMaxHeadDim) +
                    " dims; this model's are " + std::to_string(shape.gdn_d_k) + " (keys) and " +
                    std::to_string(shape.gdn_d_v) + " (values)",
                ErrorKind::usage);
  max_tokens_ = shape.max_tokens;
  exact_ = shape.exact;
  max_seqs_ = max_meta_seqs(shape);
  seq_len_.reserve(size_t(max_seqs_));
  for (const backend::BufferSpec& b : workspace_buffers(shape)) {
    void* p = device_alloc(b.name, b.bytes);
    if (b.name == "matmul") {
      matmul_ws_ = p;
      matmul_ws_bytes_ = b.bytes;
      for (const auto& m : shape.matrices) gemm_in_ = std::max(gemm_in_, m.n_in);
    } else if (b.name == "blas") {
      blas_ = std::make_unique<Blas>(p, b.bytes, stream_.get());
    } else if (b.name == "gemv_act") {
      act_q8_ = p;
      act_q8_in_ = q8_act_width(shape);
    } else if (b.name == "gdn") {
      gdn_ws_ = p;
    } else if (b.name == "attention") {
      attention_ws_ = static_cast<float*>(p);
    } else if (b.name == "meta") {
      meta_dev_ = static_cast<int32_t*>(p);
      // Offsets (in bytes) of the per-call arrays inside "meta" (and its pinned host twin).
      size_t at = 0;
      auto take = [&](size_t ints) { const size_t o = at; at += align256(ints * 4); return o; };
      const auto mt = size_t(shape.max_tokens);
      meta_.tokens = take(mt);
      meta_.pos = take(mt);
      meta_.seq = take(mt);
      meta_.q_start = take(size_t(max_meta_seqs(shape)) + 1);
      meta_.slot = take(size_t(max_meta_seqs(shape)));
      meta_.seq_chunk = take(size_t(max_meta_seqs(shape)) + 1);
      meta_.chunk_first = take(size_t(gdn_max_chunks(shape.max_tokens, max_meta_seqs(shape))));
      meta_.chunk_len = take(size_t(gdn_max_chunks(shape.max_tokens, max_meta_seqs(shape))));
      meta_.pages = take(size_t(max_meta_seqs(shape)) * shape.kv.n_pages);
      meta_.logit_rows = take(mt);
      meta_.total = at;
      if (meta_.total > b.bytes) throw Error("internal: CUDA meta buffer too small");
      meta_host_ = PinnedBuffer(meta_.total);
    }
  }
}

void CudaBackend::create_kv(const backend::KvGeometry& geometry) {
  if (geometry.n_layers == 0) return;
  if (geometry.type == backend::KvType::f32)
    throw Error("the CUDA backend keeps the KV cache in f16 or q8_0: use --kv-type f16 or --kv-type q8_0", ErrorKind::usage);
  kv_ = geometry;
  kv_layout_ = layout_of(geometry);
  if (!attention_supports(kv_layout_))
    throw Error("the CUDA attention kernels take head sizes 64, 128 and 256; this model's is " +
                    std::to_string(geometry.head_dim),
                ErrorKind::usage);
  if (geometry.type == backend::KvType::q8_0 && geometry.head_dim % 32 != 0)
    throw Error("q8_0 KV cache needs a head size that is a multiple of 32, the model has " +
                std::to_string(geometry.head_dim));
  if (kv_layout_.page_bytes() != geometry.page_bytes()) throw Error("internal: KV page layouts disagree");
  kv_pools_.clear();
  for (uint32_t l = 0; l < geometry.n_layers; ++l)
    kv_pools_.push_back(device_alloc("kv pages", size_t(geometry.n_pages) * geometry.page_bytes()));
}

void CudaBackend::upload_weight(void* dst, const void* src, size_t bytes) {
  upload_staged(dst, src, bytes, staging_, stream_.get());
  const uint64_t before = uploaded_;
  uploaded_ += bytes;
  if (isatty(STDERR_FILENO) && before / (1ull << 30) != uploaded_ / (1ull << 30)) {
    std::fprintf(stderr, "\ruploading weights to cuda:%d: %.1f GiB ", ordinal_, double(uploaded_) / double(1ull << 30));
    std::fflush(stderr);
  }
}

backend::WeightView CudaBackend::place_weight(std::string_view name, const backend::WeightView& host) {
  if (auto it = weights_.find(name); it != weights_.end()) return it->second;  // tied tensors: once
  if (!device_matmul_supports(host.type))
    throw Error("the CUDA backend cannot read tensor type " + std::string(quant::type_name(host.type)) + " ('" +
                std::string(name) + "')");
  const size_t bytes = quant::row_bytes(host.type, uint64_t(host.n_in)) * size_t(host.n_out);
  void* dst = device_alloc(name, bytes);
  upload_weight(dst, host.data, bytes);
  backend::WeightView placed{host.type, dst, host.n_in, host.n_out};
  weights_.emplace(std::string(name), placed);
  return placed;
}

const float* CudaBackend::place_vector(std::string_view name, const float* host, int64_t n) {
  if (!host) return nullptr;
  if (auto it = vectors_.find(name); it != vectors_.end()) return it->second;
  void* dst = device_alloc(name, size_t(n) * sizeof(float));
  upload_weight(dst, host, size_t(n) * sizeof(float));
  vectors_.emplace(std::string(name), static_cast<const float*>(dst));
  return static_cast<const float*>(dst);
}

void CudaBackend::freeze() {
  check(cudaStreamSynchronize(stream_.get()), "cudaStreamSynchronize");
  if (uploaded_ >= (1ull << 30) && isatty(STDERR_FILENO)) std::fprintf(stderr, "\r\033[K");
  frozen_ = true;
}

void CudaBackend::download(const void* src, void* host_dst, size_t bytes) {
  graphs_.finish(stream_.get());
  check(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_.get()), "cudaMemcpy (download)");
  check(cudaStreamSynchronize(stream_.get()), "cudaStreamSynchronize");
}

void CudaBackend::upload(const void* host_src, void* dst, size_t bytes) {
  graphs_.finish(stream_.get());
  ++op_serial_;
  check(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_.get()), "cudaMemcpy (upload)");
  check(cudaStreamSynchronize(stream_.get()), "cudaStreamSynchronize");  // host_src may be reused at once
}

void CudaBackend::read_kv_page(uint32_t layer, int32_t page, void* host_dst) {
  download(static_cast<const uint8_t*>(kv_pools_.at(layer)) + size_t(page) * kv_.page_bytes(), host_dst, kv_.page_bytes());
}

void CudaBackend::write_kv_page(uint32_t layer, int32_t page, const void* host_src) {
  upload(host_src, static_cast<uint8_t*>(kv_pools_.at(layer)) + size_t(page) * kv_.page_bytes(), kv_.page_bytes());
}

void CudaBackend::zero(void* dst, size_t bytes) {
  const auto o = op("zero", dst, bytes);
  if (o.skip) return;
  check(cudaMemsetAsync(dst, 0, bytes, stream_.get()), "cudaMemset");
}

void CudaBackend::begin_batch(const backend::Batch& batch) {
  if (batch.n_tokens > max_tokens_ || batch.n_seqs > max_seqs_ || batch.n_logit_rows > max_tokens_)
    throw Error("internal: forward call larger than the CUDA plan");
  graphs_.finish(stream_.get());  // a previous step that downloaded nothing (no logits) ends here
  profile_.collect();
  ++op_serial_;
  batch_ = batch;
  // The pinned host twin is reused: the previous call's copy out of it must have finished.
  if (meta_pending_) meta_copied_.synchronize();
  auto* h = static_cast<uint8_t*>(meta_host_.data());
  auto* tokens = reinterpret_cast<int32_t*>(h + meta_.tokens);
  auto* pos = reinterpret_cast<int32_t*>(h + meta_.pos);
  auto* seq = reinterpret_cast<int32_t*>(h + meta_.seq);
  auto* q_start = reinterpret_cast<int32_t*>(h + meta_.q_start);
  auto* slot = reinterpret_cast<int32_t*>(h + meta_.slot);
  auto* seq_chunk = reinterpret_cast<int32_t*>(h + meta_.seq_chunk);
  auto* chunk_first = reinterpret_cast<int32_t*>(h + meta_.chunk_first);
  auto* chunk_len = reinterpret_cast<int32_t*>(h + meta_.chunk_len);
  auto* pages = reinterpret_cast<int32_t*>(h + meta_.pages);
  auto* rows = reinterpret_cast<int32_t*>(h + meta_.logit_rows);
  const int64_t n = batch.n_tokens;
  std::memcpy(tokens, batch.tokens, size_t(n) * 4);
  std::memcpy(pos, batch.pos, size_t(n) * 4);
  std::memcpy(rows, batch.logit_rows, size_t(batch.n_logit_rows) * 4);
  // Sequences in batch order; a compact page table holding only the pages each one reaches.
  int32_t stride = 1;
  for (int32_t s = 0; s < batch.n_seqs; ++s) {
    const backend::SeqSlice& sl = batch.seqs[s];
    const int64_t needed = kv_.page_tokens ? (sl.pos0 + sl.n_tokens + kv_.page_tokens - 1) / kv_.page_tokens : 0;
    stride = std::max<int32_t>(stride, int32_t(needed));
  }
  for (int32_t s = 0; s < batch.n_seqs; ++s) {
    const backend::SeqSlice& sl = batch.seqs[s];
    q_start[s] = int32_t(sl.first);
    slot[s] = sl.slot;
    for (int64_t t = 0; t < sl.n_tokens; ++t) seq[sl.first + t] = s;
    const int32_t* row = batch.page_table + int64_t{sl.slot} * batch.max_pages_per_seq;
    const int64_t needed = kv_.page_tokens ? (sl.pos0 + sl.n_tokens + kv_.page_tokens - 1) / kv_.page_tokens : 0;
    for (int64_t i = 0; i < needed; ++i) pages[int64_t{s} * stride + i] = row[i];
  }
  q_start[batch.n_seqs] = int32_t(n);
  seq_len_.resize(size_t(batch.n_seqs));
  for (int32_t s = 0; s < batch.n_seqs; ++s) seq_len_[size_t(s)] = int32_t(batch.seqs[s].n_tokens);
  const int n_chunks = fill_gdn_chunks(q_start, seq_len_.data(), batch.n_seqs, chunk_first, chunk_len, seq_chunk);
  auto* d = reinterpret_cast<uint8_t*>(meta_dev_);
  const size_t used = meta_.pages + size_t(batch.n_seqs) * size_t(stride) * 4;
  check(cudaMemcpyAsync(d, h, used, cudaMemcpyHostToDevice, stream_.get()), "cudaMemcpy (meta)");
  if (batch.n_logit_rows > 0)
    check(cudaMemcpyAsync(d + meta_.logit_rows, rows, size_t(batch.n_logit_rows) * 4, cudaMemcpyHostToDevice, stream_.get()),
          "cudaMemcpy (meta)");
  meta_copied_.record(stream_.get());
  meta_pending_ = true;
  d_tokens_ = reinterpret_cast<const int32_t*>(d + meta_.tokens);
  d_pos_ = reinterpret_cast<const int32_t*>(d + meta_.pos);
  d_logit_rows_ = reinterpret_cast<const int32_t*>(d + meta_.logit_rows);
  attn_batch_.n_tokens = int(n);
  attn_batch_.n_seqs = batch.n_seqs;
  attn_batch_.seq = reinterpret_cast<const int32_t*>(d + meta_.seq);
  attn_batch_.pos = d_pos_;
  attn_batch_.q_start = reinterpret_cast<const int32_t*>(d + meta_.q_start);
  attn_batch_.pages = reinterpret_cast<const int32_t*>(d + meta_.pages);
  attn_batch_.max_pages_per_seq = stride;
  seq_batch_.n_seqs = batch.n_seqs;
  seq_batch_.n_tokens = int(n);
  seq_batch_.q_start = attn_batch_.q_start;
  seq_batch_.seq = attn_batch_.seq;
  seq_batch_.slot = reinterpret_cast<const int32_t*>(d + meta_.slot);
  seq_batch_.n_chunks = n_chunks;
  seq_batch_.seq_chunk = reinterpret_cast<const int32_t*>(d + meta_.seq_chunk);
  seq_batch_.chunk_first = reinterpret_cast<const int32_t*>(d + meta_.chunk_first);
  seq_batch_.chunk_len = reinterpret_cast<const int32_t*>(d + meta_.chunk_len);
  graphs_.begin_step(step_key(batch, stride, n_chunks), stream_.get());
}

void CudaBackend::embed(const backend::WeightView& table, float* out) {
  for (int64_t t = 0; t < batch_.n_tokens; ++t)
    if (batch_.tokens[t] < 0 || batch_.tokens[t] >= table.n_out) {
      graphs_.abandon(stream_.get());  // the step's first operation: nothing of it has run
      throw Error("token id " + std::to_string(batch_.tokens[t]) + " is outside the vocabulary (" +
                  std::to_string(table.n_out) + " tokens)");
    }
  const auto o = op("embed", table.data, out);
  if (o.skip) return;
  dequant_rows_f32(device_weight(table), d_tokens_, batch_.n_tokens, out, stream_.get());
}

void CudaBackend::rms_norm(const float* x, const float* w, float* out, int64_t n_rows, int64_t dim, float eps) {
  const auto o = op("rms_norm", x, w, out, n_rows, dim, eps);
  if (o.skip) return;
  if (!writes_act_q8(n_rows, dim)) {
    void* f16 = gemm_input_f16(n_rows, dim);
    cuda::rms_norm(x, w, out, n_rows, dim, eps, stream_.get(), f16);
    if (f16) f16_cached_ = {out, n_rows, dim, op_serial_};
    return;
  }
  // A norm of a few rows feeds the decode GEMVs: quantize its output for them on the way.
  rms_norm_q8(x, w, out, n_rows, dim, eps, act_q8_, stream_.get());
  act_cached_ = {out, n_rows, dim, op_serial_};
}

void CudaBackend::add_rms_norm(float* y, const float* x, const float* w, float* out, int64_t n_rows, int64_t dim,
                               float eps) {
  const auto o = op("add_rms_norm", y, x, w, out, n_rows, dim, eps);
  if (o.skip) return;
  const bool q8 = writes_act_q8(n_rows, dim);
  void* f16 = gemm_input_f16(n_rows, dim);
  cuda::add_rms_norm(y, x, w, out, n_rows, dim, eps, q8 ? act_q8_ : nullptr, stream_.get(), f16);
  if (q8) act_cached_ = {out, n_rows, dim, op_serial_};
  if (f16) f16_cached_ = {out, n_rows, dim, op_serial_};
}

void CudaBackend::gated_rms_norm(float* o, const float* z, const float* w, int64_t n_rows, int64_t dim, float eps) {
  const auto op_scope = op("gated_rms_norm", o, z, w, n_rows, dim, eps);
  if (op_scope.skip) return;
  // Decode: the output feeds the output projection's GEMV; quantize it for that on the way.
  const int64_t tokens = batch_.n_tokens, width = tokens > 0 ? n_rows * dim / tokens : 0;
  if (tokens > 0 && width * tokens == n_rows * dim && dim % kActGroup == 0 && writes_act_q8(tokens, width)) {
    int8_t* q = nullptr;
    float2* s = nullptr;
    act_q8_parts(act_q8_, width, tokens, q, s);
    cuda::gated_rms_norm(o, z, w, n_rows, dim, eps, stream_.get(), q, s);
    act_cached_ = {o, tokens, width, op_serial_};
    return;
  }
  // Prefill: the output feeds the output projection's GEMM; its f16 copy on the way.
  void* f16 = tokens > 0 && width * tokens == n_rows * dim ? gemm_input_f16(tokens, width) : nullptr;
  cuda::gated_rms_norm(o, z, w, n_rows, dim, eps, stream_.get(), nullptr, nullptr, f16);
  if (f16) f16_cached_ = {o, tokens, width, op_serial_};
}

void CudaBackend::add(float* y, const float* x, int64_t n) {
  const auto o = op("add", y, x, n);
  if (o.skip) return;
  add_inplace(y, x, n, stream_.get());
}

void CudaBackend::add_bias(float* x, const float* bias, int64_t n_rows, int64_t dim) {
  const auto o = op("add_bias", x, bias, n_rows, dim);
  if (o.skip) return;
  cuda::add_bias(x, bias, n_rows, dim, stream_.get());
}

void CudaBackend::silu_mul(float* gate, const float* up, int64_t n) {
  const auto o = op("silu_mul", gate, up, n);
  if (o.skip) return;
  // Decode: the product feeds the down projection's GEMV; quantize it for that on the way.
  // Gating in the gate/up GEMV's epilogue instead (the CTA that finishes the last of a group's 64
  // rows, counted with one atomic a warp after __threadfence, or one acquire-release atomic a CTA
  // after its barrier, gates and quantizes the group) measured slower than this kernel and its
  // wait, on an H100 (keel bench at depth 0, tok/s, main -> epilogue, in turn): Qwen3-8B Q8_0
  // 292.6 / 295.1 -> 275.5 / 272.8 (a warp) and 290.4 / 290.5 -> 272.5 / 273.0 (a CTA), Q4_K_M
  // 385.9 / 382.6 -> 333.7 / 336.6 and 386.4 / 385.0 -> 341.5 / 337.9, Qwen3.5-27B Q5_K_M 118.4
  // -> 104.5 and 117.1 -> 105.3; under KEEL_PROFILE (Q4_K_M) the gated GEMV took 37.6 us a call
  // against 24.3 us for the plain one and 5.1 for this kernel. The GEMV's CTAs live a few
  // microseconds; each waiting out an atomic's round trip before it retires costs more than the
  // kernel boundary saves.
  const int64_t rows = batch_.n_tokens, dim = rows > 0 ? n / rows : 0;
  if (rows > 0 && dim * rows == n && writes_act_q8(rows, dim)) {
    silu_mul_q8(gate, up, rows, dim, act_q8_, stream_.get());
    act_cached_ = {gate, rows, dim, op_serial_};
    return;
  }
  // Prefill: the product feeds the down projection's GEMM; its f16 copy on the way.
  void* f16 = rows > 0 && dim * rows == n ? gemm_input_f16(rows, dim) : nullptr;
  cuda::silu_mul(gate, up, n, stream_.get(), f16);
  if (f16) f16_cached_ = {gate, rows, dim, op_serial_};
}

void CudaBackend::sigmoid_gate(float* x, const float* gate, int64_t gate_stride, int64_t n_rows, int64_t dim) {
  const auto o = op("sigmoid_gate", x, gate, gate_stride, n_rows, dim);
  if (o.skip) return;
  // Decode: the gated attention output feeds the output projection's GEMV; quantize it for that
  // on the way.
  const int64_t tokens = batch_.n_tokens, width = tokens > 0 ? n_rows * dim / tokens : 0;
  if (tokens > 0 && width * tokens == n_rows * dim && dim % kActGroup == 0 && writes_act_q8(tokens, width)) {
    cuda::sigmoid_gate(x, dim, gate, gate_stride, n_rows, dim, stream_.get(), nullptr, act_q8_);
    act_cached_ = {x, tokens, width, op_serial_};
    return;
  }
  // Prefill: the gated attention output feeds the output projection's GEMM; its f16 copy on the way.
  void* f16 = gemm_input_f16(n_rows, dim);
  cuda::sigmoid_gate(x, dim, gate, gate_stride, n_rows, dim, stream_.get(), f16);
  if (f16) f16_cached_ = {x, n_rows, dim, op_serial_};
}

void CudaBackend::copy_rows(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t n_rows,
                            int64_t width) {
  const auto o = op("copy_rows", src, src_stride, dst, dst_stride, n_rows, width);
  if (o.skip) return;
  if (n_rows <= 0 || width <= 0) return;
  check(cudaMemcpy2DAsync(dst, size_t(dst_stride) * 4, src, size_t(src_stride) * 4, size_t(width) * 4, size_t(n_rows),
                          cudaMemcpyDeviceToDevice, stream_.get()),
        "cudaMemcpy2D (copy_rows)");
}

// Batch invariance, as on the CPU: a token's result does not depend on the other sequences of
// its call. The GEMV's per-token arithmetic does not depend on the token count, so decodes (and
// any sequence of at most kGemvMaxTokens tokens) are grouped into GEMVs of up to that many
// tokens; a longer sequence takes the GEMM path with its own token count, as it would alone.
void CudaBackend::matmul(const backend::WeightView& w, const float* x, int64_t n_tokens, float* y) {
  const auto o = op(n_tokens <= kGemvMaxTokens ? "matmul (gemv)" : "matmul (gemm)", w.data, w.type, w.n_in, w.n_out, x, n_tokens, y);
  if (o.skip) return;
  const DeviceWeight dw = device_weight(w);
  if (n_tokens <= kGemvMaxTokens || n_tokens != batch_.n_tokens || batch_.n_seqs <= 1) {
    multiply(dw, x, n_tokens, y);
    return;
  }
  int64_t group_first = 0, group_tokens = 0;
  auto flush = [&] {
    if (group_tokens > 0) multiply(dw, x + group_first * w.n_in, group_tokens, y + group_first * w.n_out);
    group_tokens = 0;
  };
  for (int32_t s = 0; s < batch_.n_seqs; ++s) {
    const backend::SeqSlice& sl = batch_.seqs[s];
    if (sl.n_tokens > kGemvMaxTokens) {
      flush();
      multiply(dw, x + sl.first * w.n_in, sl.n_tokens, y + sl.first * w.n_out);
      continue;
    }
    if (group_tokens + sl.n_tokens > kGemvMaxTokens || (group_tokens > 0 && group_first + group_tokens != sl.first)) flush();
    if (group_tokens == 0) group_first = sl.first;
    group_tokens += sl.n_tokens;
  }
  flush();
}

// One GEMV or GEMM. Quantized weights take the 8-bit GEMV unless the session is exact. The
// quantized activations (GEMV) or the f16 copy of x (GEMM) are reused by the next matmuls of the
// same x (Q, K and V; gate and up) as long as no other operation ran in between and no matmul
// wrote over x.
void CudaBackend::multiply(const DeviceWeight& w, const float* x, int64_t n_tokens, float* y) {
  const bool y_over_x = y < x + n_tokens * w.n_in && x < y + n_tokens * w.n_out;
  if (n_tokens > kGemvMaxTokens) {
    const bool ready = f16_cached_.holds(x, n_tokens, w.n_in, op_serial_) && gemm_keeps_x_f16(w);
    cuda::matmul(*blas_, w, x, n_tokens, y, matmul_ws_, ready);
    f16_cached_ = {y_over_x || !gemm_keeps_x_f16(w) ? nullptr : x, n_tokens, w.n_in, op_serial_};
    return;
  }
  if (!takes_gemv_q8(w, n_tokens)) return gemv(w, x, n_tokens, y, stream_.get());
  quantize_once(x, n_tokens, w.n_in);
  gemv_q8(w, act_q8_, n_tokens, y, stream_.get());
  act_cached_ = {y_over_x ? nullptr : x, n_tokens, w.n_in, op_serial_};
}

// Whether an op whose output ([rows, width]) feeds the decode GEMVs writes its 8-bit activations
// too, so the GEMV need not quantize it again.
bool CudaBackend::writes_act_q8(int64_t rows, int64_t width) const {
  return !exact_ && act_q8_ && rows <= kGemvMaxTokens && width % kActGroup == 0 && width <= act_q8_in_;
}

// Where an op whose output ([rows, width]) feeds the prefill GEMMs writes its f16 copy too (the
// start of the matmul scratch, where the GEMM converts x: cuda::matmul), or null.
void* CudaBackend::gemm_input_f16(int64_t rows, int64_t width) const {
  if (rows <= kGemvMaxTokens || rows > max_tokens_ || width > gemm_in_ || !matmul_ws_) return nullptr;
  return matmul_ws_;
}

bool CudaBackend::takes_gemv_q8(const DeviceWeight& w, int64_t n_tokens) const {
  return n_tokens <= kGemvMaxTokens && !exact_ && act_q8_ && gemv_q8_supports(w) && w.n_in <= act_q8_in_;
}

// act_q8_ <- x quantized, unless it already holds it (made by the op just before this one).
void CudaBackend::quantize_once(const float* x, int64_t n_tokens, int64_t n_in) {
  if (!act_cached_.holds(x, n_tokens, n_in, op_serial_)) quantize_act_q8(x, n_tokens, n_in, act_q8_, stream_.get());
}

// Decode-sized calls: the weights the 8-bit GEMV takes go in one launch per type; the rest (and
// every longer call) one by one, as matmul does them.
void CudaBackend::matmuls(const float* x, int64_t n_tokens, std::initializer_list<Product> products) {
  std::array<GemvOut, 4> fused{};
  std::array<DeviceWeight, 4> weights{};
  size_t n_fused = 0;
  if (n_tokens <= kGemvMaxTokens && products.size() <= fused.size())
    for (const Product& p : products) {
      const DeviceWeight w = device_weight(p.w);
      if (!takes_gemv_q8(w, n_tokens)) continue;
      weights[n_fused] = w;
      fused[n_fused] = {&weights[n_fused], p.y};
      ++n_fused;
    }
  if (n_fused < 2) {
    for (const Product& p : products) matmul(p.w, x, n_tokens, p.y);
    return;
  }
  {
    const auto o = op("matmul (gemv)", x, n_tokens, products.size());
    for (size_t i = 0; i < n_fused; ++i) graphs_.skip(hash_args("out", weights[i].data, fused[i].y));
    if (!o.skip) {
      quantize_once(x, n_tokens, weights[0].n_in);
      gemv_q8_many(fused.data(), int(n_fused), act_q8_, n_tokens, stream_.get());
    }
    act_cached_ = {x, n_tokens, weights[0].n_in, op_serial_};
    for (size_t i = 0; i < n_fused; ++i) {
      const float* y = fused[i].y;
      if (y < x + n_tokens * weights[i].n_in && x < y + n_tokens * weights[i].n_out) act_cached_.x = nullptr;
    }
  }
  for (const Product& p : products)
    if (std::none_of(fused.begin(), fused.begin() + n_fused, [&](const GemvOut& f) { return f.y == p.y; }))
      matmul(p.w, x, n_tokens, p.y);
}

namespace {
RopeArgs rope_args(const backend::RopeParams& p) {
  RopeArgs a;
  a.mode = p.type == backend::RopeType::norm ? RopeMode::norm : RopeMode::neox;
  a.n_rot = p.n_rot;
  a.base = p.base;
  a.freq_scale = p.freq_scale;
  a.freq_factors = p.freq_factors;
  return a;
}
}  // namespace

void CudaBackend::rope(float* x, int64_t n_heads, int64_t head_dim, const backend::RopeParams& p) {
  const auto o = op("rope", x, n_heads, head_dim, p.n_rot, p.base, p.freq_scale, p.freq_factors, p.type);
  if (o.skip) return;
  cuda::rope(x, batch_.n_tokens, n_heads, head_dim, d_pos_, rope_args(p), stream_.get());
}

void CudaBackend::norm_rope_qk(float* q, int64_t n_q_heads, float* k, int64_t n_kv_heads, int64_t n_tokens,
                               int64_t head_dim, const float* q_norm, const float* k_norm, float eps,
                               const backend::RopeParams& p) {
  if (n_tokens != batch_.n_tokens || !norm_rope_qk_fits(head_dim, p.n_rot))
    return Backend::norm_rope_qk(q, n_q_heads, k, n_kv_heads, n_tokens, head_dim, q_norm, k_norm, eps, p);
  const auto o = op("norm_rope_qk", q, n_q_heads, k, n_kv_heads, n_tokens, head_dim, q_norm, k_norm, eps, p.n_rot,
                    p.base, p.freq_scale, p.freq_factors, p.type);
  if (o.skip) return;
  cuda::norm_rope_qk(q, n_q_heads, k, n_kv_heads, n_tokens, head_dim, q_norm, k_norm, eps, d_pos_, rope_args(p),
                     stream_.get());
}

void CudaBackend::kv_write(uint32_t layer, const float* k, const float* v) {
  const auto o = op("kv_write", layer, k, v);
  if (o.skip) return;
  cuda::kv_write(kv_layout_, kv_pools_.at(layer), attn_batch_, k, v, stream_.get());
}

void CudaBackend::norm_rope_kv_write(uint32_t layer, float* q, int64_t n_q_heads, float* k, const float* v,
                                     int64_t n_kv_heads, int64_t n_tokens, int64_t head_dim, const float* q_norm,
                                     const float* k_norm, float eps, const backend::RopeParams& p,
                                     const QRows& q_from) {
  if (n_tokens != batch_.n_tokens || !norm_rope_qk_fits(head_dim, p.n_rot) || kv_layout_.head_dim != head_dim ||
      kv_layout_.n_kv_heads != n_kv_heads)
    return Backend::norm_rope_kv_write(layer, q, n_q_heads, k, v, n_kv_heads, n_tokens, head_dim, q_norm, k_norm, eps, p,
                                       q_from);
  const auto o = op("norm_rope_kv_write", layer, q, n_q_heads, k, v, n_kv_heads, n_tokens, head_dim, q_norm, k_norm, eps,
                    p.n_rot, p.base, p.freq_scale, p.freq_factors, p.type, q_from.rows, q_from.stride);
  if (o.skip) return;
  cuda::norm_rope_kv_write(q, n_q_heads, k, v, n_kv_heads, head_dim, q_norm, k_norm, eps, rope_args(p), kv_layout_,
                           kv_pools_.at(layer), attn_batch_, stream_.get(), q_from.rows, q_from.stride);
}

void CudaBackend::attention(uint32_t layer, const float* q, float* out, uint32_t n_head, float scale) {
  const auto o = op(batch_.n_tokens <= kGemvMaxTokens ? "attention (decode)" : "attention", layer, q, out, n_head, scale);
  const int64_t rows = batch_.n_tokens, width = int64_t{n_head} * kv_layout_.head_dim;
  // Decode: the output feeds the output projection's GEMV; quantize it for that on the way.
  ActOut act;
  if (writes_act_q8(rows, width)) act_q8_parts(act_q8_, width, rows, act.q, act.s);
  act.f16 = gemm_input_f16(rows, width);  // prefill
  if (o.skip) return;
  if (cuda::attention(kv_layout_, kv_pools_.at(layer), attn_batch_, q, out, int(n_head), scale, attention_ws_,
                      stream_.get(), act)) {
    if (act.q) act_cached_ = {out, rows, width, op_serial_};
    if (act.f16) f16_cached_ = {out, rows, width, op_serial_};
  }
}

void CudaBackend::conv1d_silu(const float* x, int64_t channels, const float* w, int kernel, float* state, float* out) {
  const auto o = op("conv1d_silu", x, channels, w, kernel, state, out);
  if (o.skip) return;
  if (kernel < 1 || kernel > backend::kMaxConvKernel)
    throw Error("internal: conv1d kernel " + std::to_string(kernel) + " is outside 1.." +
                std::to_string(backend::kMaxConvKernel));
  cuda::conv1d_silu(x, channels, w, kernel, state, out, seq_batch_, stream_.get());
}

void CudaBackend::l2_norm_heads(float* x, int64_t n_rows, int64_t row_stride, int64_t n_heads, int64_t dim, float eps,
                                float scale) {
  const auto o = op("l2_norm_heads", x, n_rows, row_stride, n_heads, dim, eps, scale);
  if (o.skip) return;
  cuda::l2_norm_heads(x, n_rows, row_stride, n_heads, dim, eps, scale, stream_.get());
}

void CudaBackend::gdn_gates(float* beta, float* alpha, const float* ssm_a, const float* dt_bias, int64_t n_heads) {
  const auto o = op("gdn_gates", beta, alpha, ssm_a, dt_bias, n_heads);
  if (o.skip) return;
  cuda::gdn_gates(beta, alpha, ssm_a, dt_bias, batch_.n_tokens, n_heads, stream_.get());
}

// A decode call (one token per sequence) makes the four ops in one launch; any other, one by one.
void CudaBackend::gdn_inputs(const GdnInputArgs& a) {
  const bool decode = a.n_tokens == batch_.n_tokens && a.n_tokens == batch_.n_seqs &&
                      std::all_of(seq_len_.begin(), seq_len_.end(), [](int32_t n) { return n == 1; });
  if (!decode || !gdn_decode_inputs_fit(a.d_k, a.kernel) || 2 * a.n_k_heads * a.d_k > a.channels)
    return Backend::gdn_inputs(a);
  const auto o = op("gdn_inputs", a.mix, a.n_tokens, a.channels, a.conv_w, a.kernel, a.conv_state, a.u, a.n_k_heads,
                    a.d_k, a.l2_eps, a.q_scale, a.beta, a.alpha, a.ssm_a, a.dt_bias, a.n_v_heads);
  if (o.skip) return;
  GdnInputs in;
  in.x = a.mix;
  in.channels = a.channels;
  in.conv_w = a.conv_w;
  in.kernel = a.kernel;
  in.state = a.conv_state;
  in.out = a.u;
  in.n_k_heads = int(a.n_k_heads);
  in.d_k = int(a.d_k);
  in.eps = a.l2_eps;
  in.q_scale = a.q_scale;
  in.beta = a.beta;
  in.alpha = a.alpha;
  in.ssm_a = a.ssm_a;
  in.dt_bias = a.dt_bias;
  in.n_v_heads = int(a.n_v_heads);
  gdn_decode_inputs(in, seq_batch_, stream_.get());
}

namespace {
DeltaArgs delta_args(const backend::GatedDeltaArgs& g) {
  DeltaArgs a;
  a.q = g.q;
  a.k = g.k;
  a.v = g.v;
  a.qk_stride = g.qk_stride;
  a.v_stride = g.v_stride;
  a.g = g.g;
  a.beta = g.beta;
  a.state = g.state;
  a.out = g.out;
  a.n_k_heads = int(g.n_k_heads);
  a.n_v_heads = int(g.n_v_heads);
  a.d_k = int(g.d_k);
  a.d_v = int(g.d_v);
  return a;
}
}  // namespace

void CudaBackend::gated_delta(const backend::GatedDeltaArgs& g) {
  const auto o = op("gated_delta", g.q, g.k, g.v, g.g, g.beta, g.state, g.out, g.qk_stride, g.v_stride, g.n_k_heads, g.n_v_heads, g.d_k, g.d_v);
  if (o.skip) return;
  cuda::gated_delta(delta_args(g), seq_batch_, gdn_ws_, stream_.get());
}

// Decode: the rule and the norm in one launch, which also writes the output projection's 8-bit
// activations (Qwen3.5's heads of 128); any other call, the two ops.
void CudaBackend::gated_delta_norm(const backend::GatedDeltaArgs& g, int64_t n_tokens, const float* z, const float* w,
                                   float eps) {
  const DeltaArgs a = delta_args(g);
  const int64_t width = g.n_v_heads * g.d_v;
  if (n_tokens != batch_.n_tokens || !gated_delta_norm_fits(a, seq_batch_) || !writes_act_q8(n_tokens, width))
    return Backend::gated_delta_norm(g, n_tokens, z, w, eps);
  const auto o = op("gated_delta_norm", g.q, g.k, g.v, g.g, g.beta, g.state, g.out, g.qk_stride, g.v_stride,
                    g.n_k_heads, g.n_v_heads, g.d_k, g.d_v, z, w, eps);
  if (o.skip) return;
  int8_t* q = nullptr;
  float2* s = nullptr;
  act_q8_parts(act_q8_, width, n_tokens, q, s);
  cuda::gated_delta_norm(a, seq_batch_, z, w, eps, q, s, stream_.get());
  act_cached_ = {g.out, n_tokens, width, op_serial_};
}

void CudaBackend::logits(const float* hidden, const float* norm_w, float eps, const backend::WeightView& w_out,
                         float* rows, float* logits) {
  const auto o = op("logits", hidden, norm_w, eps, w_out.data, w_out.type, w_out.n_in, w_out.n_out, rows, logits);
  if (o.skip) return;
  const int64_t d = w_out.n_in, n = batch_.n_logit_rows;
  if (n == 0) return;
  rms_norm_rows(hidden, d_logit_rows_, norm_w, rows, n, d, eps, stream_.get());
  ++op_serial_;  // rows were just written: no earlier quantization of them is current
  // One row per sequence (generation): GEMV groups, as each would be alone.
  const int64_t group = n <= batch_.n_seqs ? kGemvMaxTokens : n;
  for (int64_t r = 0; r < n; r += group)
    multiply(device_weight(w_out), rows + r * d, std::min(group, n - r), logits + r * w_out.n_out);
}

}  // namespace keel::cuda

namespace keel::cuda {
std::unique_ptr<backend::Backend> make_cuda_backend(int ordinal) { return std::make_unique<CudaBackend>(ordinal); }
}  // namespace keel::cuda
