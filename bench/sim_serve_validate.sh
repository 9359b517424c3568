#!/usr/bin/env bash
# sim_serve_validate.sh: the cost model against the served engine on this
# CPU, per request rate. For each rate, `kvllm bench serve` runs the
# workload on the engine (measured), then `kvllm sim --device cpu` runs the
# SAME requests (the arrivals and lengths bench serve dumps with
# --dump-workload for its seed, as a sim trace) on the calibrated CPU
# (predicted), with two calibrations taken right before each measured run
# (the machine is shared: its rates move within minutes): A, `kvllm sim
# calibrate -m MODEL` (kernel products on one large matrix, and the served
# step's other work on the model's shape: attention per position, per-token
# kernels, per-row sampling, dispatches), and B, A with its product points
# solved from `kvllm bench` steps of this model
# (bench/sim_calib_from_bench.sh).
#
#   bench/sim_serve_validate.sh MODEL.gguf OUTDIR "RATES" N PROMPT OUTPUT
#   e.g. bench/sim_serve_validate.sh /work/models/tl-q8.gguf bench/sim/serve3 "inf 1 0.5 0.2" 10 64 16
#
# Run it on a quiet machine (nothing else compiling or benchmarking): the
# 15% target is below this machine's load swings.
#
# Compared, each cell measured / A / B (A / measured, B / measured)
# (bench/sim_serve_table.py):
#   mean step: the mean wall time of the steps that ran tokens (bench
#     serve's per-step timings: its batch_tpot buckets and mixed steps),
#     against the sim's mean step. Not duration / engine_steps: that counts
#     the idle time between arrivals at low rates, which the sim's steps
#     do not contain.
#   TTFT p50 and TPOT p50, from the scheduled arrival, as both define them.
# Per rate, OUTDIR/steps_compare_RATE.md compares the steps themselves, by
# what they ran (prefill tokens, decode tokens): the engine's
# (bench serve --steps) against each sim's (bench/sim_steps_compare.py).
set -eu
model=$1 out=$2 rates=$3 n=$4 pl=$5 ol=$6
bin=${KVL_BIN:-build/kvllm}
seed=${SEED:-0}
mkdir -p "$out"
eng="-t 2 -c 256 --max-seqs 16 --max-batch-tokens 256 --kv-type f16 --preempt recompute"
printf '| rate | load | steps: meas / A / B | mean step s | TTFT p50 s | TPOT p50 s |\n'
printf '|---|---|---|---|---|---|\n'
for r in $rates; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    echo "$load" >"$out/load_$r.txt"
    $bin sim calibrate -t 2 -m "$model" -o "$out/calib_$r.txt" >"$out/calib_$r.log" 2>&1
    $bin bench -m "$model" -t 2 -p 64 -n 16 -b 1,4,16 -r 2 -o csv >"$out/bench_$r.csv" 2>/dev/null
    bench/sim_calib_from_bench.sh "$model" "$out/calib_$r.txt" "$out/bench_$r.csv" \
        >"$out/calibB_$r.txt"
    common=(-m "$model" $eng --num-prompts "$n" --request-rate "$r" --input-len "$pl"
        --output-len "$ol" --ignore-eos -s "$seed")
    $bin bench serve "${common[@]}" --dump-workload "$out/workload_$r.jsonl" >/dev/null 2>&1
    python3 - "$out/workload_$r.jsonl" >"$out/trace_$r.txt" <<'PY'
import json, sys
print("# arrival_s prompt output (from kvllm bench serve --dump-workload)")
for line in open(sys.argv[1]):
    q = json.loads(line)
    print("%.6f %d %d" % (q["arrival_s"], len(q["prompt"]), q["max_tokens"]))
PY
    $bin bench serve "${common[@]}" -o json --steps "$out/steps_meas_$r.txt" \
        >"$out/serve_$r.json" 2>"$out/serve_$r.log"
    for c in calib calibB; do
        $bin sim -m "$model" --type q8_0 --kv-type f16 --device cpu --calib "$out/${c}_$r.txt" \
            --ctx 256 --kv-mem 256MiB --max-seqs 16 --max-batch-tokens 256 \
            --workload "trace:$out/trace_$r.txt" --json "$out/sim_${c}_$r.json" \
            --steps "$out/steps_${c}_$r.txt" \
            >"$out/sim_${c}_$r.txt" 2>&1
    done
    python3 bench/sim_serve_table.py "$out/serve_$r.json" "$out/sim_calib_$r.json" \
        "$out/sim_calibB_$r.json" "$r" "$load"
    python3 bench/sim_steps_compare.py "$out/steps_meas_$r.txt" "$out/steps_calib_$r.txt" \
        "$out/steps_calibB_$r.txt" >"$out/steps_compare_$r.md"
done
