#!/usr/bin/env bash
# What eviction's query rotation costs attention, per KV format
# (bench/kv_evict_speed.c), built against a kvllm build directory.
#
#   bench/kv_evict_speed.sh [BUILD_DIR=build] [DEPTH=1024] [ROUNDS=21]
set -euo pipefail
. "$(dirname "$0")/lib_bench.sh"
kvl_bench_c kv_evict_speed "${1:-}" "${2:-1024}" "${3:-21}"
