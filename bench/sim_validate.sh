#!/usr/bin/env bash
# sim_validate.sh: predicted (kvllm sim, calibrated CPU) against measured
# (kvllm bench) step times on the same model and threads.
#
#   bench/sim_validate.sh MODEL.gguf CALIB.txt BENCH.csv
#
# BENCH.csv comes from
#   kvllm bench -m MODEL.gguf -t 2 -p 128,512 -n 16 -b 1,4,16 -r 3 -o csv
# and CALIB.txt from `kvllm sim calibrate -t 2 -o CALIB.txt`, run back to
# back (the machine is shared: its rates move between runs).
# A pp test is one prefill step of P tokens: measured P / tokens-per-second;
# predicted: one request of P prompt tokens and 1 output token.
# A tg test at batch B: measured B / tokens-per-second per step; predicted:
# the mean decode step of B requests of 1 prompt + 17 output tokens (the
# bench's 16 timed steps from depth 0 run at contexts 1..17).
set -eu
model=$1 calib=$2 csv=$3
bin=${KVL_BIN:-build/kvllm}
sim="$bin sim -m $model --type q8_0 --kv-type f16 --device cpu --calib $calib --arrival burst --max-seqs 16"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
measured() { # test name -> median tokens/s
    awk -F, -v t="\"$1\"" '$11 == t { print $19 }' "$csv"
}
printf '| test | measured step (s) | predicted step (s) | predicted / measured |\n|---|---:|---:|---:|\n'
for p in 128 512; do
    $sim --workload fixed:$p,1 --requests 1 --max-batch-tokens $p --json "$tmp/j" >/dev/null
    pred=$(grep -o '"mean_step_s": [0-9.e+-]*' "$tmp/j" | awk '{print $2}')
    ts=$(measured "pp$p")
    awk -v n="pp$p" -v p="$p" -v ts="$ts" -v pr="$pred" \
        'BEGIN { m = p / ts; printf "| %s | %.3f | %.3f | %.2f |\n", n, m, pr, pr / m }'
done
for b in 1 4 16; do
    $sim --workload fixed:1,17 --requests $b --max-batch-tokens 64 --json "$tmp/j" >/dev/null
    pred=$(grep -o '"mean_decode_step_s": [0-9.e+-]*' "$tmp/j" | awk '{print $2}')
    name="tg16"
    [ "$b" -gt 1 ] && name="b$b tg16"
    ts=$(measured "$name")
    awk -v n="$name" -v b="$b" -v ts="$ts" -v pr="$pred" \
        'BEGIN { m = b / ts; printf "| %s | %.3f | %.3f | %.2f |\n", n, m, pr, pr / m }'
done
