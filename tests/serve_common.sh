# Helpers shared by the kvllm serve tests (sourced; SERVE_TMP_NAME names
# the test's scratch folder): start a server on a free port and wait for
# /health 200, post JSON with curl, poll the ledger until idle.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib_serve.sh"
bin=${KVL_BIN:?} shared=${KVL_SHARED:?}
tmp=${KVL_TMP:-/tmp}/${SERVE_TMP_NAME:?}
build=${KVL_BUILD:-$tmp}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rm -rf "$tmp"; mkdir -p "$tmp"
model=$shared/models/stories260K.gguf
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
# py EXPR: evaluate a Python expression over the JSON on stdin (as j); prints it
py() { python3 -c "import json,sys; j=json.load(sys.stdin); print(($1))"; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; }
trap cleanup EXIT

# start NAME ARGS...: start a server; sets $port and $spid (waits for /health 200)
start() {
  local name=$1; shift
  "$bin" serve --port 0 -t 1 "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  spid=$!
  pids+=("$spid")
  port=$(kvl_serve_wait "$tmp/$name.err" "$spid") && return 0
  bad "server $name did not become healthy"; cat "$tmp/$name.err"
  return 1
}
# post PATH BODY: prints the body, status code in $tmp/code
post() { curl -s -o "$tmp/body" -w '%{http_code}' -D "$tmp/headers" "http://127.0.0.1:$port$1" \
  -H 'Content-Type: application/json' -d "$2" >"$tmp/code"; cat "$tmp/body"; }
code() { cat "$tmp/code"; }
# cut_stream PATH BODY: send a streamed request, read its first chunk, hang up
cut_stream() {
  python3 - "$port" "$1" "$2" <<'PYEOF'
import socket, sys
port, path, body = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (path.encode(), len(body)) + body)
got = b""
while b"data: {" not in got:
    d = s.recv(4096)
    if not d:
        break
    got += d
s.close()
print(got.decode(errors="replace"))
PYEOF
}
# wait_idle: poll /v1/kv until no request is open and no block is used
wait_idle() {
  for _ in $(seq 1 600); do
    curl -s "http://127.0.0.1:$port/v1/kv" >"$tmp/kv.json"
    [ "$(py 'len(j["requests"]) == 0 and j["pool"]["blocks_used"] == 0 and j["pool"]["requests_running"] + j["pool"]["requests_waiting"] == 0' <"$tmp/kv.json")" = True ] && return 0
    sleep 0.1
  done
  return 1
}

# metric NAME: the value of one sample line of /metrics ("" when absent)
metric() { curl -s "http://127.0.0.1:$port/metrics" | awk -v n="$1" '$1 == n {print $2}'; }
