#!/usr/bin/env bash
# Build llama.cpp's CPU libraries and llama-bench from the source that the
# npm package node-llama-cpp ships (a git bundle of the exact release its
# prebuilt binaries come from), then bench/llama_gate.c against them.
#
#   bench/build_llamacpp.sh [--nlc DIR] [--dir DIR]
#
#   --nlc DIR  node-llama-cpp install (default $NLC_DIR or /tmp/nlc), made
#              beforehand with: npm install --ignore-scripts node-llama-cpp
#   --dir DIR  where the llama.cpp checkout and its build/ go
#              (default /tmp/llama.cpp-src)
#
# Native build (-DGGML_NATIVE=ON: what a user builds on this machine), no
# network, nothing installed system-wide. Not part of CI. Prints the
# llama_gate path on the last line. About 5 minutes on 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nlc=${NLC_DIR:-/tmp/nlc}
dir=/tmp/llama.cpp-src
die() { echo "build_llamacpp.sh: $*" >&2; exit 2; }
while (($#)); do
    case $1 in
    --nlc) nlc=${2:?--nlc needs a value}; shift 2 ;;
    --dir) dir=${2:?--dir needs a value}; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown flag '$1' (see --help)" ;;
    esac
done
bundle=$nlc/node_modules/node-llama-cpp/llama/gitRelease.bundle
if [[ ! -d $dir/.git ]]; then
    [[ -f $bundle ]] || die "no llama.cpp source bundle at $bundle (install node-llama-cpp there first)"
    git clone -q "$bundle" "$dir"
fi
if [[ ! -x $dir/build/bin/llama-bench ]]; then
    cmake -S "$dir" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
    cmake --build "$dir/build" --target llama-bench -j"$(nproc)" >/dev/null
fi
mkdir -p "$root/bench/out"
gate=$root/bench/out/llama_gate
if [[ ! -x $gate || $root/bench/llama_gate.c -nt $gate || $dir/build/bin/libllama.so -nt $gate ]]; then
    cc -std=gnu11 -O2 -Wall -Wextra -o "$gate" "$root/bench/llama_gate.c" \
        -DLG_LLAMA_VERSION="\"$(git -C "$dir" rev-parse --short HEAD)\"" \
        -I"$dir/include" -I"$dir/ggml/include" -L"$dir/build/bin" \
        -lllama -lggml -lggml-base -lggml-cpu -Wl,-rpath,"$dir/build/bin" -lm
fi
echo "llama-bench: $dir/build/bin/llama-bench" >&2
echo "$gate"
