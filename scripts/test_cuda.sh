#!/usr/bin/env bash
# Runs the CUDA tests (ctest label `cuda`) of a build with the CUDA backend. On a machine without
# a GPU every one of them reports itself SKIPPED. KEEL_SHARED names the shared data folder
# (models, golden, fixtures) when ../shared is not beside the checkout. A GPU machine without
# keel's Debian packages can run a build packed by scripts/gpu_bundle.sh instead.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${KEEL_BUILD_DIR:-build}
[ -d "$build_dir" ] || scripts/setup.sh "$build_dir" -DKEEL_CUDA=ON
cmake --build "$build_dir" -j"$(nproc)"
ctest --test-dir "$build_dir" -L cuda --output-on-failure
# Hopper runs prefill attention on wgmma kernels; the mma.sync kernels they replace there (and
# that other GPUs run) are tested again with them turned off.
KEEL_CUDA_WGMMA=0 "$build_dir"/keel_cuda_tests --gtest_filter='CudaAttention.*:CudaModels.*'
