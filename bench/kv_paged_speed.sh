#!/usr/bin/env bash
# Decode tokens/s at depth 2048 and 4096 with the paged KV cache against the
# contiguous one, f32 KV both, in one run: two `kvllm bench --gate`
# processes whose timed repetitions alternate (bench/interleave.py), so each
# pair of figures is measured back to back. Prints per-pair ratios
# paged/contiguous and their median.
#
# Model: the TinyLlama-1.1B shape (dim 2048, 32 heads, 4 KV heads of 64) with
# 4 layers instead of 22, Q8_0, written by kvllm mkmodel: per layer, the
# weights read and the attention work per token are those of the full model,
# so the ratio is the full model's, and the untimed prefill to depth 4096 is
# 5.5x shorter.
#
# Usage: bench/kv_paged_speed.sh [KVLLM] [REPS]   (default build/kvllm, 5)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/kvllm}
reps=${2:-5}
out=bench/out/paged-speed-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
# --ctx 8192: bench refuses depths past the model's context (TinyLlama's is 2048)
model=bench/out/tinyllama-4l-q8_0-ctx8k.gguf
[ -f "$model" ] || "$bin" mkmodel --preset tinyllama-1.1b --layers 4 --type q8_0 --ctx 8192 \
  -o "$model" >/dev/null
common=(-m "$model" -p 0 -n 64 -d 2048,4096 -r "$reps" -t 2 -o json --gate --kv-type f32)
python3 bench/interleave.py "$out/paged.json" "$out/contig.json" -- \
  "$bin" bench "${common[@]}" --kv-layout paged -- \
  "$bin" bench "${common[@]}" --kv-layout contiguous 2>"$out/pairs.log"
python3 - "$out" <<'PY'
import json, re, statistics, sys
out = sys.argv[1]
pairs = {}
for line in open(f"{out}/pairs.log"):
    m = re.match(r"\s+([AB]): (.+) (\d+) ([0-9.]+) t/s", line)
    if m:
        pairs.setdefault((m.group(2), int(m.group(3))), {})[m.group(1)] = float(m.group(4))
tests = sorted({t for t, _ in pairs}, key=lambda s: int(s.split("@d")[1]))
print("| test | paged t/s (median) | contiguous t/s (median) | paged/contiguous, median of pairs (min-max) |")
print("|---|---:|---:|---:|")
for t in tests:
    ab = [v for (tt, _), v in sorted(pairs.items()) if tt == t and "A" in v and "B" in v]
    r = [v["A"] / v["B"] for v in ab]
    print(f"| {t} | {statistics.median(v['A'] for v in ab):.2f} | {statistics.median(v['B'] for v in ab):.2f} "
          f"| {statistics.median(r):.3f} ({min(r):.3f}-{max(r):.3f}) |")
PY
