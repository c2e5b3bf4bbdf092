#!/usr/bin/env bash
# keel vs llama.cpp on the same GGUF files, prompt sizes and threads, in one run.
# Usage: scripts/bench_vs_llamacpp.sh [-p 512,4096] [-n 64] [-t THREADS] MODEL.gguf...
# Needs node-llama-cpp 3.21.1 installed in $PEER_DIR (default /tmp/peer):
#   mkdir -p /tmp/peer && cd /tmp/peer && npm i -E node-llama-cpp@3.21.1
set -euo pipefail
cd "$(dirname "$0")/.."
prompts=512 gen=64 threads=$(nproc)
while getopts "p:n:t:" o; do
  case $o in p) prompts=$OPTARG ;; n) gen=$OPTARG ;; t) threads=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
peer_dir=${PEER_DIR:-/tmp/peer}
peer=$(realpath ../shared/tools/llamacpp-peer.mjs)
[ -d "$peer_dir/node_modules/node-llama-cpp" ] || { echo "install node-llama-cpp in $peer_dir first" >&2; exit 1; }
printf "%-28s %7s %12s %12s %7s | %12s %12s %7s\n" model prompt "keel pp t/s" "llama pp t/s" ratio "keel tg t/s" "llama tg t/s" ratio
# (tg: decoding after the prompt, i.e. at depth = prompt size, for both)
for model in "$@"; do
  model=$(realpath "$model")
  IFS=, read -ra sizes <<<"$prompts"
  for p in "${sizes[@]}"; do
    # prefill of p tokens, then decode at depth p (what llama.cpp's run measures after its prompt)
    kp=$(build/keel bench -m "$model" -p "$p" -n 0 -t "$threads" -r 2 --json | jq -r '.[0].prefill_tok_s')
    kd=$(build/keel bench -m "$model" -p 0 -d "$p" -n "$gen" -t "$threads" -r 1 --json | jq -r '.[0].decode_tok_s')
    l=$(cd "$peer_dir" && node "$peer" "$model" --prompt-tokens "$p" --gen "$gen" --threads "$threads" --flash 2>/dev/null | tail -1)
    lp=$(jq -r .prefill_tok_s <<<"$l")
    ld=$(jq -r .decode_tok_s <<<"$l")
    printf "%-28s %7s %12.1f %12.1f %6.2fx | %12.1f %12.1f %6.2fx\n" "$(basename "$model")" "$p" "$kp" "$lp" \
      "$(echo "$kp / $lp" | bc -l)" "$kd" "$ld" "$(echo "$kd / $ld" | bc -l)"
  done
done
