#!/usr/bin/env bash
# sim_serve_validate.sh: the cost model against the served engine on this
# CPU, per request rate. For each rate, `kvllm bench serve` runs the
# workload on the engine (measured), then `kvllm sim --device cpu` runs the
# SAME requests (the arrivals and lengths bench serve dumps with
# --dump-workload for its seed, as a sim trace) on the calibrated CPU
# (predicted), with `kvllm sim calibrate -m MODEL` (the model's own
# products at 1-64 tokens from real forward passes, and the served step's other work on
# its shape: attention per position, per-token kernels, per-row sampling,
# dispatches) taken twice, right before and right after the measured run
# (the machine is shared: its speed moves by 10% within minutes):
#   A:  the calibration before the run (a prediction made in advance);
#   A2: every figure the mean of before and after (what the machine was
#       like over the run).
# Both sides start warm: bench serve sends its test request first (--no-warmup turns
# it off), the sim has no cold start.
#
#   bench/sim_serve_validate.sh MODEL.gguf OUTDIR "RATES" N PROMPT OUTPUT
#   e.g. bench/sim_serve_validate.sh /work/models/tl-q8.gguf bench/sim/serveN "inf 1 0.5 0.2" 20 64 16
#
# Run it on a quiet machine (nothing else compiling or benchmarking): the
# 15% target is below this machine's load swings.
#
# Compared, each cell measured / A / A2 (A / measured, A2 / measured)
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
printf '| rate | load | steps: meas / A / A2 | mean step s | TTFT p50 s | TPOT p50 s |\n'
printf '|---|---|---|---|---|---|\n'
for r in $rates; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    echo "$load" >"$out/load_$r.txt"
    $bin sim calibrate -t 2 -m "$model" -o "$out/calib_$r.txt" >"$out/calib_$r.log" 2>&1
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
    $bin sim calibrate -t 2 -m "$model" -o "$out/calibpost_$r.txt" >"$out/calibpost_$r.log" 2>&1
    python3 - "$out/calib_$r.txt" "$out/calibpost_$r.txt" >"$out/calibB_$r.txt" <<'PY'
import sys
pre, post = ([l.split() for l in open(f) if l.strip() and not l.startswith("#")] for f in sys.argv[1:3])
print("# every figure the mean of %s (before the run) and %s (after)" % tuple(sys.argv[1:3]))
for a, b in zip(pre, post):
    assert a[0] == b[0], (a, b)
    try:
        print(a[0], "%.6g" % ((float(a[1]) + float(b[1])) / 2))
    except ValueError:
        print(" ".join(a))
PY
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
