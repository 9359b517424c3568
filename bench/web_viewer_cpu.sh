#!/usr/bin/env bash
# What one open page costs the server, measured as work rather than as a
# difference of two noisy decode times (bench/web_viewer.sh does that): the
# server's own CPU seconds for each call the page makes, at the page's rates
# (web/app.js: /v1/kv/map every 0.4 s, /v1/kv/history every 1 s).
#
#   bench/web_viewer_cpu.sh [CALLS] [MODEL] [serve flags...]
#
# Starts kvllm serve with an idle engine (16 sequences; the map has a cell
# for every pool block whatever holds it, so its size is the pool's), reads
# the server's utime+stime from /proc before and after CALLS calls of each
# endpoint, and subtracts the same server's CPU over the same wall time with
# no calls. Prints CPU microseconds per call and the page's share of two
# cores (the engine's threads on this machine): what it could take from
# decode at most.
set -eu
calls=${1:-2000}
src=$(cd "$(dirname "$0")/.." && pwd)
. "$src/scripts/lib_serve.sh"
bin=${KVL_BIN:-$src/build/kvllm}
model=${2:-$src/../shared/models/stories260K.gguf}
shift 2 || shift $#
tmp=$(mktemp -d)
"$bin" serve -m "$model" --port 0 --max-seqs 16 "$@" 2>"$tmp/serve.err" &
spid=$!
trap 'kill $spid 2>/dev/null; rm -rf "$tmp"' EXIT
port=$(kvl_serve_wait "$tmp/serve.err" "$spid") || { cat "$tmp/serve.err"; exit 1; }
grep "KV paged" "$tmp/serve.err" | sed 's/^kvllm serve: /pool: /'
python3 - "$port" "$spid" "$calls" <<'EOF'
import http.client, os, sys, time
port, pid, calls = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
tick = os.sysconf("SC_CLK_TCK")
def cpu():
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick  # utime + stime
conn = http.client.HTTPConnection("127.0.0.1", port)  # keep-alive, as a browser
def get(path):
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200, (path, r.status)
    return len(body)
res = {}
for path in ("/v1/kv/map", "/v1/kv/history"):
    size = get(path)
    c0, t0 = cpu(), time.perf_counter()
    for _ in range(calls):
        get(path)
    c1, t1 = cpu(), time.perf_counter()
    wall = t1 - t0
    time.sleep(wall)  # the same wall time with no calls: the idle server's own CPU
    c2 = cpu()
    per = ((c1 - c0) - (c2 - c1)) / calls
    res[path] = per
    print("%-16s %6d bytes  %5.1f us CPU per call (%d calls in %.1f s; idle server %.3f s CPU)"
          % (path, size, per * 1e6, calls, wall, c2 - c1))
page = res["/v1/kv/map"] / 0.4 + res["/v1/kv/history"] / 1.0
print("one page (map 2.5/s, history 1/s): %.5f CPU-s per second = %.3f%% of two cores"
      % (page, 100 * page / 2))
EOF
