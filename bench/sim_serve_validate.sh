#!/usr/bin/env bash
# sim_serve_validate.sh: the cost model against the served engine on this
# CPU, per request rate. For each rate, `kvllm bench serve` runs the
# workload on the engine (measured), then `kvllm sim --device cpu` runs the
# same workload shape on the calibrated CPU (predicted) with two
# calibrations taken right before each measured run (the machine is
# shared: its rates move within minutes): A, `kvllm sim calibrate` (kernel
# products on one large matrix), and B, A with its product points solved
# from `kvllm bench` steps of this model (bench/sim_calib_from_bench.sh).
#
#   bench/sim_serve_validate.sh MODEL.gguf OUTDIR "RATES" N PROMPT OUTPUT
#   e.g. bench/sim_serve_validate.sh /work/models/tl-q8.gguf bench/sim/serve "inf 1 0.5" 12 64 16
#
# Each cell: measured / predicted A / predicted B.
# Compared: mean step time (measured: run duration / engine steps;
# predicted: the sim's mean step), TTFT p50 and TPOT p50. Arrivals are
# Poisson in both, but not the same draws (bench serve and the sim have
# their own generators), except at rate inf where all arrive at t = 0.
set -eu
model=$1 out=$2 rates=$3 n=$4 pl=$5 ol=$6
bin=${KVL_BIN:-build/kvllm}
mkdir -p "$out"
eng="-t 2 -c 256 --max-seqs 16 --max-batch-tokens 256 --kv-type f16"
printf '| rate | steps: meas / A / B | mean step s: meas / A / B | TTFT p50 s: meas / A / B | TPOT p50 s: meas / A / B |\n'
printf '|---|---|---|---|---|\n'
for r in $rates; do
    $bin sim calibrate -t 2 -o "$out/calib_$r.txt" >"$out/calib_$r.log" 2>&1
    $bin bench -m "$model" -t 2 -p 64 -n 16 -b 1,4,16 -r 2 -o csv >"$out/bench_$r.csv" 2>/dev/null
    bench/sim_calib_from_bench.sh "$model" "$out/calib_$r.txt" "$out/bench_$r.csv" \
        >"$out/calibB_$r.txt"
    $bin bench serve -m "$model" $eng --num-prompts "$n" --request-rate "$r" --input-len "$pl" \
        --output-len "$ol" --ignore-eos -o json >"$out/serve_$r.json" 2>"$out/serve_$r.log"
    arr="--arrival poisson --rate $r"
    [ "$r" = inf ] && arr="--arrival burst"
    for c in calib calibB; do
        $bin sim -m "$model" --type q8_0 --kv-type f16 --device cpu --calib "$out/${c}_$r.txt" \
            --ctx 256 --kv-mem 256MiB --max-seqs 16 --max-batch-tokens 256 \
            --workload "fixed:$pl,$ol" --requests "$n" $arr --json "$out/sim_${c}_$r.json" \
            >"$out/sim_${c}_$r.txt" 2>&1
    done
    python3 - "$out/serve_$r.json" "$out/sim_calib_$r.json" "$out/sim_calibB_$r.json" "$r" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
a, b = (json.load(open(f))["results"][0] for f in sys.argv[2:4])
ms = m["duration"] / m["engine_steps"]
tt, tp = m["p50_ttft_ms"] / 1e3, m["p50_tpot_ms"] / 1e3
f = lambda x, k: "%.3f / %.3f / %.3f (B/meas %.2f)" % (x, a[k], b[k], b[k] / x if x else float("nan"))
print("| %s | %d / %d / %d | %s | %s | %s |" % (sys.argv[4], m["engine_steps"], a["steps"], b["steps"],
      f(ms, "mean_step_s"), f(tt, "ttft_p50"), f(tp, "tpot_p50")))
EOF
done
