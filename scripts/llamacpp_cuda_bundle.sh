#!/usr/bin/env bash
# llama.cpp's CUDA llama-bench built on a machine without a GPU (this one: nvcc, no driver) and
# packed for the GPU machine, so the peer costs no device time to build there.
#
#   scripts/llamacpp_cuda_bundle.sh DIR
#
# DIR gets the source (../shared/tools/llamacpp-cuda.sh pack: the llama.cpp node-llama-cpp 3.21.1
# ships; needs it installed in $PEER_DIR, default /tmp/peer), its build (sm_90a, about 40 minutes
# on two cores; kept, so a second run only packs) and llama-cuda.tar.xz (bin/llama-bench and the
# libraries it loads from the build, stripped: about 41 MB). On the GPU machine:
#
#   mkdir -p /tmp/ll && tar -C /tmp/ll -xJf llama-cuda.tar.xz
#   LD_LIBRARY_PATH=/tmp/ll/lib:/usr/local/cuda/lib64 /tmp/ll/bin/llama-bench -m MODEL.gguf -ngl 99 -fa 1 -ub 2048 ...
#
# CPU code is built for AVX2 (not this machine's -march=native); the executable is linked without
# libcuda.so.1, which the GPU machine's driver provides.
set -euo pipefail
dir=$(realpath -m "${1:?a folder}")
shared_tool=$(realpath -m "$(dirname "$0")/../../shared/tools/llamacpp-cuda.sh")
export PATH=/usr/local/cuda/bin:$PATH
command -v nvcc >/dev/null || { echo "llamacpp_cuda_bundle.sh: no nvcc (looked in PATH and /usr/local/cuda/bin)" >&2; exit 1; }
src="$dir/llama" build="$dir/llama/build"
if [ ! -x "$build/bin/llama-bench" ]; then
  if [ ! -f "$dir/llama-src.tar.gz" ]; then
    [ -x "$shared_tool" ] || { echo "llamacpp_cuda_bundle.sh: $shared_tool is missing (../shared beside the checkout)" >&2; exit 1; }
    "$shared_tool" pack "$dir" >/dev/null
  fi
  [ -f "$src/CMakeLists.txt" ] || { mkdir -p "$src"; tar -xzf "$dir/llama-src.tar.gz" -C "$src"; }
  cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined >/dev/null
  cmake --build "$build" -j"$(nproc)" --target llama-bench
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/lib"
cp -L "$build/bin/llama-bench" "$tmp/bin/"
# The build's own libraries it loads (CUDA's runtime, cuBLAS and NCCL are on the GPU machine).
ldd "$build/bin/llama-bench" | awk -v b="$build/bin/" '$2 == "=>" && index($3, b) == 1 { print $1 }' |
  while read -r lib; do cp -L "$build/bin/$lib" "$tmp/lib/"; done
strip "$tmp/bin/"* "$tmp/lib/"*
tar -C "$tmp" -cf - bin lib | xz -T0 > "$dir/llama-cuda.tar.xz.part"
mv "$dir/llama-cuda.tar.xz.part" "$dir/llama-cuda.tar.xz"
ls -la "$dir/llama-cuda.tar.xz"
