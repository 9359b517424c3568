#!/usr/bin/env bash
# Attention-only decode microbenchmark per KV format at depth 4096 on the
# TinyLlama-1.1B shape (bench/kv_speed.c), built against the static
# libraries of a kvllm build directory.
#
#   bench/kv_speed.sh [BUILD_DIR=build] [DEPTH=4096] [ROUNDS=15]
#
# KVL_ISA=avx2 or scalar in the environment caps the kernels' ISA.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$(cd "${1:-$ROOT/build}" && pwd)
OUT=$B/kv_speed
cc -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I"$ROOT/include" -I"$ROOT/src" \
    "$ROOT/bench/kv_speed.c" "$B/libkvl_kv.a" "$B/libkvl_plan.a" "$B/libkvl_model.a" \
    "$B/libkvl_kernels.a" "$B/libkvl_core.a" -lm -lpthread -o "$OUT"
"$OUT" "${2:-4096}" "${3:-15}"
