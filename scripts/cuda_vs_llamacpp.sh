#!/usr/bin/env bash
# keel beside llama.cpp's CUDA build on this machine's GPU, as issues 11 and 12 compare them: the
# same `keel synth` files, the same tests (prefill of P tokens; 64 tokens decoded after a context of
# D), in one run on one card. Prints a markdown table of tok/s with keel / llama.cpp ratios, and
# keel's TFLOP/s and (decode) weight GB/s.
#
#   scripts/cuda_vs_llamacpp.sh KEEL LLAMA_BENCH [PRESET:TYPE ...]
#
# KEEL: the keel command, quoted if it has words (a build's keel, or "OUT/run.sh keel" for a
# scripts/gpu_bundle.sh bundle). LLAMA_BENCH: llama.cpp's llama-bench, likewise (for the bundle of
# scripts/llamacpp_cuda_bundle.sh: "env LD_LIBRARY_PATH=DIR/lib:/usr/local/cuda/lib64
# DIR/bin/llama-bench"). Models: keel synth presets and types (default qwen3-8b:q8_0
# qwen3-8b:q4_k_m), written to $DIR (default /tmp) unless already there. llama.cpp runs with the
# issues' flags, -ngl 99 -fa 1 -ub 2048 -b 2048. Environment: PROMPTS (default 4096,32768), DEPTHS
# (0,4096,32768), GEN (64; 0 skips the decode tests), REPS (1; above 1, a second table gives
# each repetition's rate in order, both tools', so a cost paid once per test shows), WARMUP (1; 0
# skips both tools' untimed first run of each test). Issue 12's 173K comparison:
#   PROMPTS=4096,173000 GEN=0 WARMUP=0 scripts/cuda_vs_llamacpp.sh KEEL LLAMA_BENCH qwen35-27b:q5_k_m
# Needs python3 (for the JSON of both tools).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,15p' "$0" >&2; exit 2; }
keel=$1 llama=$2
shift 2
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(qwen3-8b:q8_0 qwen3-8b:q4_k_m)
prompts=${PROMPTS:-4096,32768} depths=${DEPTHS:-0,4096,32768} gen=${GEN:-64} reps=${REPS:-1} dir=${DIR:-/tmp}
warm=()
[ "${WARMUP:-1}" = 0 ] && warm=(--no-warmup)
command -v python3 > /dev/null || { echo "cuda_vs_llamacpp.sh: needs python3" >&2; exit 1; }
for m in "${models[@]}"; do
  [[ $m == *:* ]] || { echo "cuda_vs_llamacpp.sh: '$m' is not PRESET:TYPE" >&2; exit 2; }
done

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for m in "${models[@]}"; do
  preset=${m%%:*} type=${m#*:}
  file=$dir/keel-$preset-$type.gguf
  if [ ! -f "$file" ]; then
    echo "synthesizing $file" >&2
    $keel synth --preset "$preset" --type "$type" -o "$file" --no-progress > /dev/null
  fi
  echo "$m: llama.cpp" >&2
  ll=(-m "$file" -ngl 99 -fa 1 -ub 2048 -b 2048 -r "$reps" -o jsonl "${warm[@]}")
  $llama "${ll[@]}" -p "$prompts" -n 0 > "$out/$m.llama.jsonl"
  [ "$gen" = 0 ] || $llama "${ll[@]}" -p 0 -n "$gen" -d "$depths" >> "$out/$m.llama.jsonl"
  echo "$m: keel" >&2
  kb=(bench --device cuda -m "$file" -r "$reps" --json "${warm[@]}")
  $keel "${kb[@]}" -p "$prompts" -n 0 > "$out/$m.keel.pp.json"
  [ "$gen" = 0 ] || $keel "${kb[@]}" -p 0 -n "$gen" -d "$depths" > "$out/$m.keel.tg.json"
done

python3 - "$out" "${models[@]}" <<'EOF'
import json, os, sys
out, models = sys.argv[1], sys.argv[2:]
samples = []
print("| model | test | keel tok/s | llama.cpp tok/s | keel / llama.cpp | keel TFLOP/s | keel weights GB/s |")
print("|---|---|---|---|---|---|---|")
for m in models:
    llama = {}
    for line in open(f"{out}/{m}.llama.jsonl"):
        if line.strip():
            r = json.loads(line)
            llama[(r["n_prompt"], r["n_gen"], r.get("n_depth", 0))] = r
    keel = {}
    for part in ("pp", "tg"):
        if not os.path.exists(f"{out}/{m}.keel.{part}.json"):  # GEN=0: no decode tests
            continue
        for r in json.load(open(f"{out}/{m}.keel.{part}.json")):
            n_prompt, n_gen = r["n_prompt"] or 0, r["n_gen"] or 0
            keel[(n_prompt, n_gen, r["depth"])] = r
    for key in sorted(keel, key=lambda k: (k[1] > 0, k[2], k[0])):
        n_prompt, n_gen, depth = key
        r = keel[key]
        test = f"pp{n_prompt}" if n_prompt else f"tg{n_gen}" + (f" @ d{depth}" if depth else "")
        mine, theirs = r["prefill_tok_s"] if n_prompt else r["decode_tok_s"], llama.get(key, {}).get("avg_ts")
        ratio = f"{mine / theirs:.2f}x" if theirs else "n/a"
        gb_s = f"{r['weights_gb_s']:,.0f}" if r.get("weights_gb_s") else ""
        print(f"| {m} | {test} | {mine:,.1f} | {f'{theirs:,.1f}' if theirs else 'missing'} | {ratio} | "
              f"{r.get('tflop_s', 0):.1f} | {gb_s} |")
        samples.append((m, test, r.get("samples_tok_s", []), llama.get(key, {}).get("samples_ts", [])))
if any(len(k) > 1 for _, _, k, _ in samples):
    print("\nEach repetition, in order (tok/s):\n")
    print("| model | test | keel | llama.cpp |")
    print("|---|---|---|---|")
    for m, test, k, l in samples:
        print(f"| {m} | {test} | {' / '.join(f'{x:,.1f}' for x in k)} | {' / '.join(f'{x:,.1f}' for x in l) or 'missing'} |")
EOF
