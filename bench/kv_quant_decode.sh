#!/usr/bin/env bash
# Decode tokens/s at depth 4096 by KV format, side by side in interleaved
# pairs (bench/interleave.py): kvllm int8 KV against kvllm f16 KV, and kvllm
# int8 KV against llama.cpp with a q8_0 K/V cache (flash attention on, which
# llama.cpp needs for a quantized V cache), on the same GGUF.
#
# Model: TinyLlama-1.1B shape with 4 layers (per-layer weights and attention
# work per token of the full model; the untimed prefill to 4096 is 5.5x
# shorter), Q8_0, from kvllm mkmodel.
#
# Usage: bench/kv_quant_decode.sh [KVLLM] [REPS] [NLC_DIR]
#   (defaults build/kvllm, 5, /tmp/nlc; the llama.cpp pair is skipped when
#    node-llama-cpp is not installed there; it is never installed by this)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/kvllm}
reps=${2:-5}
nlc=${3:-/tmp/nlc}
out=bench/out/kvq-decode-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
model=bench/out/tinyllama-4l-q8_0.gguf
[ -f "$model" ] || "$bin" mkmodel --preset tinyllama-1.1b --layers 4 --type q8_0 -o "$model" >/dev/null
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
print(f"| tg64@d4096 | {a} | {statistics.median(v['A'] for v in ab):.2f} | {b} | "
      f"{statistics.median(v['B'] for v in ab):.2f} | {statistics.median(r):.3f} ({min(r):.3f}-{max(r):.3f}) |")
PY
}
echo "| test | A | A t/s (median) | B | B t/s (median) | A/B, median of pairs (min-max) |"
echo "|---|---|---:|---|---:|---:|"
python3 bench/interleave.py "$out/int8.json" "$out/f16.json" -- \
  "$bin" bench "${common[@]}" --kv-type int8 -- \
  "$bin" bench "${common[@]}" --kv-type f16 2>"$out/pairs1.log"
summ "kvllm int8 KV" "kvllm f16 KV" "$out/pairs1.log"
if [ -d "$nlc/node_modules/node-llama-cpp" ]; then
  python3 bench/interleave.py "$out/int8b.json" "$out/llama-q8.json" -- \
    "$bin" bench "${common[@]}" --kv-type int8 -- \
    node bench/llamacpp_bench.mjs --nlc "$nlc" "${common[@]}" -ctk q8_0 -ctv q8_0 --fa on \
    2>"$out/pairs2.log"
  summ "kvllm int8 KV" "llama.cpp q8_0 KV (fa on)" "$out/pairs2.log"
else
  echo "(llama.cpp pair skipped: no node-llama-cpp in $nlc)"
fi
