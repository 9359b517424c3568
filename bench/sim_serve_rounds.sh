#!/usr/bin/env bash
# sim_serve_rounds.sh: bench/sim_serve_validate.sh ROUNDS times, one
# directory per round (OUTDIR/r1, r2, ...), then per rate and metric the
# median and range of the ratios predicted / measured over the rounds
# (bench/sim_serve_rounds.py). This machine's speed moves by 10-20% within
# minutes (bench/RESULTS.md, sim S3); one round's cell can land outside 15%
# on a swing alone, so the claim rests on the medians, with the spread.
#
#   bench/sim_serve_rounds.sh MODEL.gguf OUTDIR "RATES" N PROMPT OUTPUT ROUNDS
#   e.g. bench/sim_serve_rounds.sh /work/models/tl-q8.gguf bench/sim/serve10 "inf 1 0.5 0.2" 20 64 16 3
#
# Run it on a quiet machine. Each round's table goes to OUTDIR/rK/table.md,
# the summary to stdout and OUTDIR/summary.md.
set -eu
model=$1 out=$2 rates=$3 n=$4 pl=$5 ol=$6 rounds=$7
here=$(dirname "$0")
dirs=()
for k in $(seq 1 "$rounds"); do
    d="$out/r$k"
    mkdir -p "$d"
    { date -u +"# round $k started %Y-%m-%d %H:%M:%S UTC"; "$here/sim_serve_validate.sh" "$model" "$d" "$rates" "$n" "$pl" "$ol"; } >"$d/table.md"
    dirs+=("$d")
done
python3 "$here/sim_serve_rounds.py" "$rates" "${dirs[@]}" | tee "$out/summary.md"
