#!/usr/bin/env bash
# keel's qwen35 against Hugging Face transformers at a real width (issue 12, part 2).
#
# 1. scripts/qwen35_reference.py builds a random Qwen3.5 text model (hidden 1024, 8 layers of which
#    2 full attention, heads of 256 / GDN heads of 128, 16 key and 32 value heads, FFN 3584, the
#    Qwen3 vocabulary), saves it as safetensors and writes transformers' float32 log-softmax at
#    positions of a 2,000-token prompt and a 32-token greedy continuation (needs torch,
#    transformers 5.17, numpy; no network).
# 2. keel convert turns the folder into an F32 GGUF.
# 3. keel on the CPU (f32 KV cache), then with --device cuda (f16 KV cache): `keel perplexity
#    --dump-logits` for the log-softmax at those positions (prompt + continuation, teacher-forced)
#    and `keel run --temp 0 --ignore-eos` for keel's own greedy decode; scripts/qwen35_compare.py
#    checks max |Δ log-softmax| (CPU 1e-3, CUDA 2e-2) and that the 32 greedy tokens are identical.
#
# Usage: scripts/qwen35_reference.sh --tokenizer DIR [options] [-- options for qwen35_reference.py]
#   --tokenizer DIR   the Qwen3 tokenizer folder (../shared/tokenizers/qwen3 on the dev machine)
#   --out DIR         working folder (default: ${TMPDIR:-/tmp}/keel-qwen35-ref), ~4 GB: the HF folder,
#                     the GGUF, the reference and keel's logits; everything that decides is printed
#   --keel PATH       the keel binary (default: ${KEEL_BUILD_DIR:-build}/keel)
#   --python PY       the Python with torch + transformers (default: python3)
#   --cuda auto|on|off  auto (default): compare on CUDA too, but report SKIPPED when keel cannot run
#                     this model there (a usage error, exit 2, e.g. no Gated DeltaNet kernels on
#                     CUDA yet; or no CUDA in this build or machine); on: that is a failure; off: CPU only
#   --reuse           keep OUT's reference and GGUF when present (rerun only keel and the comparison)
#   --cpu-tol X / --cuda-tol X   tolerances on max |Δ log-softmax| (1e-3 / 2e-2)
# Exit status: 0 when every comparison that ran passed, 1 otherwise, 2 on usage errors.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "qwen35_reference.sh: $*" >&2; exit 2; }

tokenizer="" out="${TMPDIR:-/tmp}/keel-qwen35-ref" keel="${KEEL_BUILD_DIR:-build}/keel" python="python3" cuda="auto" reuse=0
cpu_tol="1e-3" cuda_tol="2e-2"
py_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tokenizer) tokenizer=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --keel) keel=${2:?}; shift 2 ;;
    --python) python=${2:?}; shift 2 ;;
    --cuda) cuda=${2:?}; shift 2 ;;
    --reuse) reuse=1; shift ;;
    --cpu-tol) cpu_tol=${2:?}; shift 2 ;;
    --cuda-tol) cuda_tol=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; py_args=("$@"); break ;;
    *) die "unknown argument '$1' (--help lists the options)" ;;
  esac
done
[ -n "$tokenizer" ] || die "--tokenizer DIR is required (the folder with the Qwen3 tokenizer.json)"
[ -f "$tokenizer/tokenizer.json" ] && [ -f "$tokenizer/tokenizer_config.json" ] ||
  die "$tokenizer has no tokenizer.json + tokenizer_config.json"
case "$cuda" in auto|on|off) ;; *) die "--cuda takes auto, on or off, not '$cuda'" ;; esac
[ -x "$keel" ] || die "no keel binary at $keel: build it first (cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKEEL_CUDA=ON && cmake --build build --target keel), or pass --keel PATH"
keel=$(cd "$(dirname "$keel")" && pwd)/$(basename "$keel")
mkdir -p "$out"
out=$(cd "$out" && pwd)

t_all=$(date +%s)
step_t0=0
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
step() { step_t0=$(now_ms); echo; echo "== $*"; }
done_step() { local ms=$(( $(now_ms) - step_t0 )); printf '   done in %d.%01d s\n' $(( ms / 1000 )) $(( ms % 1000 / 100 )); }

echo "keel: $("$keel" --version 2>&1 | head -n 1)"
echo "out:  $out"

# ---- 1. the transformers reference --------------------------------------------------------------
if [ "$reuse" = 1 ] && [ -f "$out/meta.json" ] && [ -f "$out/hf/config.json" ]; then
  echo; echo "== reference: reusing $out/meta.json (--reuse)"
else
  step "transformers reference ($python scripts/qwen35_reference.py)"
  "$python" -c "import torch, transformers, numpy" 2>/dev/null ||
    die "$python cannot import torch, transformers and numpy (pass --python PY)"
  rm -f "$out/meta.json"
  if ! "$python" scripts/qwen35_reference.py --tokenizer "$tokenizer" --out "$out" ${py_args[@]+"${py_args[@]}"} 2>&1 |
       tee "$out/reference.log" || [ ! -f "$out/meta.json" ]; then
    echo "qwen35_reference.sh: the reference script failed (log: $out/reference.log)" >&2
    exit 1
  fi
  rm -f "$out/model.gguf"  # a new reference: convert again
  done_step
fi
"$python" -c "import numpy" 2>/dev/null || die "$python cannot import numpy (needed by scripts/qwen35_compare.py)"
n_gen=$(wc -w < "$out/greedy.ids")

# ---- 2. keel convert -----------------------------------------------------------------------------
if [ "$reuse" = 1 ] && [ -f "$out/model.gguf" ]; then
  echo; echo "== convert: reusing $out/model.gguf (--reuse)"
else
  step "keel convert $out/hf -> $out/model.gguf (f32)"
  "$keel" convert "$out/hf" -o "$out/model.gguf" --type f32 --no-progress
  done_step
fi

# ---- 3. keel vs transformers ---------------------------------------------------------------------
# compare LABEL TOL [keel flags...]: dump logits, greedy run, compare; returns the first non-zero
# exit status. keel_failed=1 when keel itself failed (its stderr: OUT/LABEL.*.err).
keel_failed=0
compare() {
  local label=$1 tol=$2 rc=0
  shift 2
  keel_failed=0
  rm -f "$out/$label".*
  step "$label: keel perplexity --dump-logits ($(wc -w < "$out/eval.ids") tokens, $(tr ',' ' ' < "$out/dump_positions.txt" | wc -w) positions)"
  "$keel" perplexity -m "$out/model.gguf" --ids-file "$out/eval.ids" "$@" \
    --dump-logits "$out/$label.logits.f32" --logits-at "$(cat "$out/dump_positions.txt")" 2>"$out/$label.perplexity.err" || rc=$?
  sed 's/^/   /' "$out/$label.perplexity.err"
  if [ "$rc" != 0 ]; then keel_failed=1; return "$rc"; fi
  done_step
  step "$label: keel run --temp 0 --ignore-eos -n $n_gen"
  "$keel" run -m "$out/model.gguf" --ids-file "$out/prompt.ids" -n "$n_gen" --temp 0 --ignore-eos --json "$@" \
    >"$out/$label.run.json" 2>"$out/$label.run.err" || rc=$?
  sed 's/^/   /' "$out/$label.run.err"
  if [ "$rc" != 0 ]; then keel_failed=1; return "$rc"; fi
  done_step
  step "$label: compare with transformers (tolerance $tol)"
  "$python" scripts/qwen35_compare.py --ref "$out" --label "$label" --tol "$tol" \
    --logits "$out/$label.logits.f32" --run-json "$out/$label.run.json" | tee "$out/$label.compare.txt" || rc=$?
  return "$rc"
}

# The first "error:" line keel printed for LABEL (or its last line).
keel_error() { cat "$out/$1".*.err 2>/dev/null | grep -m 1 '^error:' || cat "$out/$1".*.err 2>/dev/null | tail -n 1; }

# result LABEL RC: the summary line of one comparison.
result() {
  if grep -q '^RESULT' "$out/$1.compare.txt" 2>/dev/null; then grep '^RESULT' "$out/$1.compare.txt" | sed 's/^RESULT [^:]*: //'
  elif [ "$keel_failed" = 1 ]; then echo "FAIL: keel exited with $2: $(keel_error "$1")"
  else echo "FAIL: the comparison exited with $2 (see above)"; fi
}

summary=()
status=0
rc=0
compare cpu "$cpu_tol" --device cpu --kv-type f32 --exact || rc=$?
summary+=("CPU:  $(result cpu "$rc")")
[ "$rc" = 0 ] || status=1

if [ "$cuda" = off ]; then
  summary+=("CUDA: not run (--cuda off)")
else
  rc=0
  compare cuda "$cuda_tol" --device cuda --kv-type f16 || rc=$?
  # auto: a keel that cannot run this model on CUDA (usage error, e.g. no Gated DeltaNet kernels
  # yet, or no CUDA in this build / machine) is reported, not counted as a failure.
  if [ "$rc" != 0 ] && [ "$cuda" = auto ] && [ "$keel_failed" = 1 ] &&
     { [ "$rc" = 2 ] || grep -q 'built without CUDA\|no CUDA device' "$out"/cuda.*.err; }; then
    summary+=("CUDA: SKIPPED, keel cannot run this model on CUDA here: $(keel_error cuda) (--cuda on: a failure)")
  else
    summary+=("CUDA: $(result cuda "$rc")")
    [ "$rc" = 0 ] || status=1
  fi
fi

echo
echo "== summary ($(( $(date +%s) - t_all )) s in all; files in $out)"
printf '%s\n' "${summary[@]}"
exit "$status"
