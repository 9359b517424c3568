#!/usr/bin/env bash
# What one open page costs the server: decode time at 16 concurrent streams
# with no viewer (off), with the page's polling alone (poll: node fetching
# /v1/kv/map and /v1/kv/history at the page's rates) and with a real viewer
# (browser: headless Chromium on GET /), bench/web_viewer.mjs, in one run,
# the three arms rotated pair by pair, against one kvllm serve. The load is bench/serve_load.py replaying a workload that
# `kvllm bench serve --dump-workload` wrote (16 prompts, closed loop of 16,
# ignore_eos). Prints each run's mean and P50 TPOT, the viewer's CPU
# seconds per second, and per pair the ratios to no viewer.
#
#   bench/web_viewer.sh PAIRS OUTDIR [-m MODEL] [serve flags...]
#
# Without -m it makes a random-weights 26M-parameter model with kvllm
# mkmodel (stories260K's vocabulary, dim 512, 8 layers), big enough that a
# decode step takes tens of milliseconds. Set KVL_SERVER_CPUS / KVL_VIEWER_CPUS
# (taskset lists) to keep the browser off the server's cores.
set -eu
pairs=$1 out=$2
shift 2
src=$(cd "$(dirname "$0")/.." && pwd)
. "$src/scripts/lib_serve.sh"
bin=${KVL_BIN:-$src/build/kvllm}
npmdir=${KVL_NPM_DIR:-$(dirname "$bin")/npm_browser}
mkdir -p "$out"
model=""
if [ "${1:-}" = -m ]; then model=$2; shift 2; fi
if [ -z "$model" ]; then
  model=$out/viewer26m.gguf
  [ -f "$model" ] || "$bin" mkmodel -o "$model" --preset stories260K --dim 512 --heads 8 \
    --kv-heads 8 --layers 8 --ffn 1376 --ctx 1024 >/dev/null
fi
[ -d "$npmdir/node_modules/puppeteer-core" ] || (mkdir -p "$npmdir" && cd "$npmdir" && npm install --no-audit --no-fund --silent puppeteer-core)
"$bin" bench serve -m "$model" --num-prompts 16 --input-len 64 --output-len 192 \
  --dump-workload "$out/w.jsonl" >/dev/null
pin() { local cpus=$1; shift; if [ -n "$cpus" ]; then exec taskset -c "$cpus" "$@"; else exec "$@"; fi; }  # backgrounded: exec, so kill reaches the program
pin "${KVL_SERVER_CPUS:-}" "$bin" serve -m "$model" --port 0 --max-seqs 16 "$@" 2>"$out/serve.err" &
spid=$!
vpid=""
trap 'kill $spid 2>/dev/null; [ -n "$vpid" ] && kill $vpid 2>/dev/null' EXIT
port=$(kvl_serve_wait "$out/serve.err" "$spid" 300) || { cat "$out/serve.err"; exit 1; }
url=http://127.0.0.1:$port
load() { python3 "$src/bench/serve_load.py" --url "$url" --workload "$out/w.jsonl" \
  --max-concurrency 16 --json "$out/$1.json" >/dev/null; }
load warmup
arms=(off poll browser)
for i in $(seq 1 "$pairs"); do
  # rotate the order pair by pair: off poll browser, poll browser off, ...
  for k in 0 1 2; do
    arm=${arms[$(((i - 1 + k) % 3))]}
    if [ $arm = off ]; then
      load off$i
      continue
    fi
    KVL_NPM_DIR=$npmdir pin "${KVL_VIEWER_CPUS:-}" node "$src/bench/web_viewer.mjs" "$url" $arm >"$out/$arm$i.log" 2>&1 &
    vpid=$!
    until grep -qs ready "$out/$arm$i.log"; do kill -0 $vpid || { cat "$out/$arm$i.log"; exit 1; }; sleep 0.2; done
    load $arm$i
    kill -TERM $vpid; wait $vpid || true; vpid=""
  done
done
python3 - "$out" "$pairs" <<'PY'
import json, re, statistics, sys
out, pairs = sys.argv[1], int(sys.argv[2])
ratios = {"poll": [], "browser": []}
print("pair  arm      completed  out_tok  mean_tpot_ms  p50_tpot_ms  out_tok/s  map_updates  viewer_cpu_s/s")
for i in range(1, pairs + 1):
    r = {}
    for arm in ("off", "poll", "browser"):
        d = r[arm] = json.load(open(f"{out}/{arm}{i}.json"))
        upd, cpu = "-", "-"
        if arm != "off":
            m = re.search(r"map updates (\S+) cpu_s (\S+) wall_s (\S+)", open(f"{out}/{arm}{i}.log").read())
            if m:
                upd, cpu = m.group(1), "%.2f" % (float(m.group(2)) / float(m.group(3)))
        print(f'{i:<5} {arm:<8} {d["completed"]:>9} {d["total_output_tokens"]:>8} '
              f'{d["mean_tpot_ms"]:>13.2f} {d["p50_tpot_ms"]:>12.2f} {d["output_throughput"]:>10.1f}  '
              f'{upd:>11}  {cpu:>14}')
    for arm in ratios:
        ratios[arm].append(r[arm]["mean_tpot_ms"] / r["off"]["mean_tpot_ms"])
    print(f'pair {i}: mean TPOT / no viewer: poll {ratios["poll"][-1]:.4f}, browser {ratios["browser"][-1]:.4f}')
for arm, xs in ratios.items():
    print(f"{arm}: mean TPOT ratio median {statistics.median(xs):.4f}, min {min(xs):.4f}, max {max(xs):.4f} "
          f"over {pairs} pairs")
PY
