// The qwen35 family (Qwen3.5 dense): a hybrid of Gated DeltaNet layers (linear attention with an
// O(1) recurrent state) and gated full-attention layers (every full_attention_interval-th layer),
// each followed by a SwiGLU MLP. docs/specs/qwen35.md is the reference for every formula here.
#include <algorithm>
#include <cmath>

#include "backend/cpu/attention.h"
#include "backend/cpu/gated_delta.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/ops.h"
#include "gguf/gguf.h"
#include "keel/error.h"
#include "model/blocks.h"
#include "model/family.h"
#include "model/model.h"
#include "quant/dequant.h"
#include "runtime/buffer_set.h"

namespace keel::model {
namespace {

std::string blk(uint32_t il, const char* name) { return "blk." + std::to_string(il) + "." + name; }

// Runs fn(begin, end) over n_rows rows of `width` floats, in ranges of at least ~16K floats per
// thread (row-wise ops are cheap: small batches stay on the calling thread).
template <typename F>
void for_rows(cpu::ThreadPool& pool, int64_t n_rows, int64_t width, F&& fn) {
  pool.parallel_for(n_rows, std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(1, width)), fn);
}

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
  if (hp.ssm_conv_kernel < 1 || hp.ssm_conv_kernel > static_cast<uint32_t>(cpu::kMaxConvKernel))
    throw Error(file.path() + ": " + key("ssm.conv_kernel") + " = " + std::to_string(hp.ssm_conv_kernel) +
                " is outside 1.." + std::to_string(cpu::kMaxConvKernel));
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

// Activation buffers of one chunk (names are the contract with Qwen35Forward).
std::vector<BufferSpec> qwen35_scratch(const Hparams& hp, const SessionShape& s) {
  const uint64_t c = static_cast<uint64_t>(s.chunk), f = sizeof(float);
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
    out.push_back({"attention", cpu::attention_workspace_bytes(s.kv, hp.n_head, s.n_threads)});
  }
  if (any_gdn) {
    out.push_back({"gdn_z", c * g.value_dim() * f});  // [chunk, n_v * d_v] output gate
    out.push_back({"gdn_beta", c * g.n_v * f});       // [chunk, n_v]
    out.push_back({"gdn_g", c * g.n_v * f});          // [chunk, n_v] log-decay
    out.push_back({"gdn_work", cpu::gated_delta_workspace_bytes(static_cast<int64_t>(g.d_k),
                                                                static_cast<int64_t>(g.d_v), s.n_threads)});
  }
  return out;
}

std::string conv_state_name(uint32_t il) { return "gdn_conv." + std::to_string(il); }
std::string ssm_state_name(uint32_t il) { return "gdn_state." + std::to_string(il); }

// Per GDN layer, fp32 (§3): the last K-1 raw conv inputs and the n_v matrices S [d_k, d_v].
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
      : hp_(model.hparams()), g_(gdn_dims(hp_)), res_(res) {
    const runtime::BufferSet& b = *res.scratch;
    const uint64_t c = static_cast<uint64_t>(res.shape.chunk);
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
    matmul_scratch_ = b.get("matmul");
    if (any_attn) {
      k_ = b.get_as<float>("k", c * kv_width);
      v_ = b.get_as<float>("v", c * kv_width);
      attention_ws_ = b.get_as<float>("attention");
    }
    if (any_gdn) {
      z_ = b.get_as<float>("gdn_z", c * g_.value_dim());
      beta_ = b.get_as<float>("gdn_beta", c * g_.n_v);
      gdn_g_ = b.get_as<float>("gdn_g", c * g_.n_v);
      gdn_ws_ = b.get_as<float>("gdn_work");
    }

    embd_ = model.file().require_tensor("token_embd.weight");
    output_ = model.matrix(hp_.tied_output ? "token_embd.weight" : "output.weight");
    output_norm_ = model.vector_f32("output_norm.weight");
    layers_.resize(hp_.n_layer);
    uint32_t attention_index = 0;
    for (uint32_t il = 0; il < hp_.n_layer; ++il) {
      Layer& L = layers_[il];
      L.attn_norm = model.vector_f32(blk(il, "attn_norm.weight"));
      L.post_norm = model.vector_f32(blk(il, "post_attention_norm.weight"));
      L.w_gate = model.matrix(blk(il, "ffn_gate.weight"));
      L.w_up = model.matrix(blk(il, "ffn_up.weight"));
      L.w_down = model.matrix(blk(il, "ffn_down.weight"));
      L.recurrent = hp_.is_recurrent(il);
      if (L.recurrent) {
        const gguf::TensorInfo& conv = model.file().require_tensor(blk(il, "ssm_conv1d.weight"));
        if (conv.type != quant::Type::F32)
          throw Error(model.file().path() + ": tensor '" + conv.name + "' has type " +
                      std::string(quant::type_name(conv.type)) + ", expected f32");
        L.conv_w = reinterpret_cast<const float*>(conv.data);
        L.w_qkv = model.matrix(blk(il, "attn_qkv.weight"));
        L.w_z = model.matrix(blk(il, "attn_gate.weight"));
        L.w_beta = model.matrix(blk(il, "ssm_beta.weight"));
        L.w_alpha = model.matrix(blk(il, "ssm_alpha.weight"));
        L.w_ssm_out = model.matrix(blk(il, "ssm_out.weight"));
        L.dt_bias = model.vector_f32(blk(il, "ssm_dt.bias"));
        L.ssm_a = model.vector_f32(blk(il, "ssm_a"));
        L.ssm_norm = model.vector_f32(blk(il, "ssm_norm.weight"));
        L.conv_state = res.state->get_as<float>(conv_state_name(il), (g_.kernel - 1) * g_.conv_dim());
        L.ssm_state = res.state->get_as<float>(ssm_state_name(il), g_.n_v * g_.d_k * g_.d_v);
      } else {
        L.attention_index = attention_index++;
        L.wq = model.matrix(blk(il, "attn_q.weight"));
        L.wk = model.matrix(blk(il, "attn_k.weight"));
        L.wv = model.matrix(blk(il, "attn_v.weight"));
        L.wo = model.matrix(blk(il, "attn_output.weight"));
        L.q_norm = model.vector_f32(blk(il, "attn_q_norm.weight"));
        L.k_norm = model.vector_f32(blk(il, "attn_k_norm.weight"));
      }
    }
  }

  void run(const ForwardBatch& batch) override {
    const int64_t n = batch.n_tokens;
    if (n <= 0 || n > res_.shape.chunk)
      throw Error("internal: batch of " + std::to_string(n) + " tokens exceeds the planned chunk");
    if (batch.n_logit_rows > res_.shape.max_logit_rows) throw Error("internal: more logit rows than planned");
    const int64_t d = hp_.n_embd;
    cpu::ThreadPool& pool = *res_.pool;

    embed(batch.tokens, n);
    for (uint32_t il = 0; il < hp_.n_layer; ++il) {
      const Layer& L = layers_[il];
      norm_rows(hidden_, L.attn_norm, n);
      if (L.recurrent) gated_delta_net(L, n);
      else gated_attention(L, n, batch.pos0);
      cpu::add_inplace(hidden_, proj_out_, n * d);

      norm_rows(hidden_, L.post_norm, n);
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

  void reset_state() override {
    for (const Layer& L : layers_) {
      if (!L.recurrent) continue;
      std::fill_n(L.conv_state, (g_.kernel - 1) * g_.conv_dim(), 0.0f);
      std::fill_n(L.ssm_state, g_.n_v * g_.d_k * g_.d_v, 0.0f);
    }
  }

 private:
  // normed_ = RMSNorm(x; w) row by row, [n, n_embd].
  void norm_rows(const float* x, const float* w, int64_t n) {
    const int64_t d = hp_.n_embd;
    for_rows(*res_.pool, n, d, [&](int64_t b, int64_t e) {
      cpu::rms_norm(x + b * d, w, normed_ + b * d, e - b, d, hp_.rms_eps);
    });
  }

  struct Layer {
    bool recurrent = false;
    const float *attn_norm = nullptr, *post_norm = nullptr;
    cpu::WeightView w_gate{}, w_up{}, w_down{};
    // gated attention
    uint32_t attention_index = 0;  // this layer's index among attention layers (KV cache)
    cpu::WeightView wq{}, wk{}, wv{}, wo{};
    const float *q_norm = nullptr, *k_norm = nullptr;
    // Gated DeltaNet
    cpu::WeightView w_qkv{}, w_z{}, w_beta{}, w_alpha{}, w_ssm_out{};
    const float *conv_w = nullptr, *dt_bias = nullptr, *ssm_a = nullptr, *ssm_norm = nullptr;
    float* conv_state = nullptr;  // [K-1, conv_dim]
    float* ssm_state = nullptr;   // [n_v, d_k, d_v]
  };

  // §2.2: normed_ -> proj_out_.
  void gated_attention(const Layer& L, int64_t n, int64_t pos0) {
    cpu::ThreadPool& pool = *res_.pool;
    const int64_t hd = hp_.head_dim, n_head = hp_.n_head;
    float* qg = wide_;      // [n, n_head, 2 * hd]: query | gate per head
    float* q = mixed_;      // [n, n_head, hd]
    float* o = heads_out_;  // [n, n_head, hd]
    cpu::matmul(L.wq, normed_, n, qg, matmul_scratch_, pool, res_.shape.matmul_mode);
    cpu::matmul(L.wk, normed_, n, k_, matmul_scratch_, pool, res_.shape.matmul_mode);
    cpu::matmul(L.wv, normed_, n, v_, matmul_scratch_, pool, res_.shape.matmul_mode);
    const int64_t n_kv = hp_.n_head_kv;
    for_rows(pool, n, 3 * n_head * hd, [&](int64_t b, int64_t e) {  // split query | gate, q/k RMSNorm
      for (int64_t t = b; t < e; ++t)
        for (int64_t h = 0; h < n_head; ++h) std::copy_n(qg + (t * n_head + h) * 2 * hd, hd, q + (t * n_head + h) * hd);
      cpu::rms_norm(q + b * n_head * hd, L.q_norm, q + b * n_head * hd, (e - b) * n_head, hd, hp_.rms_eps);
      cpu::rms_norm(k_ + b * n_kv * hd, L.k_norm, k_ + b * n_kv * hd, (e - b) * n_kv, hd, hp_.rms_eps);
    });
    const cpu::RopeParams rope{hp_.rope_type, static_cast<int>(hp_.n_rot), hp_.rope_base, hp_.rope_freq_scale, nullptr};
    cpu::rope(q, n, n_head, hd, pos0, rope);
    cpu::rope(k_, n, hp_.n_head_kv, hd, pos0, rope);
    res_.kv->write(L.attention_index, pos0, n, k_, v_);
    cpu::AttentionArgs args;
    args.q = q;
    args.out = o;
    args.n_tokens = n;
    args.pos0 = pos0;
    args.n_head = hp_.n_head;
    args.scale = hp_.attention_scale();
    args.kv = res_.kv;
    args.layer = L.attention_index;
    cpu::flash_attention(args, attention_ws_, pool);
    for_rows(pool, n * n_head, hd, [&](int64_t b, int64_t e) {  // o_h ⊙ σ(g_h)
      for (int64_t row = b; row < e; ++row) {
        float* oh = o + row * hd;
        const float* gate = qg + row * 2 * hd + hd;
        for (int64_t i = 0; i < hd; ++i) oh[i] /= 1.0f + std::exp(-gate[i]);
      }
    });
    cpu::matmul(L.wo, o, n, proj_out_, matmul_scratch_, pool, res_.shape.matmul_mode);
  }

  // §2.3: normed_ -> proj_out_, carrying the layer's conv and matrix state.
  void gated_delta_net(const Layer& L, int64_t n) {
    cpu::ThreadPool& pool = *res_.pool;
    const int64_t conv_dim = static_cast<int64_t>(g_.conv_dim()), key_dim = static_cast<int64_t>(g_.key_dim());
    const int64_t n_v = static_cast<int64_t>(g_.n_v), d_k = static_cast<int64_t>(g_.d_k);
    float* mix = wide_;      // [n, conv_dim] raw q | k | v
    float* u = mixed_;       // [n, conv_dim] after conv + SiLU
    float* y = heads_out_;   // [n, n_v, d_v]
    cpu::matmul(L.w_qkv, normed_, n, mix, matmul_scratch_, pool, res_.shape.matmul_mode);
    cpu::matmul(L.w_z, normed_, n, z_, matmul_scratch_, pool, res_.shape.matmul_mode);
    cpu::matmul(L.w_beta, normed_, n, beta_, matmul_scratch_, pool, res_.shape.matmul_mode);
    cpu::matmul(L.w_alpha, normed_, n, gdn_g_, matmul_scratch_, pool, res_.shape.matmul_mode);
    cpu::causal_conv1d_silu(mix, n, conv_dim, L.conv_w, static_cast<int>(g_.kernel), L.conv_state, u, pool);
    constexpr float kL2Eps = 1e-6f;  // HF l2norm
    const int64_t n_k = static_cast<int64_t>(g_.n_k);
    const float q_scale = 1.0f / std::sqrt(static_cast<float>(d_k));
    for_rows(pool, n, 2 * key_dim, [&](int64_t b, int64_t e) {
      cpu::l2_norm_heads(u + b * conv_dim, e - b, conv_dim, n_k, d_k, kL2Eps, q_scale);
      cpu::l2_norm_heads(u + b * conv_dim + key_dim, e - b, conv_dim, n_k, d_k, kL2Eps, 1.0f);
    });
    cpu::gdn_gates(beta_, gdn_g_, L.ssm_a, L.dt_bias, n, n_v);

    cpu::GatedDeltaArgs a;
    a.q = u;
    a.k = u + key_dim;
    a.v = u + 2 * key_dim;
    a.qk_stride = conv_dim;
    a.v_stride = conv_dim;
    a.g = gdn_g_;
    a.beta = beta_;
    a.state = L.ssm_state;
    a.out = y;
    a.n_tokens = n;
    a.n_k_heads = static_cast<int64_t>(g_.n_k);
    a.n_v_heads = n_v;
    a.d_k = d_k;
    a.d_v = static_cast<int64_t>(g_.d_v);
    if (n == 1) cpu::gated_delta_recurrent(a, gdn_ws_, pool);
    else cpu::gated_delta_chunked(a, gdn_ws_, pool);

    for_rows(pool, n * n_v, a.d_v, [&](int64_t b, int64_t e) {
      cpu::gated_rms_norm(y + b * a.d_v, z_ + b * a.d_v, L.ssm_norm, e - b, a.d_v, hp_.rms_eps);
    });
    cpu::matmul(L.w_ssm_out, y, n, proj_out_, matmul_scratch_, pool, res_.shape.matmul_mode);
  }

  void embed(const int32_t* tokens, int64_t n) { embed_tokens(embd_, tokens, n, hidden_); }

  const Hparams& hp_;
  const GdnDims g_;
  ForwardResources res_;
  float *hidden_ = nullptr, *normed_ = nullptr, *proj_out_ = nullptr, *wide_ = nullptr, *mixed_ = nullptr,
        *heads_out_ = nullptr, *gate_ = nullptr, *up_ = nullptr, *logit_rows_ = nullptr;
  float *k_ = nullptr, *v_ = nullptr, *attention_ws_ = nullptr;
  float *z_ = nullptr, *beta_ = nullptr, *gdn_g_ = nullptr, *gdn_ws_ = nullptr;
  void* matmul_scratch_ = nullptr;
  gguf::TensorInfo embd_;
  cpu::WeightView output_;
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
