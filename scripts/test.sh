#!/usr/bin/env bash
# Build kvllm and run every test twice: a Release build with gcc, then an
# ASan+UBSan build with clang that also runs each libFuzzer target for a
# bounded time; then the engine's multi-threaded stress test under clang's
# ThreadSanitizer. Warnings are errors. The last line sums all of them.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test || exit 1
jobs=$(nproc)
fuzz_seconds=${KVL_FUZZ_SECONDS:-20}
total_pass=0
total_fail=0
status=0

run_suite() { # name builddir cmake-args...
  local name=$1 dir=$2
  shift 2
  echo "=== $name ==="
  if ! cmake -S . -B "$dir" "$@" >"$dir.configure.log" 2>&1; then
    cat "$dir.configure.log"; total_fail=$((total_fail + 1)); status=1; return
  fi
  if ! cmake --build "$dir" -j"$jobs" >"$dir.build.log" 2>&1; then
    grep -E 'error|warning' "$dir.build.log" | head -50; tail -20 "$dir.build.log"
    total_fail=$((total_fail + 1)); status=1; return
  fi
  local out
  out=$(cd "$dir" && ctest --output-on-failure -j2 2>&1)
  local rc=$?
  echo "$out"
  local line
  line=$(echo "$out" | grep -E '[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' | tail -1)
  if [ -n "$line" ]; then
    local failed all
    failed=$(echo "$line" | sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\1/')
    all=$(echo "$line" | sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\2/')
    total_pass=$((total_pass + all - failed))
    total_fail=$((total_fail + failed))
  else
    total_fail=$((total_fail + 1))
  fi
  [ $rc -eq 0 ] || status=1
}

mkdir -p build build-asan
# llama.cpp's tokenizer test vocabularies for tests/test_bpe.c (not stored
# here): extracted from the npm package node-llama-cpp when npm is there
if [ -z "${KVL_LLAMACPP_VOCAB:-}" ] && command -v npm >/dev/null; then
  export KVL_LLAMACPP_VOCAB=$PWD/build/llamacpp-vocab
  [ -f "$KVL_LLAMACPP_VOCAB/ggml-vocab-qwen2.gguf.out" ] || scripts/fetch_llamacpp_vocab.sh \
    "$KVL_LLAMACPP_VOCAB" || echo "no llama.cpp vocab files: test_bpe skips its conformance part"
fi
run_suite "release (gcc)" build -DCMAKE_BUILD_TYPE=Release
run_suite "asan+ubsan+fuzz (clang)" build-asan -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Release \
  -DKVL_SANITIZE=ON -DKVL_FUZZ=ON -DKVL_FUZZ_SECONDS="$fuzz_seconds"
echo "=== threads under ThreadSanitizer (clang) ==="
if scripts/tsan.sh build-tsan; then
  total_pass=$((total_pass + 1))
else
  total_fail=$((total_fail + 1)); status=1
fi
echo "all suites: $total_pass passed, $total_fail failed"
exit $status
