#include "model/hparams.h"

#include <cmath>

#include "gguf/gguf.h"
#include "keel/error.h"

namespace keel::model {

uint32_t Hparams::n_attention_layers() const {
  uint32_t n = 0;
  for (uint32_t il = 0; il < n_layer; ++il) n += is_recurrent(il) ? 0 : 1;
  return n;
}

float Hparams::attention_scale() const {
  return attn_scale != 0.0f ? attn_scale : 1.0f / std::sqrt(static_cast<float>(head_dim));
}

Hparams read_common_hparams(const gguf::File& file, const std::string& arch) {
  Hparams hp;
  hp.arch = arch;
  auto key = [&](const char* k) { return arch + "." + k; };
  hp.n_layer = file.require_u32(key("block_count"));
  // Every layer owns tensors, so a block count beyond the tensor table is corrupt metadata. It
  // is refused here, before it sizes anything (the expected-tensor list, per-layer flags).
  if (hp.n_layer == 0 || hp.n_layer > file.tensors().size())
    throw Error(file.path() + ": " + key("block_count") + " = " + std::to_string(hp.n_layer) +
                ", but the file holds " + std::to_string(file.tensors().size()) +
                " tensors (every layer has some)");
  hp.n_embd = file.require_u32(key("embedding_length"));
  hp.n_ff = file.require_u32(key("feed_forward_length"));
  hp.n_head = file.require_u32(key("attention.head_count"));
  hp.n_head_kv = file.get_u32_or(key("attention.head_count_kv"), hp.n_head);
  hp.n_ctx_train = file.get_u32_or(key("context_length"), 2048);
  if (hp.n_head == 0 || hp.n_head_kv == 0 || hp.n_head % hp.n_head_kv != 0)
    throw Error(file.path() + ": " + key("attention.head_count") + " = " + std::to_string(hp.n_head) +
                " is not a multiple of head_count_kv = " + std::to_string(hp.n_head_kv));
  hp.head_dim = file.get_u32_or(key("attention.key_length"), hp.n_embd / hp.n_head);
  uint32_t value_length = file.get_u32_or(key("attention.value_length"), hp.head_dim);
  if (value_length != hp.head_dim)
    throw Error(file.path() + ": attention value_length " + std::to_string(value_length) +
                " differs from key_length " + std::to_string(hp.head_dim) + " (not supported)");
  hp.n_rot = file.get_u32_or(key("rope.dimension_count"), hp.head_dim);
  if (hp.head_dim == 0 || hp.head_dim % 2 || hp.head_dim > 1024 || hp.n_rot > hp.head_dim || hp.n_rot % 2)
    throw Error(file.path() + ": head size " + std::to_string(hp.head_dim) + " / rotary dims " +
                std::to_string(hp.n_rot) + " are not valid");
  hp.rms_eps = file.get_f32_or(key("attention.layer_norm_rms_epsilon"), 1e-5f);
  hp.rope_base = file.get_f32_or(key("rope.freq_base"), 10000.0f);
  hp.attn_scale = file.get_f32_or(key("attention.scale"), 0.0f);
  if (auto type = file.get_string(key("rope.scaling.type")); type && *type != "none") {
    if (*type != "linear")
      throw Error(file.path() + ": rope scaling '" + *type + "' is not supported yet (linear and none are)");
    float factor = file.get_f32_or(key("rope.scaling.factor"), 1.0f);
    if (factor > 0) hp.rope_freq_scale = 1.0f / factor;
  }
  const gguf::Array* tokens = file.get_array("tokenizer.ggml.tokens");
  hp.n_vocab = file.get_u32_or(key("vocab_size"), tokens ? static_cast<uint32_t>(tokens->items.size()) : 0);
  if (const gguf::TensorInfo* emb = file.find_tensor("token_embd.weight"))
    hp.n_vocab = static_cast<uint32_t>(emb->ne[1]);
  hp.tied_output = file.find_tensor("output.weight") == nullptr;
  hp.has_rope_freqs = file.find_tensor("rope_freqs.weight") != nullptr;
  return hp;
}

}  // namespace keel::model
