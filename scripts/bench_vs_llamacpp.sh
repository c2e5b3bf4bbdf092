#!/usr/bin/env bash
# keel vs llama.cpp on the same GGUF files, prompt sizes and threads, in one run.
# Usage: scripts/bench_vs_llamacpp.sh [-p 512,4096] [-n 64] [-t THREADS] MODEL.gguf...
# Needs node-llama-cpp 3.21.1 installed in $PEER_DIR (default /tmp/peer):
#   mkdir -p /tmp/peer && cd /tmp/peer && npm i -E node-llama-cpp@3.21.1
# llama.cpp loads the best of its CPU builds for this CPU (libggml-cpu-zen4.so on an AVX-512 Zen).
# PEER_CPU_VARIANT=haswell (its AVX2 + FMA build) makes it load that one: the script keeps a copy
# of $PEER_DIR without the builds that rank above it ($PEER_DIR-haswell). With KEEL_CPU_ISA=avx2
# on keel's side, that is AVX2 against AVX2, as on an AVX2-only CPU.
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
if [ -n "${PEER_CPU_VARIANT:-}" ]; then
  variant_dir="$peer_dir-$PEER_CPU_VARIANT"
  # ggml scores each build by the features it needs: every build needing more than this one goes
  case $PEER_CPU_VARIANT in
    haswell) above=(alderlake cannonlake cascadelake cooperlake icelake sapphirerapids skylakex zen4) ;;
    *) echo "PEER_CPU_VARIANT: only haswell is known" >&2; exit 1 ;;
  esac
  if [ ! -d "$variant_dir" ]; then  # built aside, moved into place only when whole
    rm -rf "$variant_dir.tmp"
    cp -a "$peer_dir" "$variant_dir.tmp"
    lib=$(find "$variant_dir.tmp/node_modules/@node-llama-cpp" -name "libggml-cpu-$PEER_CPU_VARIANT.so" | head -1)
    if [ -z "$lib" ]; then
      rm -rf "$variant_dir.tmp"
      echo "no libggml-cpu-$PEER_CPU_VARIANT.so in $peer_dir" >&2
      exit 1
    fi
    for v in "${above[@]}"; do rm -f "$(dirname "$lib")/libggml-cpu-$v.so"; done
    mv "$variant_dir.tmp" "$variant_dir"
  fi
  peer_dir=$variant_dir
fi
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
