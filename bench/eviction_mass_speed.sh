#!/usr/bin/env bash
# What h2o's attention-mass accumulation costs a decode step
# (bench/eviction_mass_speed.c): interleaved rounds, mass on / off, on the
# shared real models and on the TinyLlama-1.1B shape's attention.
#
#   bench/eviction_mass_speed.sh [BUILD_DIR=build] [ROUNDS=201] [KV_TYPE=f16]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$(cd "${1:-$ROOT/build}" && pwd)
M=${KVL_SHARED:-$ROOT/../shared}/models
OUT=$B/eviction_mass_speed
cc -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I"$ROOT/include" -I"$ROOT/src" \
    "$ROOT/bench/eviction_mass_speed.c" "$B/libkvl_kv.a" "$B/libkvl_plan.a" "$B/libkvl_model.a" \
    "$B/libkvl_kernels.a" "$B/libkvl_core.a" $(pkg-config --libs libpcre2-8) -lm -lpthread \
    -o "$OUT"
R=${2:-201}
F=${3:-f16}
"$OUT" "$R" 20 "$F" decode "$M/stories260K.bin" 500 decode "$M/babyllama105.bin" 250
"$OUT" "$((R / 4 + 1))" 2 "$F" attention 1024 attention 2048 | tail -n 2
