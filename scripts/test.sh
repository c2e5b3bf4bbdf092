#!/usr/bin/env bash
# Runs keel's whole test suite (builds first if needed). Tests read ../shared beside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${KEEL_BUILD_DIR:-build}
[ -d "$build_dir" ] || scripts/setup.sh "$build_dir"
cmake --build "$build_dir" -j"$(nproc)"
ctest --test-dir "$build_dir" --output-on-failure -j"$(nproc)"
