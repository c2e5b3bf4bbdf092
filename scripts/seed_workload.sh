#!/usr/bin/env bash
# The workload keel exists for, on one NVIDIA GPU: a synthetic Qwen3.5-27B Q5_K_M, a prompt of
# 173,000 tokens, `keel run --device cuda -n 32`, under three budgets: the whole GPU, the 36 GB
# of an M4 Max, and its 27 GiB working set with a q8_0 KV cache. Each run prints its plan before
# loading and its rates after; nvidia-smi is polled every 100 ms for the device's peak. Then the
# short prompt's rate as the card sustains it (`keel bench -p 4096`, a warm-up and 20 runs: at its
# power cap, as through the long prefill; a single unwarmed run is a burst at boost clocks) and
# the whole-GPU run's prefill rate over it (issue 12 asks for at least 0.7).
#
#   scripts/seed_workload.sh [KEEL] [WORKDIR] [TOKENS] [TYPE]
#   (defaults: build/keel, /tmp/keel-seed, 173000, q5_k_m; the model is synthesized once;
#   SHORT=4096 the short prompt's tokens)
set -euo pipefail
keel=${1:-build/keel}
work=${2:-/tmp/keel-seed}
tokens=${3:-173000}
type=${4:-q5_k_m}
preset=${PRESET:-qwen35-27b}
mkdir -p "$work"
model="$work/$preset-$type.gguf"
ids="$work/prompt-$tokens.ids"

if [ ! -f "$model" ]; then
  echo "== synth $preset $type"
  start=$(date +%s.%N)
  "$keel" synth --preset "$preset" --type "$type" -o "$model" --no-progress
  end=$(date +%s.%N)
  awk -v b="$(stat -c %s "$model")" -v s="$start" -v e="$end" \
    'BEGIN { printf "synth: %.2f GB in %.1f s = %.0f MB/s\n", b / 1e9, e - s, b / 1e6 / (e - s) }'
fi
if [ ! -f "$ids" ]; then  # any ids of the vocabulary's text pieces will do: seeded, reproducible
  awk -v n="$tokens" 'BEGIN { srand(173); for (i = 0; i < n; ++i) printf "%d%s", 3 + int(rand() * 500), (i % 20 == 19 ? "\n" : " ") }' > "$ids"
fi

run_one() {  # label, extra flags...
  local label=$1
  shift
  local ctx=$((tokens + 32))
  echo "== $label: keel run --device cuda -c $ctx $*"
  "$keel" plan --device cuda -m "$model" -c "$ctx" "$@" | grep -E "^(device|session|  (weights|kv|recurrent_state|activations|total) )|verdict" || true
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$work/mem.log" &
  local poll=$!
  local start end rc=0
  start=$(date +%s.%N)
  "$keel" run --device cuda -m "$model" -c "$ctx" --ids-file "$ids" -n 32 --temp 0 --memory-report "$@" 2>&1 >"$work/out.txt" |
    grep -E "^keel:|^measured|error|refused" | tee "$work/rates.txt" || rc=$?
  end=$(date +%s.%N)
  kill "$poll" 2>/dev/null || true
  wait "$poll" 2>/dev/null || true
  awk -v s="$start" -v e="$end" -v rc="$rc" 'BEGIN { printf "wall %.1f s, exit %d\n", e - s, rc }'
  sort -n "$work/mem.log" | tail -1 | awk '{ printf "nvidia-smi peak memory.used: %d MiB = %.2f GB\n", $1, $1 * 1048576 / 1e9 }'
}

run_one "whole GPU"
long_rate=$(sed -n 's/^keel: prompt .* prefill \([0-9.]*\) tok\/s.*/\1/p' "$work/rates.txt")
run_one "M4 Max 36 GB" --budget 36GB
run_one "M4 Max working set, q8_0 KV" --budget 27GiB --kv-type q8_0

short=${SHORT:-4096}
echo "== the short prompt sustained: keel bench --device cuda -p $short -n 0 -r 20"
short_rate=$("$keel" bench --device cuda -m "$model" -p "$short" -n 0 -r 20 --json |
  python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["prefill_tok_s"])')
if [ -n "$long_rate" ]; then
  awk -v l="$long_rate" -v s="$short_rate" -v n="$tokens" -v k="$short" \
    'BEGIN { printf "prefill: %d tokens %.1f tok/s, %d tokens sustained %.1f tok/s: ratio %.3f\n", n, l, k, s, l / s }'
else
  awk -v s="$short_rate" -v k="$short" \
    'BEGIN { printf "prefill: %d tokens sustained %.1f tok/s; no ratio: the whole-GPU run gave no prefill rate (above)\n", k, s }'
fi
