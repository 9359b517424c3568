#!/usr/bin/env bash
# sim_serve_refit.sh: the cost model, with another set of the served step's
# terms, against a finished bench/sim_serve_validate.sh run (its measured
# serve JSON, its calibrations' products, its bench CSV and its traces stay
# as they were; no engine runs). Per rate: A' = the run's calib_RATE.txt
# with the terms of TERMS replacing its own; B' = A' with the product points
# solved from the run's bench_RATE.csv (bench/sim_calib_from_bench.sh, so
# the solve sees the new terms); then `kvllm sim` on trace_RATE.txt with
# each, and one table row per rate (bench/sim_serve_table.py).
#
#   bench/sim_serve_refit.sh MODEL.gguf RUNDIR TERMS OUTDIR "RATES"
#
# TERMS: lines "key value" for attn_s_per_pos, attn_head_dim,
# tok_s_per_layer, row_s_per_vocab, step_overhead_s (a calibration file's
# lines, or the quiet estimates it prints after "#quiet").
set -eu
model=$1 run=$2 terms=$3 out=$4 rates=$5
bin=${KVL_BIN:-build/kvllm}
keys='^(attn_s_per_pos|attn_head_dim|tok_s_per_layer|row_s_per_vocab|step_overhead_s) '
mkdir -p "$out"
printf '| rate | load | steps: meas / A / B | mean step s | TTFT p50 s | TPOT p50 s |\n'
printf '|---|---|---|---|---|---|\n'
for r in $rates; do
    { grep -Ev "$keys" "$run/calib_$r.txt"; grep -E "$keys" "$terms"; } >"$out/calib_$r.txt"
    bench/sim_calib_from_bench.sh "$model" "$out/calib_$r.txt" "$run/bench_$r.csv" \
        >"$out/calibB_$r.txt"
    for c in calib calibB; do
        $bin sim -m "$model" --type q8_0 --kv-type f16 --device cpu --calib "$out/${c}_$r.txt" \
            --ctx 256 --kv-mem 256MiB --max-seqs 16 --max-batch-tokens 256 \
            --workload "trace:$run/trace_$r.txt" --json "$out/sim_${c}_$r.json" \
            --steps "$out/steps_${c}_$r.txt" >"$out/sim_${c}_$r.txt" 2>&1
    done
    load=$(cat "$run/load_$r.txt" 2>/dev/null || echo -) # the run's load average, when kept
    python3 bench/sim_serve_table.py "$run/serve_$r.json" "$out/sim_calib_$r.json" \
        "$out/sim_calibB_$r.json" "$r" "$load"
done
