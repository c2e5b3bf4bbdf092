#!/usr/bin/env python3
"""Writes the GGUF seeds of fuzz/corpus/gguf: tiny models of every family keel runs (llama with a
SentencePiece vocabulary, qwen2/qwen3 with byte-level BPE, the qwen35 hybrid), a vocab-only
file and the absurd layer count of issue 17, a few KB each. Written from the GGUF spec with struct, not with keel's own writer, so the
seeds do not inherit its mistakes. Usage: fuzz/make_seeds.py [OUT_DIR]"""
import os
import struct
import sys

U32, I32, F32, BOOL, STRING, ARRAY = 4, 5, 6, 7, 8, 9
ALIGN = 32


def s(text):
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def value(v):
    if isinstance(v, bool):
        return struct.pack("<I", BOOL) + struct.pack("<B", v)
    if isinstance(v, int):
        return struct.pack("<I", U32) + struct.pack("<I", v)
    if isinstance(v, float):
        return struct.pack("<I", F32) + struct.pack("<f", v)
    if isinstance(v, str):
        return struct.pack("<I", STRING) + s(v)
    elem = v[0]
    if isinstance(elem, str):
        body = b"".join(s(x) for x in v)
        return struct.pack("<IIQ", ARRAY, STRING, len(v)) + body
    if isinstance(elem, float):
        return struct.pack("<IIQ", ARRAY, F32, len(v)) + b"".join(struct.pack("<f", x) for x in v)
    return struct.pack("<IIQ", ARRAY, I32, len(v)) + b"".join(struct.pack("<i", x) for x in v)


def gguf(metadata, tensors):
    """tensors: list of (name, shape in ggml order); all F32, filled with a small ramp."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for key, v in metadata.items():
        out += s(key) + value(v)
    offset, data = 0, b""
    for name, shape in tensors:
        out += s(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
        out += struct.pack("<IQ", 0, offset)  # type 0 = F32
        n = 1
        for d in shape:
            n *= d
        blob = b"".join(struct.pack("<f", ((i % 7) - 3) * 0.05 + (1.0 if "norm" in name else 0.0)) for i in range(n))
        pad = (-len(blob)) % ALIGN
        data += blob + b"\0" * pad
        offset += len(blob) + pad
    out += b"\0" * ((-len(out)) % ALIGN)
    return out + data


SPM_TOKENS = ["<unk>", "<s>", "</s>", "<0x0A>", "<0x20>", "\u2581", "a", "b", "\u2581a", "\u2581ab", "ab", "c"]
BPE_TOKENS = ["a", "b", "c", "\u0120", "\u010a", "ab", "\u0120a", "\u0120ab", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "d"]
BPE_MERGES = ["a b", "\u0120 a", "\u0120a b"]


def spm_vocab():
    types = [2, 3, 3, 6, 6] + [1] * (len(SPM_TOKENS) - 5)
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": SPM_TOKENS,
            "tokenizer.ggml.scores": [float(-i) for i in range(len(SPM_TOKENS))],
            "tokenizer.ggml.token_type": types, "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2}


def bpe_vocab(pre):
    types = [1] * 8 + [3, 3, 3, 1]
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.tokens": BPE_TOKENS,
            "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": BPE_MERGES,
            "tokenizer.ggml.eos_token_id": 10, "tokenizer.ggml.add_bos_token": False}


def dense(arch, vocab, qkv_bias=False, qk_norm=False, n_layer=1):
    d, ff, n_head, n_kv, hd = 8, 16, 2, 1, 4
    v = len(vocab["tokenizer.ggml.tokens"])
    meta = {"general.architecture": arch, "general.name": "fuzz-seed-" + arch,
            arch + ".block_count": n_layer, arch + ".embedding_length": d, arch + ".feed_forward_length": ff,
            arch + ".attention.head_count": n_head, arch + ".attention.head_count_kv": n_kv,
            arch + ".context_length": 64, arch + ".attention.layer_norm_rms_epsilon": 1e-5}
    meta.update(vocab)
    t = [("token_embd.weight", [d, v]), ("output_norm.weight", [d])]
    for il in range(n_layer):
        b = "blk.%d." % il
        t += [(b + "attn_norm.weight", [d]), (b + "attn_q.weight", [d, n_head * hd]),
              (b + "attn_k.weight", [d, n_kv * hd]), (b + "attn_v.weight", [d, n_kv * hd])]
        if qkv_bias:
            t += [(b + "attn_q.bias", [n_head * hd]), (b + "attn_k.bias", [n_kv * hd]), (b + "attn_v.bias", [n_kv * hd])]
        if qk_norm:
            t += [(b + "attn_q_norm.weight", [hd]), (b + "attn_k_norm.weight", [hd])]
        t += [(b + "attn_output.weight", [n_head * hd, d]), (b + "ffn_norm.weight", [d]),
              (b + "ffn_gate.weight", [d, ff]), (b + "ffn_up.weight", [d, ff]), (b + "ffn_down.weight", [ff, d])]
    return gguf(meta, t)


def qwen35():
    arch, d, ff, n_head, n_kv, hd = "qwen35", 8, 16, 2, 1, 4
    n_k, n_v, d_k, d_v, kernel = 1, 2, 4, 4, 4
    vocab = bpe_vocab("qwen35")
    v = len(BPE_TOKENS)
    meta = {"general.architecture": arch, arch + ".block_count": 2, arch + ".embedding_length": d,
            arch + ".feed_forward_length": ff, arch + ".attention.head_count": n_head,
            arch + ".attention.head_count_kv": n_kv, arch + ".attention.key_length": hd,
            arch + ".attention.value_length": hd, arch + ".rope.dimension_count": 2,
            arch + ".ssm.conv_kernel": kernel, arch + ".ssm.state_size": d_k, arch + ".ssm.group_count": n_k,
            arch + ".ssm.time_step_rank": n_v, arch + ".ssm.inner_size": n_v * d_v,
            arch + ".full_attention_interval": 2}
    meta.update(vocab)
    conv, value_dim = 2 * n_k * d_k + n_v * d_v, n_v * d_v
    t = [("token_embd.weight", [d, v]), ("output_norm.weight", [d])]
    b = "blk.0."
    t += [(b + "attn_norm.weight", [d]), (b + "attn_qkv.weight", [d, conv]), (b + "attn_gate.weight", [d, value_dim]),
          (b + "ssm_beta.weight", [d, n_v]), (b + "ssm_alpha.weight", [d, n_v]), (b + "ssm_conv1d.weight", [kernel, conv]),
          (b + "ssm_dt.bias", [n_v]), (b + "ssm_a", [n_v]), (b + "ssm_norm.weight", [d_v]),
          (b + "ssm_out.weight", [value_dim, d])]
    b = "blk.1."
    t += [(b + "attn_norm.weight", [d]), (b + "attn_q.weight", [d, 2 * n_head * hd]), (b + "attn_k.weight", [d, n_kv * hd]),
          (b + "attn_v.weight", [d, n_kv * hd]), (b + "attn_q_norm.weight", [hd]), (b + "attn_k_norm.weight", [hd]),
          (b + "attn_output.weight", [n_head * hd, d])]
    for b in ("blk.0.", "blk.1."):
        t += [(b + "post_attention_norm.weight", [d]), (b + "ffn_gate.weight", [d, ff]), (b + "ffn_up.weight", [d, ff]),
              (b + "ffn_down.weight", [ff, d])]
    return gguf(meta, t)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "gguf")
    os.makedirs(out, exist_ok=True)
    seeds = {
        "llama-spm.gguf": dense("llama", spm_vocab()),
        "qwen2-bpe.gguf": dense("qwen2", bpe_vocab("qwen2"), qkv_bias=True),
        "qwen3-2layers.gguf": dense("qwen3", bpe_vocab("qwen2"), qk_norm=True, n_layer=2),
        "qwen35-hybrid.gguf": qwen35(),
        "vocab-only-gpt2.gguf": gguf(bpe_vocab("gpt-2"), []),
        # issue 17: 30 million layers declared by a file of two tensors
        "absurd-block-count.gguf": gguf({"general.architecture": "qwen35", "qwen35.block_count": 30000000,
                                         "qwen35.embedding_length": 8, "qwen35.feed_forward_length": 16,
                                         "qwen35.attention.head_count": 2},
                                        [("token_embd.weight", [8, 4]), ("output_norm.weight", [8])]),
    }
    for name, blob in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(blob)


if __name__ == "__main__":
    main()
