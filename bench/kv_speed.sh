#!/usr/bin/env bash
# Attention-only decode microbenchmark per KV format at depth 4096 on the
# TinyLlama-1.1B shape (bench/kv_speed.c), built against the static
# libraries of a kvllm build directory.
#
#   bench/kv_speed.sh [BUILD_DIR=build] [DEPTH=4096] [ROUNDS=15]
#
# KVL_ISA=avx2 or scalar in the environment caps the kernels' ISA.
set -euo pipefail
. "$(dirname "$0")/lib_bench.sh"
kvl_bench_c kv_speed "${1:-}" "${2:-4096}" "${3:-15}"
