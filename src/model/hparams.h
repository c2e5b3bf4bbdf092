// Hyper-parameters of a model, read from GGUF metadata (or a preset), shared by every family.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/types.h"

namespace keel::gguf { class File; }

namespace keel::model {

using backend::RopeType;  // NORM: adjacent pairs (llama); NEOX: half-split pairs

struct Hparams {
  std::string arch;           // general.architecture
  uint32_t n_vocab = 0;
  uint32_t n_ctx_train = 0;
  uint32_t n_embd = 0;
  uint32_t n_layer = 0;
  uint32_t n_head = 0;
  uint32_t n_head_kv = 0;
  uint32_t head_dim = 0;      // attention key/value head size
  uint32_t n_ff = 0;
  uint32_t n_rot = 0;         // rotary dims per head (<= head_dim)
  float rms_eps = 1e-5f;
  float rope_base = 10000.0f;
  float rope_freq_scale = 1.0f;  // linear scaling: theta *= freq_scale
  float attn_scale = 0.0f;       // 0: 1/sqrt(head_dim)
  RopeType rope_type = RopeType::norm;
  bool tied_output = false;      // no output.weight: token_embd is the LM head
  bool has_rope_freqs = false;   // llama3 scaling factors in rope_freqs.weight

  // Family switches (llama / qwen2 / qwen3).
  bool qkv_bias = false;         // qwen2
  bool qk_norm = false;          // qwen3, qwen35

  // qwen35 hybrid: layer il is recurrent (Gated DeltaNet) when recurrent[il].
  std::vector<bool> recurrent;   // empty: every layer is attention
  bool gated_attention = false;  // qwen35: attn_q holds query and a sigmoid gate per head
  uint32_t ssm_conv_kernel = 0;  // K
  uint32_t ssm_state_size = 0;   // d_k (= d_v)
  uint32_t ssm_group_count = 0;  // n_k: key heads
  uint32_t ssm_time_step_rank = 0;  // n_v: value heads
  uint32_t ssm_inner_size = 0;   // n_v * d_v

  bool is_recurrent(uint32_t layer) const { return layer < recurrent.size() && recurrent[layer]; }
  uint32_t n_attention_layers() const;
  uint32_t n_recurrent_layers() const { return n_layer - n_attention_layers(); }
  float attention_scale() const;
};

// Reads the keys every family shares: {arch}.block_count, embedding_length, ... with the
// defaults of docs/specs/gguf_arch.md. Missing required keys are errors naming the key.
Hparams read_common_hparams(const gguf::File& file, const std::string& arch);

}  // namespace keel::model
