#!/usr/bin/env bash
# Packs a CUDA build for a GPU machine that has the NVIDIA driver but not keel's Debian packages
# (no PCRE2, utf8proc, xxHash or cpp-httplib there): the binaries, the shared libraries they load
# beyond the C and C++ runtimes, the test data the CUDA tests read, and a runner.
#
#   scripts/gpu_bundle.sh BUILD_DIR OUT_DIR [FIXTURE_PREFIX...]
#
# OUT_DIR gets keel-cuda.tar.xz (bin/: keel, keel_cuda_tests, keel_cuda_bench, stripped; lib/),
# shared/ (../shared's models and golden files, and the fixtures whose names start with a
# prefix given: tiny-qwen3- alone is 12 MB, all of them 55 MB) and run.sh. On the GPU machine,
# from anywhere:
#
#   OUT_DIR/run.sh keel_cuda_tests --gtest_filter='CudaModels.*'
#   OUT_DIR/run.sh keel bench --device cuda -m MODEL.gguf -p 512 -n 64
#
# run.sh unpacks the binaries once (under ${TMPDIR:-/tmp}, refreshed when the tarball changes),
# points the loader at lib/ and the tests at shared/ (KEEL_SHARED), then runs the command.
set -euo pipefail
build=$(realpath "${1:?build directory}")
out=$(realpath -m "${2:?output directory}")
shift 2
shared_src=$(realpath "$(dirname "$0")/../../shared")
bins=(keel keel_cuda_tests keel_cuda_bench)
for b in "${bins[@]}"; do
  [ -x "$build/$b" ] || { echo "gpu_bundle.sh: $build/$b is missing (a build with -DKEEL_CUDA=ON)" >&2; exit 1; }
done
for prefix in "$@"; do  # checked before anything is written
  compgen -G "$shared_src/fixtures/$prefix*" > /dev/null || { echo "gpu_bundle.sh: no fixture starts with $prefix" >&2; exit 1; }
done

mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/lib"
for b in "${bins[@]}"; do
  cp "$build/$b" "$tmp/bin/"
  strip "$tmp/bin/$b"
done
# Every library the binaries load but glibc's, the compiler runtimes' and the driver's, which
# the GPU machine has (a newer libstdc++ serves binaries built against an older one).
for b in "${bins[@]}"; do ldd "$build/$b"; done | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u |
  grep -vE '/(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|libcuda|ld-linux[^/]*)\.so' |
  while read -r lib; do cp -L "$lib" "$tmp/lib/"; done
tar -C "$tmp" -cJf "$out/keel-cuda.tar.xz.part" bin lib
mv "$out/keel-cuda.tar.xz.part" "$out/keel-cuda.tar.xz"

rm -rf "$out/shared"
mkdir -p "$out/shared/fixtures"
cp -r "$shared_src/models" "$shared_src/golden" "$out/shared/"
for prefix in "$@"; do cp -r "$shared_src/fixtures/$prefix"* "$out/shared/fixtures/"; done

cat > "$out/run.sh" <<'EOF'
#!/usr/bin/env bash
# Runs a command of the keel CUDA bundle beside this script (see keel's scripts/gpu_bundle.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tarball="$here/keel-cuda.tar.xz"
stamp=$(stat -c '%s-%Y' "$tarball")
dir="${TMPDIR:-/tmp}/keel-bundle-$(printf '%s' "$here" | cksum | cut -d' ' -f1)"
if [ "$(cat "$dir/.stamp" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$dir"
  mkdir -p "$dir"
  tar -C "$dir" -xJf "$tarball"
  echo "$stamp" > "$dir/.stamp"
fi
export LD_LIBRARY_PATH="$dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$dir/bin:$PATH"
export KEEL_SHARED="$here/shared"
exec "$@"
EOF
chmod +x "$out/run.sh"
du -sh "$out/keel-cuda.tar.xz" "$out/shared"
