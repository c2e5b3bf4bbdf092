// The llama family: llama, qwen2 (q/k/v biases) and qwen3 (per-head q/k RMSNorm) as flags of one
// pre-norm decoder with SwiGLU FFN, GQA and RoPE (NORM pairing for llama, NEOX for the Qwens).
#include <cmath>

#include "backend/cpu/attention.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/ops.h"
#include "gguf/gguf.h"
#include "keel/error.h"
#include "quant/dequant.h"
#include "model/blocks.h"
#include "model/family.h"
#include "model/model.h"
#include "runtime/buffer_set.h"

namespace keel::model {
namespace {

std::string blk(uint32_t il, const char* name) { return "blk." + std::to_string(il) + "." + name; }

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

// Activation buffers alive during one chunk (names are the contract with LlamaForward).
std::vector<BufferSpec> llama_scratch(const Hparams& hp, const SessionShape& s) {
  const uint64_t c = static_cast<uint64_t>(s.chunk), f = sizeof(float);
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
      {"attention", cpu::attention_workspace_bytes(s.kv, hp.n_head, s.n_threads)},
  };
}

class LlamaForward final : public Forward {
 public:
  LlamaForward(const Model& model, const ForwardResources& res) : model_(model), hp_(model.hparams()), res_(res) {
    const runtime::BufferSet& b = *res.scratch;
    const uint64_t c = static_cast<uint64_t>(res.shape.chunk);
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
    attention_ws_ = b.get_as<float>("attention");
    matmul_scratch_ = b.get("matmul");

    embd_ = model.file().require_tensor("token_embd.weight");
    output_ = model.matrix(hp_.tied_output ? "token_embd.weight" : "output.weight");
    output_norm_ = model.vector_f32("output_norm.weight");
    rope_freqs_ = model.vector_f32("rope_freqs.weight");
    layers_.resize(hp_.n_layer);
    for (uint32_t il = 0; il < hp_.n_layer; ++il) {
      Layer& L = layers_[il];
      L.attn_norm = model.vector_f32(blk(il, "attn_norm.weight"));
      L.wq = model.matrix(blk(il, "attn_q.weight"));
      L.wk = model.matrix(blk(il, "attn_k.weight"));
      L.wv = model.matrix(blk(il, "attn_v.weight"));
      L.bq = model.vector_f32(blk(il, "attn_q.bias"));
      L.bk = model.vector_f32(blk(il, "attn_k.bias"));
      L.bv = model.vector_f32(blk(il, "attn_v.bias"));
      L.q_norm = model.vector_f32(blk(il, "attn_q_norm.weight"));
      L.k_norm = model.vector_f32(blk(il, "attn_k_norm.weight"));
      L.wo = model.matrix(blk(il, "attn_output.weight"));
      L.ffn_norm = model.vector_f32(blk(il, "ffn_norm.weight"));
      L.w_gate = model.matrix(blk(il, "ffn_gate.weight"));
      L.w_up = model.matrix(blk(il, "ffn_up.weight"));
      L.w_down = model.matrix(blk(il, "ffn_down.weight"));
    }
  }

  void run(const ForwardBatch& batch) override {
    const int64_t n = batch.n_tokens;
    if (n <= 0 || n > res_.shape.chunk) throw Error("internal: batch of " + std::to_string(n) + " tokens exceeds the planned chunk");
    if (batch.n_logit_rows > res_.shape.max_logit_rows) throw Error("internal: more logit rows than planned");
    const int64_t d = hp_.n_embd, hd = hp_.head_dim;
    const int64_t q_width = int64_t{hp_.n_head} * hd, kv_width = int64_t{hp_.n_head_kv} * hd;
    cpu::ThreadPool& pool = *res_.pool;

    embed(batch.tokens, n);
    const cpu::RopeParams rope{hp_.rope_type, static_cast<int>(hp_.n_rot), hp_.rope_base, hp_.rope_freq_scale, rope_freqs_};
    for (uint32_t il = 0; il < hp_.n_layer; ++il) {
      const Layer& L = layers_[il];
      cpu::rms_norm(hidden_, L.attn_norm, normed_, n, d, hp_.rms_eps);
      cpu::matmul(L.wq, normed_, n, q_, matmul_scratch_, pool, res_.shape.matmul_mode);
      cpu::matmul(L.wk, normed_, n, k_, matmul_scratch_, pool, res_.shape.matmul_mode);
      cpu::matmul(L.wv, normed_, n, v_, matmul_scratch_, pool, res_.shape.matmul_mode);
      if (L.bq) {
        cpu::add_bias(q_, L.bq, n, q_width);
        cpu::add_bias(k_, L.bk, n, kv_width);
        cpu::add_bias(v_, L.bv, n, kv_width);
      }
      if (L.q_norm) {
        cpu::rms_norm(q_, L.q_norm, q_, n * hp_.n_head, hd, hp_.rms_eps);
        cpu::rms_norm(k_, L.k_norm, k_, n * hp_.n_head_kv, hd, hp_.rms_eps);
      }
      cpu::rope(q_, n, hp_.n_head, hd, batch.pos0, rope);
      cpu::rope(k_, n, hp_.n_head_kv, hd, batch.pos0, rope);
      res_.kv->write(il, batch.pos0, n, k_, v_);
      cpu::AttentionArgs args;
      args.q = q_;
      args.out = attn_out_;
      args.n_tokens = n;
      args.pos0 = batch.pos0;
      args.n_head = hp_.n_head;
      args.scale = hp_.attention_scale();
      args.kv = res_.kv;
      args.layer = il;
      cpu::flash_attention(args, attention_ws_, pool);
      cpu::matmul(L.wo, attn_out_, n, proj_out_, matmul_scratch_, pool, res_.shape.matmul_mode);
      cpu::add_inplace(hidden_, proj_out_, n * d);

      cpu::rms_norm(hidden_, L.ffn_norm, normed_, n, d, hp_.rms_eps);
      cpu::matmul(L.w_gate, normed_, n, gate_, matmul_scratch_, pool, res_.shape.matmul_mode);
      cpu::matmul(L.w_up, normed_, n, up_, matmul_scratch_, pool, res_.shape.matmul_mode);
      cpu::silu_mul(gate_, up_, n * hp_.n_ff);
      cpu::matmul(L.w_down, gate_, n, proj_out_, matmul_scratch_, pool, res_.shape.matmul_mode);
      cpu::add_inplace(hidden_, proj_out_, n * d);
    }
    if (batch.n_logit_rows == 0) return;
    for (int64_t r = 0; r < batch.n_logit_rows; ++r)
      cpu::rms_norm(hidden_ + batch.logit_rows[r] * d, output_norm_, logit_rows_ + r * d, 1, d, hp_.rms_eps);
    cpu::matmul(output_, logit_rows_, batch.n_logit_rows, batch.logits, matmul_scratch_, pool, res_.shape.matmul_mode);
  }

 private:
  struct Layer {
    const float *attn_norm, *bq, *bk, *bv, *q_norm, *k_norm, *ffn_norm;
    cpu::WeightView wq, wk, wv, wo, w_gate, w_up, w_down;
  };

  void embed(const int32_t* tokens, int64_t n) { embed_tokens(embd_, tokens, n, hidden_); }

  const Model& model_;
  const Hparams& hp_;
  ForwardResources res_;
  float *hidden_, *normed_, *q_, *k_, *v_, *attn_out_, *proj_out_, *gate_, *up_, *logit_rows_, *attention_ws_;
  void* matmul_scratch_;
  gguf::TensorInfo embd_;
  cpu::WeightView output_;
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
