#!/usr/bin/env bash
# Extract llama.cpp's vocabulary-only test files (models/ggml-vocab-*.gguf
# with their .inp/.out cases) from the llama.cpp source that the npm package
# node-llama-cpp ships (llama/gitRelease.bundle), for tests/test_bpe.c.
# They are llama.cpp's files: not stored in this repository.
#
#   scripts/fetch_llamacpp_vocab.sh [DIR]     (default build/llamacpp-vocab)
#
# Uses $NLC_DIR/node_modules/node-llama-cpp when present (see
# bench/build_llamacpp.sh), else `npm pack node-llama-cpp` into a temp dir.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/build/llamacpp-vocab}
names=(llama-bpe qwen2 gpt-2 starcoder refact llama-spm phi-3)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bundle=${NLC_DIR:-/tmp/nlc}/node_modules/node-llama-cpp/llama/gitRelease.bundle
if [[ ! -f $bundle ]]; then
    (cd "$tmp" && npm pack --silent node-llama-cpp >/dev/null && tar xzf node-llama-cpp-*.tgz)
    bundle=$tmp/package/llama/gitRelease.bundle
fi
git clone -q --no-checkout "$bundle" "$tmp/src"
files=()
for n in "${names[@]}"; do
    files+=("models/ggml-vocab-$n.gguf" "models/ggml-vocab-$n.gguf.inp" "models/ggml-vocab-$n.gguf.out")
done
git -C "$tmp/src" checkout -q HEAD -- "${files[@]}"
mkdir -p "$dest"
cp "${files[@]/#/$tmp/src/}" "$dest/"
echo "llama.cpp $(git -C "$tmp/src" rev-parse --short HEAD) vocab files in $dest" >&2
