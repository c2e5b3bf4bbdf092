// A model family: everything keel knows about one GGUF architecture, in one file per family
// (hparams, expected tensors, the buffers its forward pass needs, the forward pass itself),
// registered by general.architecture. Nothing else in keel switches on the architecture.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "backend/cpu/matmul.h"
#include "model/hparams.h"
#include "runtime/kv_cache.h"

namespace keel::gguf { class File; }
namespace keel::cpu { class ThreadPool; }
namespace keel::runtime { class BufferSet; }

namespace keel::model {

class Model;

// What a tensor is for: decides quantization recipes (synth/quantize) and validation.
enum class TensorRole {
  token_embd, output, norm, bias, rope_freqs,
  attn_q, attn_k, attn_v, attn_qkv, attn_output, attn_gate,
  ffn_gate, ffn_up, ffn_down,
  ssm_matrix,  // ssm_alpha, ssm_beta, ssm_out: quantizable matrices of the GDN layers
  ssm_f32,     // ssm_conv1d, ssm_a, ssm_dt.bias: always F32
};
bool role_is_quantizable(TensorRole role);

struct TensorSpec {
  std::string name;
  std::vector<uint64_t> shape;  // ggml order
  TensorRole role;
  bool optional = false;
};

struct BufferSpec {
  std::string name;
  uint64_t bytes;
};

// The shape of a session, as far as a family's buffers depend on it.
struct SessionShape {
  int64_t chunk = 512;          // tokens per forward call (prefill chunk)
  int64_t max_logit_rows = 1;   // rows of logits one call may return
  int n_threads = 1;
  cpu::MatmulMode matmul_mode = cpu::MatmulMode::fast;  // exact: f32 activations (--exact)
  runtime::KvGeometry kv;       // attention layers' paged cache
};

// One forward call over a chunk of consecutive tokens of the single sequence.
struct ForwardBatch {
  const int32_t* tokens = nullptr;
  int64_t n_tokens = 0;
  int64_t pos0 = 0;                  // position of tokens[0]
  const int64_t* logit_rows = nullptr;  // ascending indices into the chunk whose logits are wanted
  int64_t n_logit_rows = 0;
  float* logits = nullptr;           // [n_logit_rows, n_vocab]
};

// What a session lends the forward pass: everything was allocated from the plan.
struct ForwardResources {
  const runtime::BufferSet* scratch = nullptr;  // the family's scratch_buffers, by name
  const runtime::BufferSet* state = nullptr;    // the family's state_buffers, by name
  runtime::KvCache* kv = nullptr;
  cpu::ThreadPool* pool = nullptr;
  SessionShape shape;
};

class Forward {
 public:
  virtual ~Forward() = default;
  virtual void run(const ForwardBatch& batch) = 0;  // must not allocate
  virtual void reset_state() {}                     // clear recurrent state (new sequence)
};

struct Family {
  std::string_view arch;
  Hparams (*read_hparams)(const gguf::File& file);
  std::vector<TensorSpec> (*tensor_specs)(const Hparams& hp);
  // Activation scratch of one chunk (the matmul kernels' own scratch is planned separately).
  std::vector<BufferSpec> (*scratch_buffers)(const Hparams& hp, const SessionShape& shape);
  std::vector<BufferSpec> (*state_buffers)(const Hparams& hp);  // recurrent state; may be empty
  std::unique_ptr<Forward> (*make_forward)(const Model& model, const ForwardResources& res);
};

// The family of `arch`; throws keel::Error listing the supported architectures.
const Family& family_for(std::string_view arch);
std::vector<std::string_view> supported_architectures();

}  // namespace keel::model
