// The qwen35 family (Qwen3.5 dense): a hybrid of Gated DeltaNet layers (linear attention with an
// O(1) recurrent state) and gated full-attention layers (every full_attention_interval-th layer),
// each followed by a SwiGLU MLP. docs/specs/qwen35.md is the reference for every formula here.
#include <algorithm>
#include <cmath>

#include "gguf/gguf.h"
#include "keel/error.h"
#include "model/blocks.h"
#include "model/family.h"
#include "model/model.h"

namespace keel::model {
namespace {

// Derived GDN sizes (§1.1): q and k have n_k heads of d_k, v and z have n_v heads of d_v.
struct GdnDims {
  uint64_t n_k, n_v, d_k, d_v, kernel;
  uint64_t key_dim() const { return n_k * d_k; }
  uint64_t value_dim() const { return n_v * d_v; }
  uint64_t conv_dim() const { return 2 * key_dim() + value_dim(); }
};

GdnDims gdn_dims(const Hparams& hp) {
  const uint64_t n_v = hp.ssm_time_step_rank;
  return {hp.ssm_group_count, n_v, hp.ssm_state_size, n_v ? hp.ssm_inner_size / n_v : 0, hp.ssm_conv_kernel};
}

Hparams read_qwen35(const gguf::File& file) {
  const std::string arch = "qwen35";
  Hparams hp = read_common_hparams(file, arch);
  auto key = [&](const char* k) { return arch + "." + k; };
  hp.rope_type = RopeType::neox;  // IMROPE with t = h = w reduces to NEOX for text (§2.2)
  hp.qk_norm = true;
  hp.gated_attention = true;
  hp.rms_eps = file.get_f32_or(key("attention.layer_norm_rms_epsilon"), 1e-6f);
  // The optional MTP block is stored as extra trailing blocks; plain decoding ignores it.
  const uint32_t n_nextn = file.get_u32_or(key("nextn_predict_layers"), 0);
  if (n_nextn >= hp.n_layer)
    throw Error(file.path() + ": " + key("nextn_predict_layers") + " = " + std::to_string(n_nextn) +
                " leaves no decoder layers out of " + std::to_string(hp.n_layer));
  hp.n_layer -= n_nextn;

  hp.ssm_conv_kernel = file.require_u32(key("ssm.conv_kernel"));
  hp.ssm_state_size = file.require_u32(key("ssm.state_size"));
  hp.ssm_group_count = file.require_u32(key("ssm.group_count"));
  hp.ssm_time_step_rank = file.require_u32(key("ssm.time_step_rank"));
  hp.ssm_inner_size = file.require_u32(key("ssm.inner_size"));
  const uint32_t n_k = hp.ssm_group_count, n_v = hp.ssm_time_step_rank;
  if (hp.ssm_conv_kernel < 1 || hp.ssm_conv_kernel > static_cast<uint32_t>(backend::kMaxConvKernel))
    throw Error(file.path() + ": " + key("ssm.conv_kernel") + " = " + std::to_string(hp.ssm_conv_kernel) +
                " is outside 1.." + std::to_string(backend::kMaxConvKernel));
  if (hp.ssm_state_size == 0 || n_k == 0 || n_v == 0 || n_v % n_k != 0 || hp.ssm_inner_size % n_v != 0)
    throw Error(file.path() + ": Gated DeltaNet sizes are inconsistent: " + key("ssm.group_count") + " = " +
                std::to_string(n_k) + ", " + key("ssm.time_step_rank") + " = " + std::to_string(n_v) + ", " +
                key("ssm.inner_size") + " = " + std::to_string(hp.ssm_inner_size) + ", " + key("ssm.state_size") +
                " = " + std::to_string(hp.ssm_state_size) +
                " (need value heads a multiple of key heads and inner_size a multiple of value heads)");

  hp.recurrent.assign(hp.n_layer, false);
  if (const gguf::Array* layers = file.get_array(key("attention.recurrent_layers"))) {
    if (layers->items.size() < hp.n_layer)
      throw Error(file.path() + ": " + key("attention.recurrent_layers") + " has " +
                  std::to_string(layers->items.size()) + " entries for " + std::to_string(hp.n_layer) + " layers");
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
      const gguf::Value& v = layers->items[il];
      if (const bool* b = std::get_if<bool>(&v.data)) hp.recurrent[il] = *b;
      else if (auto i = v.as_int()) hp.recurrent[il] = *i != 0;
      else throw Error(file.path() + ": " + key("attention.recurrent_layers") + " must hold booleans");
    }
  } else {
    const uint32_t interval = file.get_u32_or(key("full_attention_interval"), 4);
    if (interval == 0) throw Error(file.path() + ": " + key("full_attention_interval") + " must be positive");
    for (uint32_t il = 0; il < hp.n_layer; ++il) hp.recurrent[il] = (il + 1) % interval != 0;
  }
  return hp;
}

std::vector<TensorSpec> qwen35_tensors(const Hparams& hp) {
  const uint64_t d = hp.n_embd, ff = hp.n_ff, v = hp.n_vocab, hd = hp.head_dim;
  const uint64_t q_width = uint64_t{hp.n_head} * hd, kv_width = uint64_t{hp.n_head_kv} * hd;
  const GdnDims g = gdn_dims(hp);
  std::vector<TensorSpec> specs = {
      {"token_embd.weight", {d, v}, TensorRole::token_embd},
      {"output_norm.weight", {d}, TensorRole::norm},
      {"output.weight", {d, v}, TensorRole::output, /*optional=*/true},
  };
  for (uint32_t il = 0; il < hp.n_layer; ++il) {
    specs.push_back({blk(il, "attn_norm.weight"), {d}, TensorRole::norm});
    if (hp.is_recurrent(il)) {
      specs.push_back({blk(il, "attn_qkv.weight"), {d, g.conv_dim()}, TensorRole::attn_qkv});
      specs.push_back({blk(il, "attn_gate.weight"), {d, g.value_dim()}, TensorRole::attn_gate});
      specs.push_back({blk(il, "ssm_beta.weight"), {d, g.n_v}, TensorRole::ssm_matrix});
      specs.push_back({blk(il, "ssm_alpha.weight"), {d, g.n_v}, TensorRole::ssm_matrix});
      specs.push_back({blk(il, "ssm_conv1d.weight"), {g.kernel, g.conv_dim()}, TensorRole::ssm_f32});
      specs.push_back({blk(il, "ssm_dt.bias"), {g.n_v}, TensorRole::ssm_f32});
      specs.push_back({blk(il, "ssm_a"), {g.n_v}, TensorRole::ssm_f32});
      specs.push_back({blk(il, "ssm_norm.weight"), {g.d_v}, TensorRole::norm});
      specs.push_back({blk(il, "ssm_out.weight"), {g.value_dim(), d}, TensorRole::ssm_matrix});
    } else {
      specs.push_back({blk(il, "attn_q.weight"), {d, 2 * q_width}, TensorRole::attn_q});  // query | gate per head
      specs.push_back({blk(il, "attn_k.weight"), {d, kv_width}, TensorRole::attn_k});
      specs.push_back({blk(il, "attn_v.weight"), {d, kv_width}, TensorRole::attn_v});
      specs.push_back({blk(il, "attn_q_norm.weight"), {hd}, TensorRole::norm});
      specs.push_back({blk(il, "attn_k_norm.weight"), {hd}, TensorRole::norm});
      specs.push_back({blk(il, "attn_output.weight"), {q_width, d}, TensorRole::attn_output});
    }
    specs.push_back({blk(il, "post_attention_norm.weight"), {d}, TensorRole::norm});
    specs.push_back({blk(il, "ffn_gate.weight"), {d, ff}, TensorRole::ffn_gate});
    specs.push_back({blk(il, "ffn_up.weight"), {d, ff}, TensorRole::ffn_up});
    specs.push_back({blk(il, "ffn_down.weight"), {ff, d}, TensorRole::ffn_down});
  }
  return specs;
}

// Floats per token of the buffers attention and GDN layers share (they never run at once):
// wide = attention q|gate or GDN mix, mixed = attention q or GDN conv output, heads_out =
// attention output or GDN output.
struct SharedWidths {
  uint64_t wide, mixed, heads_out;
};

SharedWidths shared_widths(const Hparams& hp) {
  const uint64_t q_width = uint64_t{hp.n_head} * hp.head_dim;
  const GdnDims g = gdn_dims(hp);
  const bool any_gdn = hp.n_recurrent_layers() > 0, any_attn = hp.n_attention_layers() > 0;
  return {std::max(any_attn ? 2 * q_width : 0, any_gdn ? g.conv_dim() : 0),
          std::max(any_attn ? q_width : 0, any_gdn ? g.conv_dim() : 0),
          std::max(any_attn ? q_width : 0, any_gdn ? g.value_dim() : 0)};
}

// Activation buffers of one forward call (names are the contract with Qwen35Forward).
std::vector<BufferSpec> qwen35_scratch(const Hparams& hp, const SessionShape& s) {
  const uint64_t c = static_cast<uint64_t>(s.max_tokens), f = sizeof(float);
  const uint64_t kv_width = uint64_t{hp.n_head_kv} * hp.head_dim;
  const GdnDims g = gdn_dims(hp);
  const SharedWidths w = shared_widths(hp);
  const bool any_gdn = hp.n_recurrent_layers() > 0, any_attn = hp.n_attention_layers() > 0;
  std::vector<BufferSpec> out = {
      {"hidden", c * hp.n_embd * f},      // [chunk, n_embd] residual stream
      {"normed", c * hp.n_embd * f},      // [chunk, n_embd]
      {"proj_out", c * hp.n_embd * f},    // [chunk, n_embd] output of attn_output / ssm_out / ffn_down
      {"wide", c * w.wide * f},           // [chunk, 2 * n_head * head_dim] attn q|gate; [chunk, conv_dim] GDN mix
      {"mixed", c * w.mixed * f},         // [chunk, n_head * head_dim] attn q; [chunk, conv_dim] GDN conv out
      {"heads_out", c * w.heads_out * f}, // [chunk, n_head * head_dim] attention out; [chunk, n_v * d_v] GDN out
      {"ffn_gate", c * hp.n_ff * f},      // [chunk, n_ff]
      {"ffn_up", c * hp.n_ff * f},
      {"logit_rows", static_cast<uint64_t>(s.max_logit_rows) * hp.n_embd * f},  // [rows, n_embd]
  };
  if (any_attn) {
    out.push_back({"k", c * kv_width * f});  // [chunk, n_kv * head_dim]
    out.push_back({"v", c * kv_width * f});
  }
  if (any_gdn) {
    out.push_back({"gdn_z", c * g.value_dim() * f});  // [chunk, n_v * d_v] output gate
    out.push_back({"gdn_beta", c * g.n_v * f});       // [chunk, n_v]
    out.push_back({"gdn_g", c * g.n_v * f});          // [chunk, n_v] log-decay
  }
  return out;
}

std::string conv_state_name(uint32_t il) { return "gdn_conv." + std::to_string(il); }
std::string ssm_state_name(uint32_t il) { return "gdn_state." + std::to_string(il); }

// Per GDN layer and sequence, fp32 (§3): the last K-1 raw conv inputs and the n_v matrices S [d_k, d_v].
std::vector<BufferSpec> qwen35_state(const Hparams& hp) {
  const GdnDims g = gdn_dims(hp);
  std::vector<BufferSpec> out;
  for (uint32_t il = 0; il < hp.n_layer; ++il) {
    if (!hp.is_recurrent(il)) continue;
    out.push_back({conv_state_name(il), (g.kernel - 1) * g.conv_dim() * sizeof(float)});  // [K-1, conv_dim]
    out.push_back({ssm_state_name(il), g.n_v * g.d_k * g.d_v * sizeof(float)});           // [n_v, d_k, d_v]
  }
  return out;
}

class Qwen35Forward final : public Forward {
 public:
  Qwen35Forward(const Model& model, const ForwardResources& res)
      : hp_(model.hparams()), g_(gdn_dims(hp_)), res_(res), be_(*res.backend) {
    const backend::BufferSet& b = *res.scratch;
    const uint64_t c = static_cast<uint64_t>(res.shape.max_tokens);
    const uint64_t kv_width = uint64_t{hp_.n_head_kv} * hp_.head_dim;
    const bool any_gdn = hp_.n_recurrent_layers() > 0, any_attn = hp_.n_attention_layers() > 0;
    const SharedWidths w = shared_widths(hp_);
    hidden_ = b.get_as<float>("hidden", c * hp_.n_embd);
    normed_ = b.get_as<float>("normed", c * hp_.n_embd);
    proj_out_ = b.get_as<float>("proj_out", c * hp_.n_embd);
    wide_ = b.get_as<float>("wide", c * w.wide);
    mixed_ = b.get_as<float>("mixed", c * w.mixed);
    heads_out_ = b.get_as<float>("heads_out", c * w.heads_out);
    gate_ = b.get_as<float>("ffn_gate", c * hp_.n_ff);
    up_ = b.get_as<float>("ffn_up", c * hp_.n_ff);
    logit_rows_ = b.get_as<float>("logit_rows", static_cast<uint64_t>(res.shape.max_logit_rows) * hp_.n_embd);
    if (any_attn) {
      k_ = b.get_as<float>("k", c * kv_width);
      v_ = b.get_as<float>("v", c * kv_width);
    }
    if (any_gdn) {
      z_ = b.get_as<float>("gdn_z", c * g_.value_dim());
      beta_ = b.get_as<float>("gdn_beta", c * g_.n_v);
      gdn_g_ = b.get_as<float>("gdn_g", c * g_.n_v);
    }

    const PlacedWeights pw(model, be_);
    embd_ = pw.matrix("token_embd.weight");
    output_ = hp_.tied_output ? embd_ : pw.matrix("output.weight");
    output_norm_ = pw.vector("output_norm.weight");
    const uint64_t slots = static_cast<uint64_t>(res.shape.n_seqs);
    layers_.resize(hp_.n_layer);
    uint32_t attention_index = 0;
    for (uint32_t il = 0; il < hp_.n_layer; ++il) {
      Layer& L = layers_[il];
      L.attn_norm = pw.vector(blk(il, "attn_norm.weight"));
      L.post_norm = pw.vector(blk(il, "post_attention_norm.weight"));
      L.w_gate = pw.matrix(blk(il, "ffn_gate.weight"));
      L.w_up = pw.matrix(blk(il, "ffn_up.weight"));
      L.w_down = pw.matrix(blk(il, "ffn_down.weight"));
      L.recurrent = hp_.is_recurrent(il);
      if (L.recurrent) {
        const gguf::TensorInfo& conv = model.file().require_tensor(blk(il, "ssm_conv1d.weight"));
        if (conv.type != quant::Type::F32)
          throw Error(model.file().path() + ": tensor '" + conv.name + "' has type " +
                      std::string(quant::type_name(conv.type)) + ", expected f32");
        L.conv_w = be_.place_vector(conv.name, reinterpret_cast<const float*>(conv.data),
                                    static_cast<int64_t>(conv.n_elements()));
        L.w_qkv = pw.matrix(blk(il, "attn_qkv.weight"));
        L.w_z = pw.matrix(blk(il, "attn_gate.weight"));
        L.w_beta = pw.matrix(blk(il, "ssm_beta.weight"));
        L.w_alpha = pw.matrix(blk(il, "ssm_alpha.weight"));
        L.w_ssm_out = pw.matrix(blk(il, "ssm_out.weight"));
        L.dt_bias = pw.vector(blk(il, "ssm_dt.bias"));
        L.ssm_a = pw.vector(blk(il, "ssm_a"));
        L.ssm_norm = pw.vector(blk(il, "ssm_norm.weight"));
        L.conv_state = res.state->get_as<float>(conv_state_name(il), slots * conv_state_floats());
        L.ssm_state = res.state->get_as<float>(ssm_state_name(il), slots * ssm_state_floats());
      } else {
        L.attention_index = attention_index++;
        L.wq = pw.matrix(blk(il, "attn_q.weight"));
        L.wk = pw.matrix(blk(il, "attn_k.weight"));
        L.wv = pw.matrix(blk(il, "attn_v.weight"));
        L.wo = pw.matrix(blk(il, "attn_output.weight"));
        L.q_norm = pw.vector(blk(il, "attn_q_norm.weight"));
        L.k_norm = pw.vector(blk(il, "attn_k_norm.weight"));
      }
    }
  }

  void run(const backend::Batch& batch, float* logits) override {
    const int64_t n = batch.n_tokens;
    check_batch_fits(batch, res_.shape);
    const int64_t d = hp_.n_embd;
    backend::Backend& be = be_;

    be.begin_batch(batch);
    be.embed(embd_, hidden_);
    // Each residual add goes with the norm after it (the next layer's, for the FFN's).
    if (hp_.n_layer > 0) be.rms_norm(hidden_, layers_[0].attn_norm, normed_, n, d, hp_.rms_eps);
    for (uint32_t il = 0; il < hp_.n_layer; ++il) {
      const Layer& L = layers_[il];
      if (L.recurrent) gated_delta_net(L, n);
      else gated_attention(L, n);
      be.add_rms_norm(hidden_, proj_out_, L.post_norm, normed_, n, d, hp_.rms_eps);

      be.matmuls(normed_, n, {{L.w_gate, gate_}, {L.w_up, up_}});
      be.silu_mul(gate_, up_, n * hp_.n_ff);
      be.matmul(L.w_down, gate_, n, proj_out_);
      if (il + 1 < hp_.n_layer) be.add_rms_norm(hidden_, proj_out_, layers_[il + 1].attn_norm, normed_, n, d, hp_.rms_eps);
      else be.add(hidden_, proj_out_, n * d);
    }
    be.logits(hidden_, output_norm_, hp_.rms_eps, output_, logit_rows_, logits);
    be.end_batch();
  }

  void reset_state(int32_t slot) override {
    for (const Layer& L : layers_) {
      if (!L.recurrent) continue;
      be_.zero(L.conv_state + slot * conv_state_floats(), conv_state_floats() * sizeof(float));
      be_.zero(L.ssm_state + slot * ssm_state_floats(), ssm_state_floats() * sizeof(float));
    }
  }

 private:
  struct Layer {
    bool recurrent = false;
    const float *attn_norm = nullptr, *post_norm = nullptr;
    backend::WeightView w_gate{}, w_up{}, w_down{};
    // gated attention
    uint32_t attention_index = 0;  // this layer's index among attention layers (KV pool)
    backend::WeightView wq{}, wk{}, wv{}, wo{};
    const float *q_norm = nullptr, *k_norm = nullptr;
    // Gated DeltaNet
    backend::WeightView w_qkv{}, w_z{}, w_beta{}, w_alpha{}, w_ssm_out{};
    const float *conv_w = nullptr, *dt_bias = nullptr, *ssm_a = nullptr, *ssm_norm = nullptr;
    float* conv_state = nullptr;  // [slots][K-1, conv_dim]
    float* ssm_state = nullptr;   // [slots][n_v, d_k, d_v]
  };

  uint64_t conv_state_floats() const { return (g_.kernel - 1) * g_.conv_dim(); }
  uint64_t ssm_state_floats() const { return g_.n_v * g_.d_k * g_.d_v; }

  // §2.2: normed_ -> proj_out_.
  void gated_attention(const Layer& L, int64_t n) {
    backend::Backend& be = be_;
    const int64_t hd = hp_.head_dim, n_head = hp_.n_head, n_kv = hp_.n_head_kv;
    float* qg = wide_;      // [n, n_head, 2 * hd]: query | gate per head
    float* q = mixed_;      // [n, n_head, hd]
    float* o = heads_out_;  // [n, n_head, hd]
    be.matmuls(normed_, n, {{L.wq, qg}, {L.wk, k_}, {L.wv, v_}});
    const backend::RopeParams rope{hp_.rope_type, static_cast<int>(hp_.n_rot), hp_.rope_base, hp_.rope_freq_scale,
                                   nullptr};
    // q <- the query half of each head of qg, normed and rotated.
    be.norm_rope_kv_write(L.attention_index, q, n_head, k_, v_, n_kv, n, hd, L.q_norm, L.k_norm, hp_.rms_eps, rope,
                          {qg, 2 * hd});
    be.attention(L.attention_index, q, o, hp_.n_head, hp_.attention_scale());
    be.sigmoid_gate(o, qg + hd, 2 * hd, n * n_head, hd);  // o_h ⊙ σ(g_h)
    be.matmul(L.wo, o, n, proj_out_);
  }

  // §2.3: normed_ -> proj_out_, carrying the layer's conv and matrix state per sequence.
  void gated_delta_net(const Layer& L, int64_t n) {
    backend::Backend& be = be_;
    const int64_t conv_dim = static_cast<int64_t>(g_.conv_dim()), key_dim = static_cast<int64_t>(g_.key_dim());
    const int64_t n_v = static_cast<int64_t>(g_.n_v), d_k = static_cast<int64_t>(g_.d_k);
    const int64_t n_k = static_cast<int64_t>(g_.n_k), d_v = static_cast<int64_t>(g_.d_v);
    float* mix = wide_;      // [n, conv_dim] raw q | k | v
    float* u = mixed_;       // [n, conv_dim] after conv + SiLU
    float* y = heads_out_;   // [n, n_v, d_v]
    be.matmuls(normed_, n, {{L.w_qkv, mix}, {L.w_z, z_}, {L.w_beta, beta_}, {L.w_alpha, gdn_g_}});
    backend::Backend::GdnInputArgs in;
    in.mix = mix;
    in.n_tokens = n;
    in.channels = conv_dim;
    in.conv_w = L.conv_w;
    in.kernel = static_cast<int>(g_.kernel);
    in.conv_state = L.conv_state;
    in.u = u;
    in.n_k_heads = n_k;
    in.d_k = d_k;
    in.l2_eps = 1e-6f;  // HF l2norm
    in.q_scale = 1.0f / std::sqrt(static_cast<float>(d_k));
    in.beta = beta_;
    in.alpha = gdn_g_;
    in.ssm_a = L.ssm_a;
    in.dt_bias = L.dt_bias;
    in.n_v_heads = n_v;
    be.gdn_inputs(in);

    backend::GatedDeltaArgs a;
    a.q = u;
    a.k = u + key_dim;
    a.v = u + 2 * key_dim;
    a.qk_stride = conv_dim;
    a.v_stride = conv_dim;
    a.g = gdn_g_;
    a.beta = beta_;
    a.state = L.ssm_state;
    a.out = y;
    a.n_k_heads = n_k;
    a.n_v_heads = n_v;
    a.d_k = d_k;
    a.d_v = d_v;
    be.gated_delta_norm(a, n, z_, L.ssm_norm, hp_.rms_eps);
    be.matmul(L.w_ssm_out, y, n, proj_out_);
  }

  const Hparams& hp_;
  const GdnDims g_;
  ForwardResources res_;
  backend::Backend& be_;
  float *hidden_ = nullptr, *normed_ = nullptr, *proj_out_ = nullptr, *wide_ = nullptr, *mixed_ = nullptr,
        *heads_out_ = nullptr, *gate_ = nullptr, *up_ = nullptr, *logit_rows_ = nullptr;
  float *k_ = nullptr, *v_ = nullptr;
  float *z_ = nullptr, *beta_ = nullptr, *gdn_g_ = nullptr;
  backend::WeightView embd_{}, output_{};
  const float* output_norm_ = nullptr;
  std::vector<Layer> layers_;
};

std::unique_ptr<Forward> make_qwen35_forward(const Model& model, const ForwardResources& res) {
  return std::make_unique<Qwen35Forward>(model, res);
}

}  // namespace

const Family& qwen35_family() {
  static const Family family{"qwen35", read_qwen35, qwen35_tensors, qwen35_scratch, qwen35_state,
                             make_qwen35_forward};
  return family;
}

}  // namespace keel::model
