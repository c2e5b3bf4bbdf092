#!/usr/bin/env bash
# Builds keel's libFuzzer targets (fuzz/, clang with ASan + UBSan, in build-fuzz/) and runs
# them one at a time on one core, on top of the committed seeds in fuzz/corpus/<target>.
# Usage: scripts/fuzz.sh [TARGET|all] [SECONDS]      (default: all targets, 60 s each)
# Inputs that found new coverage go to build-fuzz/corpus/<target>; a crash, sanitizer report,
# leak, timeout or out-of-memory leaves build-fuzz/artifacts/<target>-crash-* (reproduce it with
# build-fuzz/fuzz/fuzz_<target> FILE) and makes the script exit non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-all}
seconds=${2:-60}
build_dir=${KEEL_FUZZ_BUILD_DIR:-build-fuzz}

if ! command -v clang++ >/dev/null; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq clang libclang-rt-dev
fi

targets=$(sed -n '/^set(KEEL_FUZZ_TARGETS/,/^)/{s/#.*//;p}' fuzz/CMakeLists.txt | tr -s ' ()' '\n' | grep -v -e '^set$' -e '^KEEL_FUZZ_TARGETS$' -e '^$')
[ "$target" = all ] || { grep -qx "$target" <<<"$targets" || { echo "unknown target '$target' (have: $(echo $targets))" >&2; exit 2; }; targets=$target; }

# A build folder configured already (CI's, which also builds the test suite in it) is used as it is.
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DKEEL_FUZZ=ON -DKEEL_CUDA=OFF -DKEEL_BUILD_TESTS=OFF -DKEEL_BUILD_BENCH=OFF >/dev/null
elif ! grep -q '^KEEL_FUZZ:BOOL=ON' "$build_dir/CMakeCache.txt"; then
  echo "$build_dir is not a fuzz build (KEEL_FUZZ=ON, clang); remove it or set KEEL_FUZZ_BUILD_DIR" >&2
  exit 2
fi
cmake --build "$build_dir" -j"$(nproc)" --target keel $(for t in $targets; do echo "fuzz_$t"; done)

status=0
for t in $targets; do
  mkdir -p "$build_dir/corpus/$t" "$build_dir/artifacts"
  dict=()
  [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict")
  echo "== fuzz_$t for ${seconds}s"
  # -rss_limit_mb/-malloc_limit_mb turn an input that makes keel allocate gigabytes into a finding.
  if ! "$build_dir/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 \
      -malloc_limit_mb=1024 -print_final_stats=1 -artifact_prefix="$build_dir/artifacts/$t-" \
      "${dict[@]}" "$build_dir/corpus/$t" "fuzz/corpus/$t" 2>"$build_dir/fuzz_$t.log"; then
    tail -n 60 "$build_dir/fuzz_$t.log" >&2
    status=1
  fi
  grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' \
    "$build_dir/fuzz_$t.log" || true
done
exit $status
