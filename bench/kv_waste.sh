#!/usr/bin/env bash
# Build and run the KV waste benchmark (paged vs contiguous at one budget).
# Usage: bench/kv_waste.sh [kv_waste flags]   (needs a Release build in build/)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "${KVL_BUILD:-build}/libkvl_kv.a" ] || { cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build -j"$(nproc)" >/dev/null; }
libs="${KVL_BUILD:-build}/libkvl_kv.a ${KVL_BUILD:-build}/libkvl_plan.a ${KVL_BUILD:-build}/libkvl_model.a ${KVL_BUILD:-build}/libkvl_kernels.a ${KVL_BUILD:-build}/libkvl_core.a"
mkdir -p bench/out
cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc bench/kv_waste.c $libs -lpthread -lm -o bench/out/kv_waste
exec bench/out/kv_waste "$@"
