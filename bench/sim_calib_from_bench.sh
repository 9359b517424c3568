#!/usr/bin/env bash
# sim_calib_from_bench.sh: a CPU calibration for one model from its own
# measured steps (Vidur's way: profile the model's operators, here the
# whole step). Takes `kvllm sim calibrate`'s file (bandwidth, flops) and
# replaces its mm_s_per_byte_{1,4,16,64} points so that the sim reproduces
# `kvllm bench`'s measured steps of that model: tg at batch 1, 4 and 16
# (16 steps from depth 0) and pp64 (one 64-token prefill).
#
#   bench/sim_calib_from_bench.sh MODEL.gguf CALIB.txt BENCH.csv > MODEL_CALIB.txt
#
# BENCH.csv: kvllm bench -m MODEL.gguf -t 2 -p 64 -n 16 -b 1,4,16 -o csv
# Each point is solved exactly: the sim's step is linear in the point it
# uses (a run of the same shape as the bench test with two trial values
# gives the slope and the rest of the step), solved in the order 1, 4, 16,
# 64 so that each solve sees the points before it. The calibration's
# other terms (attention per position, per-token work, dispatches) stay in
# the solve, so the points keep only what the products take; the per-row
# sampling term (row_s_per_vocab) is left out of the solve, since `kvllm
# bench` computes logits but samples nothing, and written back after.
set -eu
model=$1 calib=$2 csv=$3
bin=${KVL_BIN:-build/kvllm}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
grep -v '^mm_s_per_byte_\|^row_s_per_vocab ' "$calib" >"$tmp/base"
row=$(awk '$1 == "row_s_per_vocab" { print $2 }' "$calib")
declare -A pt=([1]=1e-10 [4]=1e-10 [16]=1e-10 [64]=1e-9)
write() { # the calibration with the current points
    cp "$tmp/base" "$tmp/c"
    for k in 1 4 16 64; do echo "mm_s_per_byte_$k ${pt[$k]}" >>"$tmp/c"; done
}
step() { # predicted step of the bench test: $1 = workload, $2 = requests, $3 = key
    write
    $bin sim -m "$model" --type q8_0 --kv-type f16 --device cpu --calib "$tmp/c" \
        --arrival burst --max-seqs 16 --max-batch-tokens 64 --workload "$1" --requests "$2" \
        --json "$tmp/j" >/dev/null
    grep -o "\"$3\": [0-9.e+-]*" "$tmp/j" | awk '{print $2}'
}
measured() { # test name, tokens per step -> measured seconds per step
    awk -F, -v t="\"$1\"" -v n="$2" '$11 == t { print n / $19 }' "$csv"
}
solve() { # point, workload, requests, json key, measured step
    local k=$1 a b
    pt[$k]=1e-10
    a=$(step "$2" "$3" "$4")
    pt[$k]=2e-10
    b=$(step "$2" "$3" "$4")
    pt[$k]=$(awk -v a="$a" -v b="$b" -v m="$5" 'BEGIN { s = (b - a) / 1e-10; printf "%.6g", 1e-10 + (m - a) / s }')
}
solve 1 fixed:1,17 1 mean_decode_step_s "$(measured tg16 1)"
solve 4 fixed:1,17 4 mean_decode_step_s "$(measured "b4 tg16" 4)"
solve 16 fixed:1,17 16 mean_decode_step_s "$(measured "b16 tg16" 16)"
solve 64 fixed:64,1 1 mean_step_s "$(measured pp64 64)"
write
echo "# mm_s_per_byte_* solved from $csv (bench/sim_calib_from_bench.sh)"
cat "$tmp/c"
if [ -n "$row" ]; then echo "row_s_per_vocab $row"; fi
