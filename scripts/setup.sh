#!/usr/bin/env bash
# Installs the Debian packages keel needs and builds it in Release (build/).
# Usage: scripts/setup.sh [build-dir] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
shift || true

packages=(g++ cmake ninja-build pkg-config libpcre2-dev libutf8proc-dev libxxhash-dev nlohmann-json3-dev libcpp-httplib-dev libgtest-dev libbenchmark-dev
          clang libclang-rt-dev)  # clang: the fuzz build (scripts/fuzz.sh) and the clang CI step
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi

# The official openai npm client for tests/test_server_openai.cpp, at the version in
# tests/node/package-lock.json. Best effort: without node/npm (or the registry) that test
# reports itself skipped.
if command -v npm >/dev/null 2>&1 && [ ! -f tests/node/node_modules/openai/package.json ]; then
  (cd tests/node && npm ci --no-audit --no-fund --loglevel=error) ||
    echo "setup.sh: could not install the openai npm package into tests/node; its test will be skipped" >&2
fi

cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$build_dir" -j"$(nproc)"
