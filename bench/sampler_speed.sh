#!/usr/bin/env bash
# What one draw of the engine's sampler costs per cut (bench/sampler_speed.c),
# built against a kvllm build directory.
#
#   bench/sampler_speed.sh [BUILD_DIR=build] [N_VOCAB=32000] [ROUNDS=41]
set -euo pipefail
. "$(dirname "$0")/lib_bench.sh"
kvl_bench_c sampler_speed "${1:-}" "${2:-32000}" "${3:-41}"
