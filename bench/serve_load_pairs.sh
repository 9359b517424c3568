#!/usr/bin/env bash
# kvllm serve against llama.cpp's llama-server, alternating (kvllm, llama,
# kvllm, llama, ...) so that a shared machine's noise falls on both alike:
# each run starts its server fresh on the same GGUF with the same threads,
# waits for /health, replays one workload with bench/serve_load.py, stops
# the server. Prints each run and the per-pair ratios (kvllm / llama).
#
#   bench/serve_load_pairs.sh PAIRS OUTDIR WORKLOAD.jsonl [serve_load.py flags]
#
# Environment: MODEL (GGUF), THREADS (default 2), SLOTS (default 16: kvllm
# --max-seqs, llama-server -np with continuous batching), CTX (context per
# sequence, default 2048: llama-server gets -c CTX*SLOTS), KVLLM (default
# build/kvllm), LLAMA_SERVER (default
# /work/llama.cpp-src/build/bin/llama-server), KVLLM_FLAGS and LLAMA_FLAGS
# (extra flags for each). The workload comes from
#   kvllm bench serve -m MODEL ... --dump-workload WORKLOAD.jsonl
set -eu
pairs=$1 out=$2 work=$3
shift 3
root=$(cd "$(dirname "$0")/.." && pwd)
model=${MODEL:?set MODEL to the GGUF file}
threads=${THREADS:-2} slots=${SLOTS:-16} ctx=${CTX:-2048}
kvllm=${KVLLM:-$root/build/kvllm}
llama=${LLAMA_SERVER:-/work/llama.cpp-src/build/bin/llama-server}
port=${PORT:-18090}
mkdir -p "$out"

wait_health() { # PID
  for _ in $(seq 1 1200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ] && return 0
    kill -0 "$1" 2>/dev/null || return 1
    sleep 0.25
  done
  return 1
}

run() { # ARM RUN-INDEX serve_load flags...
  local arm=$1 i=$2 pid
  shift 2
  if [ "$arm" = kvllm ]; then
    # shellcheck disable=SC2086
    "$kvllm" serve -m "$model" --port "$port" -t "$threads" --max-seqs "$slots" -c "$ctx" \
      ${KVLLM_FLAGS:-} 2>"$out/$arm$i.server.log" &
  else
    # shellcheck disable=SC2086
    "$llama" -m "$model" --port "$port" -t "$threads" -tb "$threads" -np "$slots" -cb \
      -c $((ctx * slots)) ${LLAMA_FLAGS:-} >"$out/$arm$i.server.log" 2>&1 &
  fi
  pid=$!
  if ! wait_health "$pid"; then
    echo "serve_load_pairs: $arm did not become healthy; see $out/$arm$i.server.log" >&2
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    exit 1
  fi
  local extra='{}'
  [ "$arm" = llama ] && extra='{"cache_prompt": true}'
  python3 "$root/bench/serve_load.py" --url "http://127.0.0.1:$port" --workload "$work" \
    --extra "$extra" --label "$arm$i" --json "$out/$arm$i.json" "$@" >"$out/$arm$i.txt" || true
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

for i in $(seq 1 "$pairs"); do
  run kvllm "$i" "$@"
  run llama "$i" "$@"
done

python3 - "$out" "$pairs" <<'PY'
import json, statistics, sys
out, pairs = sys.argv[1], int(sys.argv[2])
cols = ("completed", "failed", "output_throughput", "p50_ttft_ms", "p99_ttft_ms", "p50_tpot_ms",
        "p99_tpot_ms", "p99_itl_ms", "p50_e2el_ms")
print("| run | " + " | ".join(cols) + " |")
print("|" + "---|" * (len(cols) + 1))
ratios = {"output_throughput": [], "p99_tpot_ms": [], "p50_ttft_ms": []}
for i in range(1, pairs + 1):
    r = {}
    for arm in ("kvllm", "llama"):
        r[arm] = json.load(open("%s/%s%d.json" % (out, arm, i)))
        print("| %s%d | " % (arm, i) + " | ".join(
            "%.1f" % r[arm][c] if isinstance(r[arm][c], float) else str(r[arm][c]) for c in cols) + " |")
    for k in ratios:
        if r["llama"][k] > 0:
            ratios[k].append(r["kvllm"][k] / r["llama"][k])
for k, v in ratios.items():
    if v:
        print("kvllm / llama %s: %s (median %.2f, min %.2f, max %.2f)" % (
            k, " ".join("%.2f" % x for x in v), statistics.median(v), min(v), max(v)))
PY
