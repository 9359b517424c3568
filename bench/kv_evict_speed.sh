#!/usr/bin/env bash
# What eviction's query rotation costs attention, per KV format
# (bench/kv_evict_speed.c), built against a kvllm build directory.
#
#   bench/kv_evict_speed.sh [BUILD_DIR=build] [DEPTH=1024] [ROUNDS=21]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$(cd "${1:-$ROOT/build}" && pwd)
OUT=$B/kv_evict_speed
cc -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I"$ROOT/include" -I"$ROOT/src" \
    "$ROOT/bench/kv_evict_speed.c" "$B/libkvl_kv.a" "$B/libkvl_plan.a" "$B/libkvl_model.a" \
    "$B/libkvl_kernels.a" "$B/libkvl_core.a" -lm -lpthread -o "$OUT"
"$OUT" "${2:-1024}" "${3:-21}"
