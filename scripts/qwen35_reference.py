#!/usr/bin/env python3
"""A Qwen3.5 reference that keel did not write: Hugging Face transformers at a real width.

Builds a randomly initialised Qwen3.5 text model (Qwen3_5ForCausalLM, transformers 5.17) with the
real head sizes, saves it as a Hugging Face folder (safetensors + the Qwen3 tokenizer files) for
`keel convert`, and writes what transformers computes in float32 for a fixed prompt:

  OUT/hf/                      config.json, model.safetensors, tokenizer.json, tokenizer_config.json
  OUT/prompt.ids               the prompt, whitespace-separated token ids (keel --ids-file)
  OUT/eval.ids                 prompt + the greedy continuation (for a teacher-forced keel pass)
  OUT/dump_positions.txt       comma-separated positions of eval.ids whose logits keel should dump
  OUT/ref_logsoftmax.f32       [len(prompt_positions), n_vocab] log-softmax at prompt_positions
  OUT/greedy.ids               the greedy continuation (n_gen ids)
  OUT/greedy_logsoftmax.f32    [n_gen, n_vocab]: row s is the distribution greedy token s was taken
                               from (row 0: the last prompt position; row s > 0: after feeding
                               tokens 0..s-1 one at a time through the KV / recurrent cache)
  OUT/meta.json                sizes, positions, seeds, init rules, statistics, checks, versions

The .f32 files are raw little-endian float32, row-major. Position p's row is the distribution of
the token after position p. Run by scripts/qwen35_reference.sh; compared by qwen35_compare.py.

Weights (per-tensor torch.Generator on the CPU, seeded from crc32("<seed>:<name>"), float32):
  - linear weights N(0, 1/fan_in): activations keep unit scale through every projection
  - embeddings N(0, 1); lm_head N(0, (logit_std/sqrt(hidden))^2): logits of std logit_std
  - zero-centred RMSNorm weights (the model uses 1 + w) N(0, 0.1); the GDN gated norm 1 + N(0, 0.1)
  - GDN: A = exp(A_log) ~ U(0.05, 1.5), dt_bias ~ U(-3, 0.5) (per-step decay mostly 0.2-0.99,
    so the state remembers across chunks), conv1d N(0, 0.3^2), in_proj_a at half the linear std
transformers' own init (std 0.02) would give logits of std 0.02*sqrt(1024) = 0.64 over 151,669
tokens: entropy 11.7 of at most 11.9 nats, the top token at ~1e-4, a near-uniform output whose
greedy choice means little. Gaussian logits of std 3 give entropy ~6.7 nats and a top token at
~0.2 (std 4: ~3 nats, ~0.6). The default is 3, not more, because an engine's rounding errors in
the logits grow with their scale while the tolerances on |Δ log-softmax| are absolute (f16 KV and
f16 GEMM inputs on CUDA cost roughly 1e-3 x logit std per logit). meta.json and the printout give
what this model actually produces (entropy, top-1 probability, top1-top2 gaps along the greedy
path).
"""

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
import zlib


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer", required=True, help="folder with the Qwen3 tokenizer.json and tokenizer_config.json")
    p.add_argument("--out", required=True, help="output folder (created; files in it are overwritten)")
    p.add_argument("--seed", type=int, default=35)
    p.add_argument("--prompt-tokens", type=int, default=2000)
    p.add_argument("--prompt-text", help="tokenize this text file (its first --prompt-tokens tokens) instead of random ids")
    p.add_argument("--gen-tokens", type=int, default=32)
    p.add_argument("--every", type=int, default=250, help="compare positions every N tokens (plus 0, 63, 64 and the last)")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8, help="every 4th layer is full attention (3, 7, ...)")
    p.add_argument("--ffn", type=int, default=3584)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--key-heads", type=int, default=16, help="GDN key heads")
    p.add_argument("--value-heads", type=int, default=32, help="GDN value heads (32: the 4B/9B case, v-heads reordered)")
    p.add_argument("--logit-std", type=float, default=3.0, help="std of the logits (sets the lm_head init)")
    p.add_argument("--tie", action="store_true", help="tie the LM head to the embeddings (0.8B/2B style)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--no-f64-check", action="store_true", help="skip the float64 rerun that measures float32 noise")
    p.add_argument("--allow-fast-kernels", action="store_true",
                   help="let transformers use flash-linear-attention / causal-conv1d if installed (default: the "
                        "torch reference code paths)")
    return p.parse_args()


def log(msg):
    print(msg, flush=True)


class Timer:
    def __init__(self, what):
        self.what = what

    def __enter__(self):
        self.t0 = time.time()
        log(f"-- {self.what} ...")
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            log(f"   {self.what}: {time.time() - self.t0:.1f} s")


def tokenizer_vocab_size(tok_dir):
    with open(os.path.join(tok_dir, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    ids = list(tj["model"]["vocab"].values()) + [a["id"] for a in tj.get("added_tokens", [])]
    first_added = min((a["id"] for a in tj.get("added_tokens", [])), default=max(ids) + 1)
    return max(ids) + 1, first_added


def layer_types(n_layers):
    return ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(n_layers)]


def draw(torch, name, shape, seed, hidden, logit_std, tied):
    """The value of parameter `name`, by the rules in the module docstring."""
    gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{name}".encode()) + 1000003 * seed)

    def normal(std, mean=0.0):
        return torch.randn(shape, generator=gen, dtype=torch.float32) * std + mean

    def uniform(lo, hi):
        return torch.rand(shape, generator=gen, dtype=torch.float32) * (hi - lo) + lo

    if name.endswith("embed_tokens.weight"):
        return normal(logit_std / math.sqrt(hidden) if tied else 1.0)  # tied: it is the LM head too
    if name == "lm_head.weight":
        return normal(logit_std / math.sqrt(hidden))
    if name.endswith("linear_attn.norm.weight"):
        return normal(0.1, 1.0)
    if name.endswith("norm.weight"):  # input/post-attention, q/k and final norms: zero-centred
        return normal(0.1)
    if name.endswith("linear_attn.A_log"):
        return uniform(0.05, 1.5).log()
    if name.endswith("linear_attn.dt_bias"):
        return uniform(-3.0, 0.5)
    if name.endswith("linear_attn.conv1d.weight"):
        return normal(0.3)
    if name.endswith("linear_attn.in_proj_a.weight"):
        return normal(0.5 / math.sqrt(shape[1]))
    if name.endswith(".weight") and len(shape) == 2:
        return normal(1.0 / math.sqrt(shape[1]))
    raise SystemExit(f"error: no init rule for parameter {name} {tuple(shape)}; this transformers has a "
                     f"different Qwen3.5 model: extend draw() in {__file__}")


def build_model(args, torch, transformers, n_vocab):
    from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig

    cfg = Qwen3_5TextConfig(
        vocab_size=n_vocab,
        hidden_size=args.hidden,
        intermediate_size=args.ffn,
        num_hidden_layers=args.layers,
        layer_types=layer_types(args.layers),
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        head_dim=256,
        linear_conv_kernel_dim=4,
        linear_key_head_dim=128,
        linear_value_head_dim=128,
        linear_num_key_heads=args.key_heads,
        linear_num_value_heads=args.value_heads,
        hidden_act="silu",
        rms_norm_eps=1e-6,
        max_position_embeddings=32768,
        attention_bias=False,
        tie_word_embeddings=args.tie,
        rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                         "mrope_section": [11, 11, 10], "mrope_interleaved": True},
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    torch.manual_seed(args.seed)  # transformers' own init, overwritten below, is then deterministic too
    model = Qwen3_5ForCausalLM(cfg)
    model.eval()
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            p.copy_(draw(torch, name, tuple(p.shape), args.seed, args.hidden, args.logit_std, args.tie))
    try:
        model.set_attn_implementation("eager")  # the plain matmul-softmax-matmul attention
    except Exception as e:  # noqa: BLE001 - older or newer API: say so, keep the default
        log(f"   note: could not select eager attention ({e}); using {model.config._attn_implementation}")
    return model


def full_float32(torch):
    """No TF32 anywhere: float32 matmuls and convolutions stay IEEE float32. torch >= 2.9 has the
    fp32_precision settings and complains when they are mixed with the older flags."""
    if hasattr(torch.backends, "fp32_precision"):
        settings = [(torch.backends, "fp32_precision"), (torch.backends.cuda.matmul, "fp32_precision"),
                    (torch.backends.cudnn, "fp32_precision"), (torch.backends.cudnn.conv, "fp32_precision")]
        value = "ieee"
    else:
        torch.set_float32_matmul_precision("highest")
        settings = [(torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32")]
        value = False
    for obj, attr in settings:
        try:
            setattr(obj, attr, value)
        except Exception as e:  # noqa: BLE001 - say so and go on: float32 is the default on most setups
            log(f"   note: could not set {attr} = {value!r} ({e})")


def make_prompt(args, n_vocab, first_special):
    if args.prompt_text:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(os.path.join(args.tokenizer, "tokenizer.json"))
        with open(args.prompt_text, encoding="utf-8") as f:
            ids = tok.encode(f.read(), add_special_tokens=False).ids
        if len(ids) < args.prompt_tokens:
            raise SystemExit(f"error: {args.prompt_text} has {len(ids)} tokens, fewer than --prompt-tokens {args.prompt_tokens}")
        return ids[: args.prompt_tokens]
    rng = random.Random(args.seed * 7919 + 1)
    return [rng.randrange(0, first_special) for _ in range(args.prompt_tokens)]


def prompt_positions(n, every):
    pos = {0, 63, 64, n - 1}
    pos.update(range(every - 1, n, every))
    return sorted(p for p in pos if 0 <= p < n)


def write_f32(torch, path, rows):
    t = rows.detach().to("cpu", torch.float32).contiguous()
    if sys.byteorder != "little":
        raise SystemExit("error: this writer assumes a little-endian machine")
    with open(path, "wb") as f:
        f.write(t.numpy().tobytes())


def row_stats(torch, logits):
    """Per-row statistics of [rows, n_vocab] logits: std, entropy (nats), top-1 probability, top1-top2 gap."""
    lp = torch.log_softmax(logits.double(), dim=-1)
    top2 = torch.topk(logits.double(), 2, dim=-1).values
    return {
        "logit_std": logits.double().std(dim=-1).tolist(),
        "entropy": (-(lp.exp() * lp).sum(dim=-1)).tolist(),
        "top1_prob": lp.max(dim=-1).values.exp().tolist(),
        "top_gap": (top2[:, 0] - top2[:, 1]).tolist(),
    }


def main():
    args = parse_args()
    t_start = time.time()
    if not args.allow_fast_kernels:
        # transformers picks flash-linear-attention / causal-conv1d when they import; make them not
        # import so the torch code in modeling_qwen3_5.py is the reference.
        for mod in ("fla", "causal_conv1d"):
            sys.modules[mod] = None
    with Timer("import torch + transformers"):
        import torch
        import transformers
    log(f"   torch {torch.__version__}, transformers {transformers.__version__}, python {sys.version.split()[0]}")
    if not transformers.__version__.startswith("5.17"):
        log(f"   note: written against transformers 5.17; this is {transformers.__version__}")
    full_float32(torch)
    if args.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = args.device
    log(f"   device {device}" + (f" ({torch.cuda.get_device_name(torch.device(device))})" if device.startswith("cuda") else ""))

    n_vocab, first_special = tokenizer_vocab_size(args.tokenizer)
    n_prompt, n_gen = args.prompt_tokens, args.gen_tokens
    hf_dir = os.path.join(args.out, "hf")
    os.makedirs(hf_dir, exist_ok=True)

    with Timer(f"build the model (hidden {args.hidden}, {args.layers} layers, vocab {n_vocab})"):
        model = build_model(args, torch, transformers, n_vocab)
        n_params = sum(p.numel() for p in model.parameters())
        config_json = json.loads(model.config.to_json_string())
    log(f"   {n_params / 1e6:.1f} M parameters; attention {model.config._attn_implementation}; layer types "
        f"{''.join('A' if t == 'full_attention' else 'g' for t in model.config.layer_types)}")

    with Timer(f"save_pretrained + tokenizer files -> {hf_dir}"):
        model.save_pretrained(hf_dir)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(os.path.join(args.tokenizer, f), os.path.join(hf_dir, f))  # copyfile: not the read-only mode
        if not any(f.endswith(".safetensors") for f in os.listdir(hf_dir)):
            raise SystemExit(f"error: save_pretrained wrote no .safetensors file into {hf_dir}")

    prompt = make_prompt(args, n_vocab, first_special)
    positions = prompt_positions(n_prompt, args.every)
    model.to(device)
    dev = torch.device(device)

    with torch.no_grad():
        with Timer(f"prefill {n_prompt} tokens, logits at {len(positions)} positions"):
            out = model(input_ids=torch.tensor([prompt], device=dev), use_cache=True,
                        logits_to_keep=torch.tensor(positions, device=dev))
            prompt_logits = out.logits[0].float()
            cache = out.past_key_values
            prompt_lsm = torch.log_softmax(prompt_logits, dim=-1)  # float32, as transformers gives it

        with Timer(f"greedy {n_gen} tokens through the cache"):
            greedy, greedy_logits = [], [prompt_logits[-1]]
            for s in range(n_gen):
                tok = int(torch.argmax(greedy_logits[-1]))  # the first maximum on ties
                greedy.append(tok)
                if s + 1 == n_gen:
                    break
                out = model(input_ids=torch.tensor([[tok]], device=dev), past_key_values=cache, use_cache=True,
                            position_ids=torch.tensor([[n_prompt + s]], device=dev))
                cache = out.past_key_values
                greedy_logits.append(out.logits[0, -1].float())
            greedy_logits = torch.stack(greedy_logits)
            greedy_lsm = torch.log_softmax(greedy_logits, dim=-1)

        # The same trajectory in one no-cache forward: catches a cache or position bug in the
        # decode loop above, which would make the greedy reference wrong.
        eval_ids = prompt + greedy
        cont_positions = list(range(n_prompt - 1, n_prompt + n_gen - 1))
        with Timer("recompute the greedy rows without the cache"):
            out = model(input_ids=torch.tensor([eval_ids], device=dev), use_cache=False,
                        logits_to_keep=torch.tensor(cont_positions, device=dev))
            recompute_lsm = torch.log_softmax(out.logits[0].float(), dim=-1)
            cache_vs_recompute = float((recompute_lsm - greedy_lsm).abs().max())
        log(f"   cached decode vs no-cache recompute: max |d log-softmax| {cache_vs_recompute:.3g}")
        if cache_vs_recompute > 1e-2:
            raise SystemExit("error: transformers' cached decode disagrees with its own no-cache forward; the "
                             "greedy reference would be wrong")

        f64 = None
        if not args.no_f64_check:
            with Timer("float64 rerun (transformers still computes RMSNorm and the GDN kernels in float32)"):
                model.double()
                all_pos = sorted(set(positions) | set(cont_positions))
                out = model(input_ids=torch.tensor([eval_ids], device=dev), use_cache=False,
                            logits_to_keep=torch.tensor(all_pos, device=dev))
                lsm64 = torch.log_softmax(out.logits[0].double(), dim=-1)
                row = {p: i for i, p in enumerate(all_pos)}
                d_prompt = (lsm64[[row[p] for p in positions]] - prompt_lsm.double()).abs().max()
                d_greedy = (lsm64[[row[p] for p in cont_positions]] - greedy_lsm.double()).abs().max()
                argmax64 = lsm64[[row[p] for p in cont_positions]].argmax(dim=-1).tolist()
                f64 = {"max_abs_diff_prompt_rows": float(d_prompt), "max_abs_diff_greedy_rows": float(d_greedy),
                       "greedy_argmax_equal": argmax64 == greedy}
            log(f"   float32 vs float64: max |d log-softmax| prompt rows {f64['max_abs_diff_prompt_rows']:.3g}, "
                f"greedy rows {f64['max_abs_diff_greedy_rows']:.3g}; float64 greedy argmax equal: "
                f"{f64['greedy_argmax_equal']}")

    with Timer(f"write {args.out}"):
        write_f32(torch, os.path.join(args.out, "ref_logsoftmax.f32"), prompt_lsm)
        write_f32(torch, os.path.join(args.out, "greedy_logsoftmax.f32"), greedy_lsm)
        with open(os.path.join(args.out, "prompt.ids"), "w") as f:
            f.write(" ".join(map(str, prompt)) + "\n")
        with open(os.path.join(args.out, "eval.ids"), "w") as f:
            f.write(" ".join(map(str, eval_ids)) + "\n")
        with open(os.path.join(args.out, "greedy.ids"), "w") as f:
            f.write(" ".join(map(str, greedy)) + "\n")
        dump_positions = sorted(set(positions) | set(cont_positions))
        with open(os.path.join(args.out, "dump_positions.txt"), "w") as f:
            f.write(",".join(map(str, dump_positions)) + "\n")

        prompt_stats = row_stats(torch, prompt_logits)
        greedy_stats = row_stats(torch, greedy_logits)
        greedy_text = None
        try:
            from tokenizers import Tokenizer

            greedy_text = Tokenizer.from_file(os.path.join(args.tokenizer, "tokenizer.json")).decode(greedy)
        except Exception as e:  # noqa: BLE001 - the text is only for people reading meta.json
            log(f"   note: could not decode the greedy ids ({e})")
        meta = {
            "what": "transformers float32 reference for keel's qwen35 (scripts/qwen35_reference.py)",
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "python": sys.version.split()[0]},
            "device": device,
            "attn_implementation": model.config._attn_implementation,
            "fast_kernels_allowed": args.allow_fast_kernels,
            "seed": args.seed,
            "init": {"linear": "N(0, 1/fan_in)", "embed_tokens": "N(0, 1) (tied: as lm_head)", "tied": args.tie,
                     "lm_head": f"N(0, ({args.logit_std}/sqrt({args.hidden}))^2)",
                     "zero_centred_norms": "N(0, 0.1^2)", "linear_attn.norm": "1 + N(0, 0.1^2)",
                     "A_log": "log U(0.05, 1.5)", "dt_bias": "U(-3, 0.5)", "conv1d": "N(0, 0.3^2)",
                     "in_proj_a": "N(0, 0.25/fan_in)", "logit_std": args.logit_std},
            "config": config_json,
            "n_params": n_params,
            "n_vocab": n_vocab,
            "n_prompt": n_prompt,
            "n_gen": n_gen,
            "prompt_source": args.prompt_text or f"random.Random({args.seed} * 7919 + 1).randrange(0, {first_special})",
            "prompt_positions": positions,
            "continuation_positions": cont_positions,
            "dump_positions": dump_positions,
            "greedy": greedy,
            "greedy_text": greedy_text,
            "greedy_distinct_tokens": len(set(greedy)),
            "stats": {"prompt_rows": prompt_stats, "greedy_rows": greedy_stats},
            "checks": {"cache_vs_recompute_max_abs_diff": cache_vs_recompute, "float64": f64},
            "files": {"ref_logsoftmax.f32": [len(positions), n_vocab], "greedy_logsoftmax.f32": [n_gen, n_vocab]},
        }
        with open(os.path.join(args.out, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)

    gaps = greedy_stats["top_gap"]
    worst = min(range(n_gen), key=lambda s: gaps[s])
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    log(f"output distribution over {n_vocab} tokens (ln V = {math.log(n_vocab):.2f}): logit std "
        f"{mean(prompt_stats['logit_std']):.2f}, entropy {mean(prompt_stats['entropy']):.2f} nats, top-1 probability "
        f"{mean(prompt_stats['top1_prob']):.3f} (means over the prompt rows)")
    log(f"greedy: {len(set(greedy))} distinct tokens of {n_gen}; smallest top1-top2 logit gap {gaps[worst]:.3g} at "
        f"step {worst} (a keel error larger than that may flip the token there)")
    log(f"greedy ids: {greedy}")
    if len(set(greedy)) < n_gen // 2:
        log(f"warning: the greedy continuation repeats itself ({len(set(greedy))} distinct tokens of {n_gen}); "
            f"it tests little of the decode path: try another --seed or --logit-std")
    log(f"reference written to {args.out} in {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
