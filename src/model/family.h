// A model family: everything keel knows about one GGUF architecture, in one file per family
// (hparams, expected tensors, the buffers its forward pass needs, the forward pass itself),
// registered by general.architecture. Nothing else in keel switches on the architecture.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "backend/backend.h"
#include "backend/buffer_set.h"
#include "model/hparams.h"

namespace keel::gguf { class File; }

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

using backend::BufferSpec;

// The shape of a session, as far as a family's buffers depend on it.
struct SessionShape {
  int64_t chunk = 512;          // prefill chunk: tokens of one sequence per forward call
  int64_t max_tokens = 512;     // tokens per forward call: a chunk plus one decode of each other sequence
  int64_t max_logit_rows = 1;   // rows of logits one call may return
  int n_seqs = 1;               // sequence slots (--parallel)
  int n_threads = 1;
  backend::KvGeometry kv;       // attention layers' paged pool, shared by the sequences
};

// What a session lends the forward pass: everything was allocated from the plan.
struct ForwardResources {
  backend::Backend* backend = nullptr;
  const backend::BufferSet* scratch = nullptr;  // the family's scratch_buffers, by name
  const backend::BufferSet* state = nullptr;    // the family's state_buffers, by name: n_seqs slots each
  SessionShape shape;
};

// Throws keel::Error (internal) when `batch` is larger than the session was planned for.
void check_batch_fits(const backend::Batch& batch, const SessionShape& shape);

class Forward {
 public:
  virtual ~Forward() = default;
  // One forward call over `batch` (tokens of one or more sequences); writes the logits of
  // batch.logit_rows to `logits` [n_logit_rows, n_vocab] (backend memory). Must not allocate.
  virtual void run(const backend::Batch& batch, float* logits) = 0;
  // Clears the recurrent state of sequence slot `slot` (a new sequence).
  virtual void reset_state(int32_t slot) {}
};

struct Family {
  std::string_view arch;
  Hparams (*read_hparams)(const gguf::File& file);
  std::vector<TensorSpec> (*tensor_specs)(const Hparams& hp);
  // Activation buffers of one forward call of shape.max_tokens tokens (the backend's own
  // workspaces are planned separately: backend::workspace_buffers).
  std::vector<BufferSpec> (*scratch_buffers)(const Hparams& hp, const SessionShape& shape);
  std::vector<BufferSpec> (*state_buffers)(const Hparams& hp);  // one sequence's recurrent state; may be empty
  std::unique_ptr<Forward> (*make_forward)(const Model& model, const ForwardResources& res);
};

// The family of `arch`; throws keel::Error listing the supported architectures.
const Family& family_for(std::string_view arch);
std::vector<std::string_view> supported_architectures();

}  // namespace keel::model
