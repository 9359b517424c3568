#!/usr/bin/env bash
# Q4_K_M speed (issue 14), two interleaved comparisons on the TinyLlama-1.1B
# shape (bench/interleave.py: the k-th repetitions of A and B back to back):
#   1. kvllm on Q4_K_M against kvllm on Q8_0 (same engine, ~40% fewer bytes);
#   2. kvllm against llama.cpp's llama-bench loop (bench/llama_gate) on the
#      same Q4_K_M file.
#
#   bench/kquant_bench.sh [--models DIR] [--threads N] [--pairs N] [--kvllm PATH]
#                         [--llama-gate PATH]
#
# Models: DIR/tinyllama-1.1b-{q4_k_m,q8_0}.gguf, written by `kvllm mkmodel
# --preset tinyllama-1.1b --type T` when missing (default bench/out/models).
# Tests: pp128 (prefill, one batch) and tg64 (decode). Not part of CI.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models=$root/bench/out/models
threads=$(nproc)
pairs=5
kvllm=$root/build/kvllm
gate=$root/bench/out/llama_gate
while (($#)); do
    case $1 in
    --models) models=${2:?}; shift 2 ;;
    --threads) threads=${2:?}; shift 2 ;;
    --pairs) pairs=${2:?}; shift 2 ;;
    --kvllm) kvllm=${2:?}; shift 2 ;;
    --llama-gate) gate=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "kquant_bench.sh: unknown flag '$1'" >&2; exit 2 ;;
    esac
done
out=$root/bench/out/kquant-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out" "$models"
for t in q4_k_m q8_0; do
    f=$models/tinyllama-1.1b-$t.gguf
    [[ -f $f ]] || "$kvllm" mkmodel --preset tinyllama-1.1b --type "$t" -o "$f" >&2
done
q4=$models/tinyllama-1.1b-q4_k_m.gguf q8=$models/tinyllama-1.1b-q8_0.gguf
flags=(-p 128 -n 64 -r "$pairs" -t "$threads")
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), threads $threads, pairs $pairs"
python3 "$root/bench/interleave.py" "$out/kv-q4km.json" "$out/kv-q8.json" \
    -- "$kvllm" bench -m "$q4" "${flags[@]}" -o json --gate \
    -- "$kvllm" bench -m "$q8" "${flags[@]}" -o json --gate >&2
python3 "$root/bench/ab_pairs.py" "$out/kv-q4km.json" "$out/kv-q8.json" "kvllm Q4_K_M" "kvllm Q8_0"
if [[ -x $gate ]]; then
    python3 "$root/bench/interleave.py" "$out/kv-q4km-2.json" "$out/llama-q4km.json" \
        -- "$kvllm" bench -m "$q4" "${flags[@]}" -o json --gate \
        -- "$gate" -m "$q4" "${flags[@]}" --gate >&2
    echo
    python3 "$root/bench/ab_pairs.py" "$out/kv-q4km-2.json" "$out/llama-q4km.json" \
        "kvllm Q4_K_M" "llama.cpp Q4_K_M"
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); results: $out"
