#!/usr/bin/env bash
# What the prefix cache costs when nothing is shared (issue 17 (c)), measured
# where the machine's noise cannot hide it: the cache's own CPU work per
# prompt token, against the model's own compute per token.
#
#   bench/prefix_overhead.sh [KVLLM] [PAIRS] [MODEL...]
#
# 1. The scheduler and prefix cache are the same code in `kvllm sim` as in the
#    engine (the sim only prices the batches instead of computing them). A run
#    of 50,000 requests of 1,024 unique prompt tokens (no two alike: no hits)
#    with and without --prefix-cache, pairs interleaved, gives the cache's CPU
#    time per prompt token (hashing every full block, the hash-map lookups at
#    admission and inserts after each step, LRU upkeep, eviction).
# 2. `kvllm bench -p 512 -n 0` gives each MODEL's prefill time per token on
#    this machine (the cheapest a prompt token ever is; decode tokens cost more).
# The ratio of the two is the cache's share of the work. Copies to the second
# tier are timed by the engine itself (prefix_tier_seconds; see RESULTS.md).
set -euo pipefail
kvllm=${1:-build/kvllm}
pairs=${2:-5}
shift 2 || shift $#
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(../shared/models/stories260K.gguf)
reqs=50000
plen=1024
user_s() { # args... -> user CPU seconds of one sim run
  local t
  t=$({ /usr/bin/time -f '%U' "$kvllm" sim --model llama-2-7b --device A100-40GB \
    --workload "fixed:$plen,1" --rate 20 --requests $reqs --seed "$1" "${@:2}" >/dev/null; } 2>&1)
  echo "$t" | tail -1
}
echo "sim: $reqs requests x $plen unique prompt tokens, user CPU seconds, $pairs interleaved pairs"
echo "| pair | no cache, s | cache, s | cache cost, ns per prompt token |"
echo "| ---: | ---: | ---: | ---: |"
costs=()
for i in $(seq 1 "$pairs"); do
  a=$(user_s "$i")
  b=$(user_s "$i" --prefix-cache)
  c=$(python3 -c "print(f'{($b - $a) * 1e9 / ($reqs * $plen):.1f}')")
  costs+=("$c")
  echo "| $i | $a | $b | $c |"
done
python3 - "${costs[@]}" <<'EOF'
import statistics, sys
v = sorted(float(x) for x in sys.argv[1:])
print(f"median {statistics.median(v):.1f} ns per prompt token (range {v[0]:.1f} to {v[-1]:.1f})")
EOF
for m in "${models[@]}"; do
  tps=$("$kvllm" bench -m "$m" -p 512 -n 0 -r 3 -o json | python3 -c \
    "import json,sys; print([x for x in json.load(sys.stdin) if x['kind'] == 'pp'][0]['median_ts'])")
  python3 - "$m" "$tps" "${costs[@]}" <<'EOF'
import statistics, sys
m, tps = sys.argv[1], float(sys.argv[2])
v = sorted(float(x) for x in sys.argv[3:])
per_tok = 1e9 / tps
f = lambda c: 100 * c / per_tok
print(f"{m}: prefill {tps:.0f} tok/s = {per_tok:.0f} ns per token; the cache's work is "
      f"{f(statistics.median(v)):.2g}% of it (range {f(v[0]):.2g}% to {f(v[-1]):.2g}%)")
EOF
done
