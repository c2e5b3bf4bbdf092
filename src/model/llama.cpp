// The llama family: llama, qwen2 (q/k/v biases) and qwen3 (per-head q/k RMSNorm) as flags of one
// pre-norm decoder with SwiGLU FFN, GQA and RoPE (NORM pairing for llama, NEOX for the Qwens).
#include <cmath>

#include "gguf/gguf.h"
#include "keel/error.h"
#include "model/blocks.h"
#include "model/family.h"
#include "model/model.h"

namespace keel::model {
namespace {

Hparams read_llama_like(const gguf::File& file, const std::string& arch) {
  Hparams hp = read_common_hparams(file, arch);
  hp.rope_type = arch == "llama" ? RopeType::norm : RopeType::neox;
  hp.qkv_bias = arch == "qwen2";
  hp.qk_norm = arch == "qwen3";
  if (arch != "llama") hp.rms_eps = file.get_f32_or(arch + ".attention.layer_norm_rms_epsilon", 1e-6f);
  return hp;
}

std::vector<TensorSpec> llama_tensors(const Hparams& hp) {
  const uint64_t d = hp.n_embd, q_width = uint64_t{hp.n_head} * hp.head_dim,
                 kv_width = uint64_t{hp.n_head_kv} * hp.head_dim, ff = hp.n_ff, v = hp.n_vocab;
  std::vector<TensorSpec> specs = {
      {"token_embd.weight", {d, v}, TensorRole::token_embd},
      {"output_norm.weight", {d}, TensorRole::norm},
      {"output.weight", {d, v}, TensorRole::output, /*optional=*/true},
  };
  if (hp.has_rope_freqs) specs.push_back({"rope_freqs.weight", {hp.n_rot / 2u}, TensorRole::rope_freqs});
  for (uint32_t il = 0; il < hp.n_layer; ++il) {
    specs.push_back({blk(il, "attn_norm.weight"), {d}, TensorRole::norm});
    specs.push_back({blk(il, "attn_q.weight"), {d, q_width}, TensorRole::attn_q});
    specs.push_back({blk(il, "attn_k.weight"), {d, kv_width}, TensorRole::attn_k});
    specs.push_back({blk(il, "attn_v.weight"), {d, kv_width}, TensorRole::attn_v});
    if (hp.qkv_bias) {
      specs.push_back({blk(il, "attn_q.bias"), {q_width}, TensorRole::bias});
      specs.push_back({blk(il, "attn_k.bias"), {kv_width}, TensorRole::bias});
      specs.push_back({blk(il, "attn_v.bias"), {kv_width}, TensorRole::bias});
    }
    if (hp.qk_norm) {
      specs.push_back({blk(il, "attn_q_norm.weight"), {hp.head_dim}, TensorRole::norm});
      specs.push_back({blk(il, "attn_k_norm.weight"), {hp.head_dim}, TensorRole::norm});
    }
    specs.push_back({blk(il, "attn_output.weight"), {q_width, d}, TensorRole::attn_output});
    specs.push_back({blk(il, "ffn_norm.weight"), {d}, TensorRole::norm});
    specs.push_back({blk(il, "ffn_gate.weight"), {d, ff}, TensorRole::ffn_gate});
    specs.push_back({blk(il, "ffn_up.weight"), {d, ff}, TensorRole::ffn_up});
    specs.push_back({blk(il, "ffn_down.weight"), {ff, d}, TensorRole::ffn_down});
  }
  return specs;
}

// Activation buffers alive during one forward call (names are the contract with LlamaForward).
std::vector<BufferSpec> llama_scratch(const Hparams& hp, const SessionShape& s) {
  const uint64_t c = static_cast<uint64_t>(s.max_tokens), f = sizeof(float);
  const uint64_t q_width = uint64_t{hp.n_head} * hp.head_dim, kv_width = uint64_t{hp.n_head_kv} * hp.head_dim;
  return {
      {"hidden", c * hp.n_embd * f},          // [chunk, n_embd] residual stream
      {"normed", c * hp.n_embd * f},          // [chunk, n_embd]
      {"q", c * q_width * f},                 // [chunk, n_head * head_dim]
      {"k", c * kv_width * f},                // [chunk, n_kv * head_dim]
      {"v", c * kv_width * f},
      {"attn_out", c * q_width * f},          // [chunk, n_head * head_dim]
      {"proj_out", c * hp.n_embd * f},        // [chunk, n_embd] output of attn_output / ffn_down
      {"ffn_gate", c * hp.n_ff * f},          // [chunk, n_ff]
      {"ffn_up", c * hp.n_ff * f},
      {"logit_rows", static_cast<uint64_t>(s.max_logit_rows) * hp.n_embd * f},  // [rows, n_embd]
  };
}

class LlamaForward final : public Forward {
 public:
  LlamaForward(const Model& model, const ForwardResources& res)
      : hp_(model.hparams()), res_(res), be_(*res.backend) {
    const backend::BufferSet& b = *res.scratch;
    const uint64_t c = static_cast<uint64_t>(res.shape.max_tokens);
    const uint64_t q_width = uint64_t{hp_.n_head} * hp_.head_dim, kv_width = uint64_t{hp_.n_head_kv} * hp_.head_dim;
    hidden_ = b.get_as<float>("hidden", c * hp_.n_embd);
    normed_ = b.get_as<float>("normed", c * hp_.n_embd);
    q_ = b.get_as<float>("q", c * q_width);
    k_ = b.get_as<float>("k", c * kv_width);
    v_ = b.get_as<float>("v", c * kv_width);
    attn_out_ = b.get_as<float>("attn_out", c * q_width);
    proj_out_ = b.get_as<float>("proj_out", c * hp_.n_embd);
    gate_ = b.get_as<float>("ffn_gate", c * hp_.n_ff);
    up_ = b.get_as<float>("ffn_up", c * hp_.n_ff);
    logit_rows_ = b.get_as<float>("logit_rows", static_cast<uint64_t>(res.shape.max_logit_rows) * hp_.n_embd);

    const PlacedWeights w(model, be_);
    embd_ = w.matrix("token_embd.weight");
    output_ = hp_.tied_output ? embd_ : w.matrix("output.weight");
    output_norm_ = w.vector("output_norm.weight");
    rope_freqs_ = w.vector("rope_freqs.weight");
    layers_.resize(hp_.n_layer);
    for (uint32_t il = 0; il < hp_.n_layer; ++il) {
      Layer& L = layers_[il];
      L.attn_norm = w.vector(blk(il, "attn_norm.weight"));
      L.wq = w.matrix(blk(il, "attn_q.weight"));
      L.wk = w.matrix(blk(il, "attn_k.weight"));
      L.wv = w.matrix(blk(il, "attn_v.weight"));
      L.bq = w.vector(blk(il, "attn_q.bias"));
      L.bk = w.vector(blk(il, "attn_k.bias"));
      L.bv = w.vector(blk(il, "attn_v.bias"));
      L.q_norm = w.vector(blk(il, "attn_q_norm.weight"));
      L.k_norm = w.vector(blk(il, "attn_k_norm.weight"));
      L.wo = w.matrix(blk(il, "attn_output.weight"));
      L.ffn_norm = w.vector(blk(il, "ffn_norm.weight"));
      L.w_gate = w.matrix(blk(il, "ffn_gate.weight"));
      L.w_up = w.matrix(blk(il, "ffn_up.weight"));
      L.w_down = w.matrix(blk(il, "ffn_down.weight"));
    }
  }

  void run(const backend::Batch& batch, float* logits) override {
    const int64_t n = batch.n_tokens;
    check_batch_fits(batch, res_.shape);
    const int64_t d = hp_.n_embd, hd = hp_.head_dim;
    const int64_t q_width = int64_t{hp_.n_head} * hd, kv_width = int64_t{hp_.n_head_kv} * hd;
    backend::Backend& be = be_;

    be.begin_batch(batch);
    be.embed(embd_, hidden_);
    const backend::RopeParams rope{hp_.rope_type, static_cast<int>(hp_.n_rot), hp_.rope_base, hp_.rope_freq_scale,
                                   rope_freqs_};
    // Each residual add goes with the norm after it (the next layer's, for the FFN's).
    if (hp_.n_layer > 0) be.rms_norm(hidden_, layers_[0].attn_norm, normed_, n, d, hp_.rms_eps);
    for (uint32_t il = 0; il < hp_.n_layer; ++il) {
      const Layer& L = layers_[il];
      be.matmuls(normed_, n, {{L.wq, q_}, {L.wk, k_}, {L.wv, v_}});
      if (L.bq) {
        be.add_bias(q_, L.bq, n, q_width);
        be.add_bias(k_, L.bk, n, kv_width);
        be.add_bias(v_, L.bv, n, kv_width);
      }
      be.norm_rope_kv_write(il, q_, hp_.n_head, k_, v_, hp_.n_head_kv, n, hd, L.q_norm, L.k_norm, hp_.rms_eps, rope, {});
      be.attention(il, q_, attn_out_, hp_.n_head, hp_.attention_scale());
      be.matmul(L.wo, attn_out_, n, proj_out_);
      be.add_rms_norm(hidden_, proj_out_, L.ffn_norm, normed_, n, d, hp_.rms_eps);

      be.matmuls(normed_, n, {{L.w_gate, gate_}, {L.w_up, up_}});
      be.silu_mul(gate_, up_, n * hp_.n_ff);
      be.matmul(L.w_down, gate_, n, proj_out_);
      if (il + 1 < hp_.n_layer) be.add_rms_norm(hidden_, proj_out_, layers_[il + 1].attn_norm, normed_, n, d, hp_.rms_eps);
      else be.add(hidden_, proj_out_, n * d);
    }
    be.logits(hidden_, output_norm_, hp_.rms_eps, output_, logit_rows_, logits);
    be.end_batch();
  }

 private:
  struct Layer {
    const float *attn_norm, *bq, *bk, *bv, *q_norm, *k_norm, *ffn_norm;
    backend::WeightView wq, wk, wv, wo, w_gate, w_up, w_down;
  };

  const Hparams& hp_;
  ForwardResources res_;
  backend::Backend& be_;
  float *hidden_, *normed_, *q_, *k_, *v_, *attn_out_, *proj_out_, *gate_, *up_, *logit_rows_;
  backend::WeightView embd_, output_;
  const float* output_norm_;
  const float* rope_freqs_;
  std::vector<Layer> layers_;
};

std::unique_ptr<Forward> make_llama_forward(const Model& model, const ForwardResources& res) {
  return std::make_unique<LlamaForward>(model, res);
}

std::vector<BufferSpec> no_state(const Hparams&) { return {}; }

}  // namespace

const Family& llama_family() {
  static const Family family{"llama", [](const gguf::File& f) { return read_llama_like(f, "llama"); },
                             llama_tensors, llama_scratch, no_state, make_llama_forward};
  return family;
}

const Family& qwen2_family() {
  static const Family family{"qwen2", [](const gguf::File& f) { return read_llama_like(f, "qwen2"); },
                             llama_tensors, llama_scratch, no_state, make_llama_forward};
  return family;
}

const Family& qwen3_family() {
  static const Family family{"qwen3", [](const gguf::File& f) { return read_llama_like(f, "qwen3"); },
                             llama_tensors, llama_scratch, no_state, make_llama_forward};
  return family;
}

}  // namespace keel::model
