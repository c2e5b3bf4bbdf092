#include "model/presets.h"

#include "keel/error.h"

namespace keel::model {
namespace {

struct Preset {
  std::string_view name;
  Hparams hp;
};

Hparams dense(std::string arch, uint32_t n_layer, uint32_t n_embd, uint32_t n_ff, uint32_t n_head,
              uint32_t n_kv, uint32_t head_dim, uint32_t n_vocab, uint32_t n_ctx, float rope_base, float eps,
              bool tied) {
  Hparams hp;
  hp.arch = std::move(arch);
  hp.n_layer = n_layer;
  hp.n_embd = n_embd;
  hp.n_ff = n_ff;
  hp.n_head = n_head;
  hp.n_head_kv = n_kv;
  hp.head_dim = head_dim;
  hp.n_rot = head_dim;
  hp.n_vocab = n_vocab;
  hp.n_ctx_train = n_ctx;
  hp.rope_base = rope_base;
  hp.rms_eps = eps;
  hp.tied_output = tied;
  hp.rope_type = hp.arch == "llama" ? RopeType::norm : RopeType::neox;
  hp.qkv_bias = hp.arch == "qwen2";
  hp.qk_norm = hp.arch == "qwen3";
  return hp;
}

// docs/specs/qwen35.md §1.1: every 4th layer is full attention (head_dim 256, n_rot 64).
Hparams qwen35(uint32_t n_layer, uint32_t n_embd, uint32_t n_ff, uint32_t n_head, uint32_t n_kv,
               uint32_t n_k_heads, uint32_t n_v_heads, bool tied) {
  Hparams hp = dense("qwen35", n_layer, n_embd, n_ff, n_head, n_kv, 256, 248320, 262144, 1e7f, 1e-6f, tied);
  hp.n_rot = 64;
  hp.qk_norm = true;
  hp.gated_attention = true;
  hp.recurrent.resize(n_layer);
  for (uint32_t il = 0; il < n_layer; ++il) hp.recurrent[il] = (il + 1) % 4 != 0;
  hp.ssm_conv_kernel = 4;
  hp.ssm_state_size = 128;
  hp.ssm_group_count = n_k_heads;
  hp.ssm_time_step_rank = n_v_heads;
  hp.ssm_inner_size = n_v_heads * 128;
  return hp;
}

const std::vector<Preset>& presets() {
  static const std::vector<Preset> table = [] {
    std::vector<Preset> t = {
        {"qwen3-0.6b", dense("qwen3", 28, 1024, 3072, 16, 8, 128, 151936, 40960, 1e6f, 1e-6f, true)},
        {"qwen3-1.7b", dense("qwen3", 28, 2048, 6144, 16, 8, 128, 151936, 40960, 1e6f, 1e-6f, true)},
        {"qwen3-4b", dense("qwen3", 36, 2560, 9728, 32, 8, 128, 151936, 40960, 1e6f, 1e-6f, true)},
        {"qwen3-8b", dense("qwen3", 36, 4096, 12288, 32, 8, 128, 151936, 40960, 1e6f, 1e-6f, false)},
        {"qwen3-14b", dense("qwen3", 40, 5120, 17408, 40, 8, 128, 151936, 40960, 1e6f, 1e-6f, false)},
        {"qwen3-32b", dense("qwen3", 64, 5120, 25600, 64, 8, 128, 151936, 40960, 1e6f, 1e-6f, false)},
        {"qwen2.5-0.5b", dense("qwen2", 24, 896, 4864, 14, 2, 64, 151936, 32768, 1e6f, 1e-6f, true)},
        {"qwen2.5-7b", dense("qwen2", 28, 3584, 18944, 28, 4, 128, 152064, 32768, 1e6f, 1e-6f, false)},
        {"llama-3.2-1b", dense("llama", 16, 2048, 8192, 32, 8, 64, 128256, 131072, 500000.0f, 1e-5f, true)},
        {"llama-3.2-3b", dense("llama", 28, 3072, 8192, 24, 8, 128, 128256, 131072, 500000.0f, 1e-5f, true)},
        {"llama-3.1-8b", dense("llama", 32, 4096, 14336, 32, 8, 128, 128256, 131072, 500000.0f, 1e-5f, false)},
        {"qwen35-0.8b", qwen35(24, 1024, 3584, 8, 2, 16, 16, true)},
        {"qwen35-2b", qwen35(24, 2048, 6144, 8, 2, 16, 16, true)},
        {"qwen35-4b", qwen35(32, 2560, 9216, 16, 4, 16, 32, true)},
        {"qwen35-9b", qwen35(32, 4096, 12288, 16, 4, 16, 32, false)},
        {"qwen35-27b", qwen35(64, 5120, 17408, 24, 4, 16, 48, false)},
    };
    for (auto& p : t)
      if (p.hp.arch == "llama" && p.hp.n_ctx_train > 8192) p.hp.has_rope_freqs = true;  // llama3 scaling
    return t;
  }();
  return table;
}

}  // namespace

std::optional<Hparams> find_preset(std::string_view name) {
  for (const Preset& p : presets())
    if (p.name == name) return p.hp;
  return std::nullopt;
}

std::vector<std::string> preset_names() {
  std::vector<std::string> out;
  for (const Preset& p : presets()) out.emplace_back(p.name);
  return out;
}

Hparams require_preset(std::string_view name) {
  if (auto hp = find_preset(name)) return *hp;
  std::string list;
  for (const auto& n : preset_names()) list += (list.empty() ? "" : ", ") + n;
  throw Error("unknown preset '" + std::string(name) + "' (known: " + list + ")", ErrorKind::usage);
}

}  // namespace keel::model
