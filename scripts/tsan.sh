#!/usr/bin/env bash
# Build the engine's threaded test with clang's ThreadSanitizer and run it
# (scripts/test.sh calls this as its third suite). Exit status 0 when the
# test passes with no data race reported.
set -uo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-tsan}
cmake -S . -B "$dir" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS="-fsanitize=thread" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread" >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; exit 1; }
cmake --build "$dir" -j"$(nproc)" --target test_engine_threads >"$dir.build.log" 2>&1 || { tail -30 "$dir.build.log"; exit 1; }
KVL_SHARED=${KVL_SHARED:-$(pwd)/../shared} TSAN_OPTIONS="halt_on_error=1 exitcode=66" "$dir/test_engine_threads"
