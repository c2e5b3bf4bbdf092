#!/usr/bin/env python3
"""Compares keel with the transformers reference of scripts/qwen35_reference.py (needs numpy).

  --logits FILE   `keel perplexity --ids-file REF/eval.ids --dump-logits FILE --logits-at
                  $(cat REF/dump_positions.txt)`: raw f32 logits at the prompt positions and along
                  the greedy continuation (teacher-forced through prefill)
  --run-json FILE `keel run --ids-file REF/prompt.ids -n N_GEN --temp 0 --ignore-eos --json`: keel's
                  own greedy decode (one token at a time through its caches)

Prints max |Δ log-softmax| per position and overall, top-1 agreement, and where the greedy tokens
diverge; exits 1 when the difference exceeds --tol or the greedy tokens differ, 2 on bad input.
"""

import argparse
import json
import os
import sys

import numpy as np


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def log_softmax(rows):
    x = rows.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def read_rows(path, n_rows, n_vocab, what):
    if not os.path.isfile(path):
        fail(f"{path} ({what}) is missing")
    data = np.fromfile(path, dtype="<f4")
    if data.size != n_rows * n_vocab:
        fail(f"{path} ({what}) holds {data.size} floats, expected {n_rows} x {n_vocab}")
    return data.reshape(n_rows, n_vocab)


def top2(row):
    i = np.argpartition(row, -2)[-2:]
    i = i[np.argsort(-row[i], kind="stable")]
    return int(i[0]), int(i[1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", required=True, help="the output folder of qwen35_reference.py")
    p.add_argument("--logits", required=True)
    p.add_argument("--run-json", required=True)
    p.add_argument("--tol", type=float, required=True, help="largest allowed max |Δ log-softmax|")
    p.add_argument("--label", default="keel")
    a = p.parse_args()

    with open(os.path.join(a.ref, "meta.json")) as f:
        meta = json.load(f)
    V, n_prompt, n_gen = meta["n_vocab"], meta["n_prompt"], meta["n_gen"]
    prompt_pos, dump_pos = meta["prompt_positions"], meta["dump_positions"]
    ref_prompt = read_rows(os.path.join(a.ref, "ref_logsoftmax.f32"), len(prompt_pos), V, "reference prompt rows")
    ref_greedy = read_rows(os.path.join(a.ref, "greedy_logsoftmax.f32"), n_gen, V, "reference greedy rows")
    keel = log_softmax(read_rows(a.logits, len(dump_pos), V, f"{a.label} logits"))
    prompt_row = {p: i for i, p in enumerate(prompt_pos)}

    print(f"[{a.label}] log-softmax vs transformers float32, {V} tokens, tolerance {a.tol:g}")
    print(f"  {'position':>9} {'what':<16} {'max|Δ|':>9} {'top-1 keel/ref':>15} {'ref gap':>8}")
    worst = {"prompt": 0.0, "continuation": 0.0}
    top1_miss = []
    for k, pos in enumerate(dump_pos):
        refs = []
        if pos in prompt_row:
            refs.append(("prompt", ref_prompt[prompt_row[pos]]))
        s = pos - (n_prompt - 1)
        if 0 <= s < n_gen:
            refs.append((f"continuation {s}", ref_greedy[s]))
        for what, ref in refs:
            d = float(np.abs(keel[k] - ref).max())
            worst[what.split()[0]] = max(worst[what.split()[0]], d)
            r1, r2 = top2(ref)
            k1 = int(keel[k].argmax())
            gap = float(ref[r1] - ref[r2])
            if k1 != r1:
                top1_miss.append((pos, what, k1, r1, gap))
            flag = "" if d <= a.tol else "  <-- over"
            print(f"  {pos:>9} {what:<16} {d:>9.3g} {k1:>7}/{r1:<7} {gap:>8.3g}{flag}")
    overall = max(worst.values())
    print(f"  max |Δ log-softmax|: prompt positions {worst['prompt']:.3g}, continuation (teacher-forced) "
          f"{worst['continuation']:.3g}")
    stds = meta.get("stats", {}).get("prompt_rows", {}).get("logit_std")
    if stds:
        std = sum(stds) / len(stds)
        print(f"  the reference's logits have std {std:.3g}: max |Δ| is {overall / std:.2g} of it")
    for pos, what, k1, r1, gap in top1_miss:
        print(f"  top-1 differs at {pos} ({what}): keel {k1}, reference {r1} (reference gap {gap:.3g})")

    with open(a.run_json) as f:
        run = json.load(f)
    ids = run.get("ids", [])
    want = meta["greedy"]
    if run.get("prompt_tokens") not in (None, n_prompt):
        print(f"  note: keel run saw {run.get('prompt_tokens')} prompt tokens, the reference {n_prompt}")
    diverge = next((s for s in range(min(len(ids), len(want))) if ids[s] != want[s]), None)
    if diverge is None and len(ids) != len(want):
        diverge = min(len(ids), len(want))
    if diverge is None:
        print(f"  greedy: {len(want)}/{len(want)} tokens identical")
    else:
        ref = ref_greedy[diverge]
        r1, r2 = top2(ref)
        got = ids[diverge] if diverge < len(ids) else None
        print(f"  greedy: diverges at step {diverge} of {len(want)}: keel {got}, transformers {want[diverge]}")
        print(f"    transformers' top two there: {r1} ({ref[r1]:.4f}), {r2} ({ref[r2]:.4f}), gap {ref[r1] - ref[r2]:.3g}")
        k = dump_pos.index(n_prompt - 1 + diverge) if (n_prompt - 1 + diverge) in dump_pos else None
        if k is not None and got is not None:
            print(f"    keel teacher-forced log-probs there: {got}: {keel[k][got]:.4f}, {want[diverge]}: "
                  f"{keel[k][want[diverge]]:.4f}")
        print(f"    keel ids: {ids}")
        print(f"    want:     {want}")

    ok = overall <= a.tol and diverge is None
    print(f"RESULT {a.label}: {'PASS' if ok else 'FAIL'}  max |Δ log-softmax| {overall:.3g} (tol {a.tol:g}), greedy "
          f"{(diverge if diverge is not None else len(want))}/{len(want)} identical, top-1 {len(top1_miss)} differ")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
