#!/usr/bin/env bash
# Installs keel (cmake --install) into a temporary prefix, moves the installed tree to another
# empty directory and runs the binary there with an empty environment: the default model is
# inside the binary, so nothing from the source or build tree is needed.
# Usage: scripts/check_install.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cmake --install "$build_dir" --prefix "$tmp/prefix" >/dev/null
for f in bin/keel share/doc/keel/README.md share/doc/keel/models/README.md share/doc/keel/models/LICENSE.stories260K; do
  [ -f "$tmp/prefix/$f" ] || { echo "check_install: $f was not installed" >&2; exit 1; }
done
mkdir "$tmp/elsewhere" "$tmp/work"
mv "$tmp/prefix" "$tmp/elsewhere/keel"
keel="$tmp/elsewhere/keel/bin/keel"

cd "$tmp/work"
run() { env -i "$keel" "$@"; }
run --version
story=$(run run -p "Once upon a time" -n 16 --temp 0 2>/dev/null)
[ -n "$story" ] || { echo "check_install: keel run printed nothing" >&2; exit 1; }
[ "$(run tokenize -p "Once upon a time")" = "1 403 407 261 378" ]
run plan -m default >/dev/null
run synth --preset qwen3-0.6b --layers 1 --type q8_0 \
  --dims n_embd=64,n_ff=128,n_head=4,n_head_kv=2,head_dim=16,n_vocab=512 -o tiny.gguf >/dev/null 2>&1
run run -m tiny.gguf -p "Once upon a time" -n 4 --temp 0 >/dev/null 2>&1
echo "check_install: the installed keel runs on its own (story: ${story:0:40}...)"
