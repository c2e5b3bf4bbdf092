// The CPU backend: backend.h's operations on host memory with the SIMD kernels of this folder
// (runtime-dispatched, each with an always-compiled scalar twin), on one thread pool. Weights are
// used in place from the mmapped file; KV pages, state and workspaces are 64-byte aligned heap
// blocks allocated before freeze().
#pragma once
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/thread_pool.h"

namespace keel::cpu {

// matmul / attention / GDN workspaces for `shape` (names "matmul", "attention", "gdn_work").
std::vector<backend::BufferSpec> workspace_buffers(const backend::WorkloadShape& shape);

class CpuBackend final : public backend::Backend {
 public:
  explicit CpuBackend(int n_threads);

  backend::Device device() const override { return backend::Device::host; }
  ThreadPool& pool() { return pool_; }

  backend::Memory allocate(std::string_view name, size_t bytes) override;
  void reserve(const backend::WorkloadShape& shape) override;
  void create_kv(const backend::KvGeometry& geometry) override;
  backend::WeightView place_weight(std::string_view, const backend::WeightView& host) override { return host; }
  const float* place_vector(std::string_view, const float* host, int64_t) override { return host; }
  void freeze() override { frozen_ = true; }
  bool frozen() const override { return frozen_; }

  void download(const void* src, void* host_dst, size_t bytes) override;
  void upload(const void* host_src, void* dst, size_t bytes) override { download(host_src, dst, bytes); }
  void zero(void* dst, size_t bytes) override;
  void read_kv_page(uint32_t layer, int32_t page, void* host_dst) override;
  void write_kv_page(uint32_t layer, int32_t page, const void* host_src) override;

  void begin_batch(const backend::Batch& batch) override { batch_ = batch; }
  void embed(const backend::WeightView& table, float* out) override;
  void rms_norm(const float* x, const float* w, float* out, int64_t n_rows, int64_t dim, float eps) override;
  void gated_rms_norm(float* o, const float* z, const float* w, int64_t n_rows, int64_t dim, float eps) override;
  void add(float* y, const float* x, int64_t n) override;
  void add_bias(float* x, const float* bias, int64_t n_rows, int64_t dim) override;
  void silu_mul(float* gate, const float* up, int64_t n) override;
  void sigmoid_gate(float* x, const float* gate, int64_t gate_stride, int64_t n_rows, int64_t dim) override;
  void copy_rows(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t n_rows,
                 int64_t width) override;
  void matmul(const backend::WeightView& w, const float* x, int64_t n_tokens, float* y) override;
  void matmuls(const float* x, int64_t n_tokens, std::initializer_list<Product> products) override;
  void rope(float* x, int64_t n_heads, int64_t head_dim, const backend::RopeParams& p) override;
  void norm_rope_qk(float* q, int64_t n_q_heads, float* k, int64_t n_kv_heads, int64_t n_tokens, int64_t head_dim,
                    const float* q_norm, const float* k_norm, float eps, const backend::RopeParams& p) override;
  void kv_write(uint32_t layer, const float* k, const float* v) override;
  void attention(uint32_t layer, const float* q, float* out, uint32_t n_head, float scale) override;
  void conv1d_silu(const float* x, int64_t channels, const float* w, int kernel, float* state, float* out) override;
  void l2_norm_heads(float* x, int64_t n_rows, int64_t row_stride, int64_t n_heads, int64_t dim, float eps,
                     float scale) override;
  void gdn_gates(float* beta, float* alpha, const float* ssm_a, const float* dt_bias, int64_t n_heads) override;
  void gated_delta(const backend::GatedDeltaArgs& args) override;
  void logits(const float* hidden, const float* norm_w, float eps, const backend::WeightView& w_out, float* rows,
              float* logits) override;

  // The KV pages of one attention layer (tests, prompt-cache state files).
  const uint8_t* const* kv_pages(uint32_t layer) const { return page_ptrs_.data() + size_t{layer} * kv_.n_pages; }
  const backend::KvGeometry& kv_geometry() const { return kv_; }

 private:
  // Calls multiply(first, count) for the runs of tokens matmul multiplies apart (batch invariance).
  template <class Multiply>
  void for_each_token_run(int64_t n_tokens, Multiply&& multiply) const;

  ThreadPool pool_;
  bool frozen_ = false;
  MatmulMode matmul_mode_ = MatmulMode::fast;  // from reserve(): --exact keeps f32 activations
  bool fast_attention_ = false;  // from reserve(): fast mode with 8-bit activations somewhere
  backend::Memory matmul_ws_, attention_ws_, gdn_ws_;
  size_t attention_ws_floats_ = 0;
  backend::KvGeometry kv_;
  std::vector<backend::Memory> pages_;   // [n_layers * n_pages]
  std::vector<uint8_t*> page_ptrs_;      // the same, as pointers for the kernels
  backend::Batch batch_;
};

}  // namespace keel::cpu
