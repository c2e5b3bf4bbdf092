// The CUDA backend: backend.h's operations on one GPU with the kernels of this folder. Every
// device byte comes from allocate() before freeze() (one cudaMalloc per planned buffer, counted);
// weights stream from the mmapped file through a pinned staging buffer; each forward call's
// metadata (tokens, positions, sequences, page tables, logit rows) goes up in one copy in
// begin_batch. All work is queued on one stream; download() waits for it.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/attention.cuh"
#include "backend/cuda/device_info.h"
#include "backend/cuda/gdn.cuh"
#include "backend/cuda/gemv_q8.cuh"
#include "backend/cuda/matmul.cuh"
#include "backend/cuda/memory.h"
#include "backend/cuda/op_profile.h"
#include "backend/cuda/step_graphs.h"

namespace keel::cuda {

// Pinned host staging for weight uploads (two halves, double-buffered).
constexpr size_t kStagingBytes = size_t{64} << 20;

class CudaBackend final : public backend::Backend {
 public:
  explicit CudaBackend(int ordinal);
  ~CudaBackend() override;

  backend::Device device() const override { return backend::Device::cuda; }

  backend::Memory allocate(std::string_view name, size_t bytes) override;
  backend::Memory allocate_host_block(std::string_view name, size_t bytes) override;
  void reserve(const backend::WorkloadShape& shape) override;
  void create_kv(const backend::KvGeometry& geometry) override;
  backend::WeightView place_weight(std::string_view name, const backend::WeightView& host) override;
  const float* place_vector(std::string_view name, const float* host, int64_t n) override;
  void freeze() override;
  bool frozen() const override { return frozen_; }

  void download(const void* src, void* host_dst, size_t bytes) override;
  void upload(const void* host_src, void* dst, size_t bytes) override;
  void zero(void* dst, size_t bytes) override;
  void read_kv_page(uint32_t layer, int32_t page, void* host_dst) override;
  void write_kv_page(uint32_t layer, int32_t page, const void* host_src) override;

  void begin_batch(const backend::Batch& batch) override;
  void end_batch() override { graphs_.finish(stream_.get()); }
  void embed(const backend::WeightView& table, float* out) override;
  void rms_norm(const float* x, const float* w, float* out, int64_t n_rows, int64_t dim, float eps) override;
  void gated_rms_norm(float* o, const float* z, const float* w, int64_t n_rows, int64_t dim, float eps) override;
  void add(float* y, const float* x, int64_t n) override;
  void add_rms_norm(float* y, const float* x, const float* w, float* out, int64_t n_rows, int64_t dim,
                    float eps) override;
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
  void norm_rope_kv_write(uint32_t layer, float* q, int64_t n_q_heads, float* k, const float* v, int64_t n_kv_heads,
                          int64_t n_tokens, int64_t head_dim, const float* q_norm, const float* k_norm, float eps,
                          const backend::RopeParams& p, const QRows& q_from) override;
  void attention(uint32_t layer, const float* q, float* out, uint32_t n_head, float scale) override;
  void conv1d_silu(const float* x, int64_t channels, const float* w, int kernel, float* state, float* out) override;
  void l2_norm_heads(float* x, int64_t n_rows, int64_t row_stride, int64_t n_heads, int64_t dim, float eps,
                     float scale) override;
  void gdn_gates(float* beta, float* alpha, const float* ssm_a, const float* dt_bias, int64_t n_heads) override;
  void gated_delta(const backend::GatedDeltaArgs& args) override;
  void gated_delta_norm(const backend::GatedDeltaArgs& args, int64_t n_tokens, const float* z, const float* w,
                        float eps) override;
  void gdn_inputs(const GdnInputArgs& a) override;
  void logits(const float* hidden, const float* norm_w, float eps, const backend::WeightView& w_out, float* rows,
              float* logits) override;

  cudaStream_t stream() const { return stream_.get(); }
  uint64_t uploaded_bytes() const { return uploaded_; }
  const StepGraphs& graphs() const { return graphs_; }

 private:
  void* device_alloc(std::string_view name, size_t bytes);  // raw, owned by owned_
  void multiply(const DeviceWeight& w, const float* x, int64_t n_tokens, float* y);
  void quantize_once(const float* x, int64_t n_tokens, int64_t n_in);
  void* gemm_input_f16(int64_t rows, int64_t width) const;
  bool takes_gemv_q8(const DeviceWeight& w, int64_t n_tokens) const;
  bool writes_act_q8(int64_t rows, int64_t width) const;
  // Every operation that may write device memory starts here: it counts (the 8-bit activation
  // cache's validity), is timed under KEEL_PROFILE, and tells the step graphs its arguments;
  // skip: a graph replays this step, so the operation launches nothing.
  struct OpScope {
    OpProfile::Scope timed;
    bool skip;
  };
  template <class... A>
  OpScope op(const char* name, const A&... args) {
    ++op_serial_;
    const bool skip = graphs_.skip(hash_args(name, args...));
    return OpScope{profile_.time(name), skip};
  }
  void upload_weight(void* dst, const void* src, size_t bytes);

  int ordinal_;
  Stream stream_;
  OpProfile profile_{stream_.get()};  // KEEL_PROFILE=1: device time per op
  StepGraphs graphs_;                 // decode steps replayed as CUDA graphs
  PinnedBuffer staging_;
  bool frozen_ = false;
  std::vector<backend::Memory> owned_;  // weights, KV pools, workspaces
  std::map<std::string, backend::WeightView, std::less<>> weights_;
  std::map<std::string, const float*, std::less<>> vectors_;
  std::unique_ptr<Blas> blas_;
  void* matmul_ws_ = nullptr;
  size_t matmul_ws_bytes_ = 0;
  float* attention_ws_ = nullptr;
  int64_t max_tokens_ = 0;
  bool exact_ = false;        // f32 activations in every matmul (--exact)
  void* act_q8_ = nullptr;    // planned: the 8-bit GEMV's quantized activations ...
  int64_t act_q8_in_ = 0;     // ... for up to kGemvMaxTokens rows of this many inputs
  struct ActCache {           // what act_q8_ holds: x's quantization, made by op number `serial`
    const float* x = nullptr;
    int64_t n_tokens = 0, n_in = 0;
    uint64_t serial = 0;
    // Whether it holds this x, made by the op just before op number `now`.
    bool holds(const float* x_now, int64_t tokens, int64_t in, uint64_t now) const {
      return x == x_now && n_tokens == tokens && n_in == in && serial + 1 == now;
    }
  };
  ActCache act_cached_;
  ActCache f16_cached_;       // what the matmul scratch holds: x's f16 copy (the GEMM path)
  int64_t gemm_in_ = 0;       // the widest matrix input the matmul scratch was planned for
  uint64_t op_serial_ = 0;
  int64_t max_seqs_ = 0;

  // KV: one pool per attention layer.
  KvLayout kv_layout_;
  backend::KvGeometry kv_;
  std::vector<void*> kv_pools_;

  // Per-call metadata: host staging (pinned) and its device copy, both planned.
  struct MetaOffsets {
    size_t tokens, pos, seq, q_start, slot, seq_chunk, chunk_first, chunk_len, pages, logit_rows, total;
  };
  MetaOffsets meta_{};
  PinnedBuffer meta_host_;
  int32_t* meta_dev_ = nullptr;
  Event meta_copied_;
  bool meta_pending_ = false;
  backend::Batch batch_;
  AttentionBatch attn_batch_;
  SeqBatch seq_batch_;
  std::vector<int32_t> seq_len_;  // host scratch of begin_batch (sized by the first calls)
  void* gdn_ws_ = nullptr;
  const int32_t* d_tokens_ = nullptr;
  const int32_t* d_pos_ = nullptr;
  const int32_t* d_logit_rows_ = nullptr;
  uint64_t uploaded_ = 0;
};

}  // namespace keel::cuda
