#!/usr/bin/env bash
# Cross-builds keel's engine for AArch64 (Debian's g++-aarch64-linux-gnu and arm64 multiarch -dev
# packages, cmake/aarch64-linux-gnu.cmake, -DKEEL_ENGINE_ONLY=ON) into build-aarch64/ and runs
# its kernel and model tests (keel_kernel_tests) under qemu-aarch64-static, once per kernel level.
# Each level comes from the emulated CPU model, so the run-time detection (getauxval) is tested
# too: cortex-a72 has NEON only, neoverse-n1 adds dotprod, max adds i8mm; KEEL_CPU_ISA=generic
# gives the scalar twins.
#
# What runs (keel_kernel_tests, see CMakeLists.txt), chosen to keep CI short: at every level the
# ISA detection check and the tests of the kernels that differ at that level (each SIMD kernel
# against its scalar twin and a double-precision reference, odd sizes, 1 and 2 threads); at the
# i8mm level every kernel test (matmul, 8-bit matmul, attention, gated delta rule, ops,
# dequant/quantize) and the stories260K model against llama.cpp's greedy ids. KEEL_AARCH64_FULL=1 runs every test of
# keel_kernel_tests at the i8mm level instead, the Qwen fixture tests included (slow under qemu).
# What does not run: tests that start the keel binary (CLI, server, tools; no binfmt here), the
# tokenizer and template tests (no AArch64 code of their own). qemu checks results only: its
# timings say nothing about speed on real AArch64 hardware.
#
# Usage: scripts/test_aarch64.sh        (KEEL_AARCH64_BUILD_DIR overrides build-aarch64)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${KEEL_AARCH64_BUILD_DIR:-build-aarch64}
start=$SECONDS

packages=(g++-aarch64-linux-gnu qemu-user-static cmake ninja-build pkg-config nlohmann-json3-dev
          libpcre2-dev:arm64 libutf8proc-dev:arm64 libxxhash-dev:arm64 libgtest-dev:arm64 libcpp-httplib-dev:arm64)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  dpkg --print-foreign-architectures | grep -qx arm64 || $sudo_cmd dpkg --add-architecture arm64
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cmake -S . -B "$build_dir" -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DCMAKE_BUILD_TYPE=Release \
  -DKEEL_CUDA=OFF -DKEEL_ENGINE_ONLY=ON -DKEEL_BUILD_BENCH=OFF >/dev/null
cmake --build "$build_dir" -j"$(nproc)" --target keel_kernel_tests
echo "test_aarch64: built in $((SECONDS - start)) s"

# gtest filters. The 8-bit micro-kernel is the one kernel that differs between neon, dotprod and
# i8mm; the other NEON kernels (f32 GEMM and GEMV, attention) run at all three levels alike.
generic='CpuIsa.*:MatmulDriver.GenericMatchesReference:MatmulQ8*:GdnTwins.*:Attention.Odd*'
q8='CpuIsa.*:MatmulQ8*'
best='CpuIsa.*:Matmul*:Attention.*:Gdn*:*GdnChunkedEqualsRecurrence*:Ops.*:Dequant.*:Quantize*:QuantPack.*'
best+=':KvAndChunk/LlamaGolden.*/1:KvAndChunk/LlamaGolden.*/5'  # stories260K: f32 KV, chunks of 3 (GEMV); f16 KV, 512 (GEMM)
best+='-Attention.Bf16*'  # bf16 attention is x86-only (AVX512_BF16); its scalar twin is tested there
[ "${KEEL_AARCH64_FULL:-0}" = 1 ] && best='*'
# qemu CPU model, KEEL_CPU_ISA (- for none), the level that must be detected, gtest filter
runs=("max generic generic $generic"
      "cortex-a72 - neon $q8"
      "neoverse-n1 - dotprod $q8"
      "max - i8mm $best")
# The cross toolchain's loader with its own libc: the multiarch libc6:arm64 is also in the host's
# ld.so.cache, and a libc of another build than the loader hangs in pthread_create.
qemu=(qemu-aarch64-static -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib)
for run in "${runs[@]}"; do
  read -r cpu cap want filter <<<"$run"
  env_args=(-E KEEL_TEST_EXPECT_ISA="$want")
  [ "$cap" != "-" ] && env_args+=(-E KEEL_CPU_ISA="$cap")
  echo "test_aarch64: qemu -cpu $cpu ${env_args[*]}"
  "${qemu[@]}" -cpu "$cpu" "${env_args[@]}" "$build_dir/keel_kernel_tests" --gtest_filter="$filter" --gtest_brief=1
done
echo "test_aarch64: passed in $((SECONDS - start)) s (qemu checks results, not speed)"
