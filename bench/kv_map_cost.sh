#!/usr/bin/env bash
# What one KV block map costs the engine (bench/kv_map_cost.c): the lock
# time of kvl_engine_kv_map against a decode step of 16 sequences, on pools
# of 4096, 16384 and 65536 blocks. Built against a kvllm build directory.
#
#   bench/kv_map_cost.sh [BUILD_DIR=build] [ROUNDS=101]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$(cd "${1:-$ROOT/build}" && pwd)
OUT=$B/kv_map_cost
cc -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I"$ROOT/include" \
    "$ROOT/bench/kv_map_cost.c" "$B/libkvllm.a" -lxxhash -lpcre2-8 -lm -lpthread -o "$OUT"
"$OUT" "${KVL_SHARED:-$ROOT/../shared}/models/stories260K.gguf" "${2:-101}"
