#!/usr/bin/env bash
# Decode tokens/s at depth 4096 for every KV format (issue 6), each against
# kvllm's f16 KV in interleaved pairs (bench/interleave.py), and llama.cpp
# with its f16, q8_0 and q4_0 cache types against the kvllm format of the
# same width (f16, int8, int4), on the same GGUF in the same run.
#
# Model: TinyLlama-1.1B shape with 4 layers (per-layer weights and attention
# work per token of the full model; the untimed prefill to 4096 is 5.5x
# shorter), Q8_0, from kvllm mkmodel.
#
# Usage: bench/kv_formats_decode.sh [KVLLM] [REPS] [NLC_DIR]
#   (defaults build/kvllm, 5, /tmp/nlc; the llama.cpp pairs are skipped when
#    node-llama-cpp is not installed there; it is never installed by this)
# FORMATS (default "bf16 fp8_e4m3 int8 int4") and LLAMA (default
# "f16:f16 int8:q8_0 int4:q4_0", kvllm format:llama.cpp cache type) choose
# the pairs; FORMATS=int8 LLAMA=int8:q8_0 is the former kv_quant_decode.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/kvllm}
reps=${2:-5}
nlc=${3:-/tmp/nlc}
out=bench/out/kv-formats-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
# --ctx 8192: bench refuses depths past the model's context (TinyLlama's is 2048)
model=bench/out/tinyllama-4l-q8_0-ctx8k.gguf
[ -f "$model" ] || "$bin" mkmodel --preset tinyllama-1.1b --layers 4 --type q8_0 --ctx 8192 \
  -o "$model" >/dev/null
common=(-m "$model" -p 0 -n 64 -d 4096 -r "$reps" -t 2 -o json --gate)
summ() { # label-A label-B pairs.log
  python3 - "$1" "$2" "$3" <<'PY'
import re, statistics, sys
a, b, log = sys.argv[1:]
pairs = {}
for line in open(log):
    m = re.match(r"\s+([AB]): (.+) (\d+) ([0-9.]+) t/s", line)
    if m:
        pairs.setdefault(int(m.group(3)), {})[m.group(1)] = float(m.group(4))
ab = [v for _, v in sorted(pairs.items()) if "A" in v and "B" in v]
r = [v["A"] / v["B"] for v in ab]
print(f"| {a} | {statistics.median(v['A'] for v in ab):.2f} | {b} | "
      f"{statistics.median(v['B'] for v in ab):.2f} | {statistics.median(r):.3f} ({min(r):.3f}-{max(r):.3f}) |")
PY
}
echo "| A | A t/s (median) | B | B t/s (median) | A/B, median of pairs (min-max) |"
echo "|---|---:|---|---:|---:|"
for f in ${FORMATS:-bf16 fp8_e4m3 int8 int4}; do
  python3 bench/interleave.py "$out/$f.json" "$out/f16-$f.json" -- \
    "$bin" bench "${common[@]}" --kv-type "$f" -- \
    "$bin" bench "${common[@]}" --kv-type f16 2>"$out/pairs-$f.log"
  summ "kvllm $f KV" "kvllm f16 KV" "$out/pairs-$f.log"
done
if [ -d "$nlc/node_modules/node-llama-cpp" ]; then
  for p in ${LLAMA:-f16:f16 int8:q8_0 int4:q4_0}; do
    k=${p%%:*} l=${p##*:}
    fa=(); [ "$l" != f16 ] && fa=(--fa on)
    python3 bench/interleave.py "$out/k-$k.json" "$out/llama-$l.json" -- \
      "$bin" bench "${common[@]}" --kv-type "$k" -- \
      node bench/llamacpp_bench.mjs --nlc "$nlc" "${common[@]}" -ctk "$l" -ctv "$l" "${fa[@]}" \
      2>"$out/pairs-llama-$l.log"
    summ "kvllm $k KV" "llama.cpp $l KV${fa:+ (fa on)}" "$out/pairs-llama-$l.log"
  done
else
  echo "(llama.cpp pairs skipped: no node-llama-cpp in $nlc)"
fi
echo
echo "results: $out"
