#!/usr/bin/env bash
# kvllm serve under hostile or heavy clients, with raw sockets (Python's
# standard library):
#   - /health is 503 "loading" while the model loads (an LD_PRELOAD fixture,
#     tests/serve_load_gate.c, holds the model's open() until the test lets
#     it go), then 200; other endpoints 503 with an error object;
#   - connections past --max-connections get 503 (Connection: close);
#   - request line and headers over 32 KiB, or over 100 header fields: 431
#     with an error object naming the limit; just under both: 200;
#   - slow-loris: a request line, headers or a body dribbled byte by byte
#     are cut at their deadlines (--keepalive-timeout, --header-timeout,
#     --body-timeout), an idle keep-alive connection is closed, and the
#     server keeps serving; /metrics counts each cut by phase;
#   - overload: 64 concurrent streaming clients against a pool that holds
#     8 full-context sequences: each ends with [DONE] or 429 (Retry-After),
#     none hangs, and afterwards /v1/kv and /metrics show every block free
#     (free blocks may still be prefix-cached);
#   - disconnects: 20 clients hang up mid-stream and 20 while queued: all
#     40 requests are cancelled and their blocks released.
# Waits poll for a state; the only clock is each deadline's upper bound
# (a dribbling client must be cut long before it would have finished).
set -u
SERVE_TMP_NAME=serve_limits
. "$(dirname "$0")/serve_common.sh"

# --- /health while loading
cc=${KVL_CC:-cc}
if "$cc" -shared -fPIC -O1 -o "$tmp/gate.so" "$src/tests/serve_load_gate.c" -ldl 2>"$tmp/cc.err"; then
  gate=$tmp/gate_open
  KVL_GATE_PATH=$model KVL_GATE_OPEN=$gate LD_PRELOAD=$tmp/gate.so ASAN_OPTIONS=verify_asan_link_order=0 \
    "$bin" serve -m "$model" --port 0 -t 1 >"$tmp/gate.out" 2>"$tmp/gate.err" &
  spid=$!; pids+=("$spid")
  port=""
  for _ in $(seq 1 600); do
    port=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$tmp/gate.err" | sed 's/.*://')
    [ -n "$port" ] && break
    sleep 0.05
  done
  h=$(curl -s -w ' %{http_code}' "http://127.0.0.1:$port/health")
  [ "$h" = '{"status":"loading"} 503' ] && ok || bad "health while loading: '$h'"
  c=$(curl -s -o "$tmp/body" -w '%{http_code}' "http://127.0.0.1:$port/v1/completions" -d '{"prompt":"x"}')
  [ "$c" = 503 ] && [ "$(py 'j["error"]["code"]' <"$tmp/body")" = loading ] && ok || bad "completion while loading: $c $(cat "$tmp/body")"
  grep -q 'kvllm serve: ready' "$tmp/gate.err" && bad "ready before the gate opened" || ok
  touch "$gate"
  h=""
  for _ in $(seq 1 600); do
    h=$(curl -s -w ' %{http_code}' "http://127.0.0.1:$port/health")
    [ "$h" = '{"status":"ok"} 200' ] && break
    sleep 0.05
  done
  [ "$h" = '{"status":"ok"} 200' ] && ok || bad "health once loaded: '$h'"
  kill -TERM "$spid"; wait "$spid" && ok || bad "gated server exit status"
else
  bad "cannot build the LD_PRELOAD fixture: $(cat "$tmp/cc.err")"
fi

# --- connection limit and read deadlines (2 s each)
start limits -m "$model" --max-connections 8 --keepalive-timeout 2 --header-timeout 2 \
  --body-timeout 2 || exit 1
python3 - "$port" >"$tmp/limits.txt" 2>&1 <<'PYEOF' && ok || { bad "connection limit / deadlines"; cat "$tmp/limits.txt"; }
import json, socket, sys, time
port = int(sys.argv[1])

def conn():
    return socket.create_connection(("127.0.0.1", port), timeout=30)

def closed(s):
    """True once the server has closed (EOF or reset); False while open."""
    s.setblocking(False)
    try:
        return s.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)

def dribble(first, pieces, what):
    """Send first, then one piece every 0.25 s; the server must cut the
    connection before the pieces run out (20 s of them, deadline 2 s)."""
    s = conn()
    s.sendall(first)
    for i, p in enumerate(pieces):
        time.sleep(0.25)
        if closed(s):
            assert i >= 2, "%s: cut after %d pieces, before any deadline could pass" % (what, i)
            print("%s: cut after %d pieces" % (what, i))
            return
        try:
            s.sendall(p)
        except OSError:
            print("%s: cut (send failed) after %d pieces" % (what, i))
            return
    sys.exit("%s: never cut" % what)

def get(path, s=None):
    s = s or conn()
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < n:
        body += s.recv(65536)
    return head.decode(), body.decode(), s

def health_until(status, why):
    """GET /health on new connections until it answers status."""
    for _ in range(200):
        head, body, s = get("/health")
        s.close()
        if " %d " % status in head.split("\r\n")[0]:
            return head, body
        time.sleep(0.02)
    sys.exit(why)

# connections past --max-connections 8: 503 with the error object, then close
hold = [conn() for _ in range(8)]
head, body = health_until(503, "never refused with 8 connections held")
j = json.loads(body)
assert j["error"]["code"] == "too_many_connections" and "--max-connections" in j["error"]["message"], j
assert "connection: close" in head.lower(), head
for h in hold:
    h.close()
health_until(200, "still refused after the connections closed")  # the server sees the 8 go
print("503 past the connection limit ok")

# slow-loris: headers, the request line, a body
dribble(b"GET /health HTTP/1.1\r\n", [b"X-Slow-%d: y\r\n" % i for i in range(80)], "headers")
dribble(b"", [bytes([c]) for c in b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"] * 3, "request line")
body = b'{"prompt":"' + b"a" * 200 + b'"}'
dribble(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body),
        [body[i:i + 1] for i in range(len(body))], "body")

# idle keep-alive: a served connection left idle is closed
head, body, s = get("/health")
assert " 200 " in head.split("\r\n")[0], head
for _ in range(400):
    if closed(s):
        print("idle keep-alive connection closed")
        break
    time.sleep(0.05)
else:
    sys.exit("idle keep-alive connection never closed")

# the server keeps serving; the cuts are counted by phase
head, body, s = get("/metrics")
cuts = {l.split('"')[1]: float(l.split()[-1]) for l in body.splitlines()
        if l.startswith("kvllm:http_deadline_closed_total{")}
assert cuts["headers"] >= 1 and cuts["body"] >= 1 and cuts["idle"] >= 2, cuts
refused = [l for l in body.splitlines() if l.startswith("kvllm:http_connections_refused_total ")]
assert refused and float(refused[0].split()[1]) >= 1, refused
print("metrics", cuts)
PYEOF
c=$(post /v1/completions '{"prompt":"Once upon a time","max_tokens":8}' | py 'j["usage"]["completion_tokens"]')
[ "$(code)" = 200 ] && [ "$c" = 8 ] && ok || bad "serving after the slow clients: $(code) $(cat "$tmp/body")"

# --- header limits (defaults: 32768 bytes of request line and headers, 100
# fields): just under works, just over is 431 with an error object naming
# the limit, also with a body waiting; the server keeps serving
python3 - "$port" >"$tmp/headers.txt" 2>&1 <<'PYEOF' && ok || { bad "header limits"; cat "$tmp/headers.txt"; }
import json, socket, sys
port = int(sys.argv[1])
def send(lines, method=b"GET", path=b"/health", body=b""):
    head = method + b" " + path + b" HTTP/1.1\r\n" + b"".join(lines)
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(20)
    s.sendall(head + b"\r\n" + body)
    got = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += d
        h, sep, b = got.partition(b"\r\n\r\n")
        cl = [l for l in h.split(b"\r\n") if l.lower().startswith(b"content-length:")]
        if sep and cl and len(b) >= int(cl[0].split(b":")[1]):
            break
    s.close()
    h, _, b = got.partition(b"\r\n\r\n")
    return len(head), int(h.split(b" ")[1]), h.decode().lower(), b
def sized(total, extra=()):  # exactly total bytes of request line and headers
    base = [b"Host: x\r\n"] + list(extra)
    n = total - len(b"GET /health HTTP/1.1\r\n") - sum(map(len, base)) - len(b"X-Big: \r\n")
    return base + [b"X-Big: " + b"a" * n + b"\r\n"]
def is431(st, head, body, limit):
    e = json.loads(body)["error"]
    assert st == 431 and "connection: close" in head, (st, head)
    assert e["code"] == "headers_too_large" and e["type"] == "invalid_request_error", e
    assert "limit of %s" % limit in e["message"], e
    return e["message"]
n, st, _, body = send(sized(32768))
assert n == 32768 and st == 200 and json.loads(body) == {"status": "ok"}, (n, st, body)
n, st, head, body = send(sized(32769))
assert n == 32769
print(is431(st, head, body, "32768 bytes"))
fields = lambda k: [b"Host: x\r\n"] + [b"X-%d: v\r\n" % i for i in range(k - 1)]
_, st, _, body = send(fields(100))
assert st == 200, (st, body)
_, st, head, body = send(fields(101))
print(is431(st, head, body, "100"))
# a completion whose headers are over: refused before its body is read
req = b'{"prompt":"Once upon a time","max_tokens":4}'
extra = [b"Content-Type: application/json\r\n", b"Content-Length: %d\r\n" % len(req)]
_, st, head, body = send(sized(40000, extra), b"POST", b"/v1/completions", req)
print(is431(st, head, body, "32768 bytes"))
_, st, _, body = send(extra + [b"Host: x\r\n"], b"POST", b"/v1/completions", req)
assert st == 200 and json.loads(body)["usage"]["completion_tokens"] == 4, (st, body)
PYEOF
[ "$(metric 'kvllm:http_responses_total{status="431"}')" = 3 ] && ok || bad "431s counted: $(metric 'kvllm:http_responses_total{status="431"}')"
kill -TERM "$spid"; wait "$spid" && ok || bad "limits server exit status"

# --- overload: a pool of exactly 8 full-context sequences (context 512,
# f32 K and V: 8 * 512 * 1280 bytes), 16 sequences at most (so the pool
# preempts), a queue of 24: 64 streaming clients
start load -m "$model" --ctx 512 --kv-mem $((8 * 512 * 1280)) --max-seqs 16 --max-queue 24 || exit 1
grep -q '= 8 full-context sequences of 512' "$tmp/load.err" && ok || bad "pool of 8 sequences: $(grep 'KV paged' "$tmp/load.err")"
python3 - "$port" >"$tmp/load.txt" 2>&1 <<'PYEOF' && ok || { bad "overload"; cat "$tmp/load.txt"; }
import http.client, json, sys, threading
port = int(sys.argv[1])
res = [None] * 64
def client(i):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        body = json.dumps({"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True,
                           "temperature": 1, "seed": i, "stream": True, "n": 1 + i % 2})
        c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status == 429:
            res[i] = "429" if r.getheader("Retry-After") == "1" else "429 without Retry-After"
            return
        if r.status != 200:
            res[i] = "status %d" % r.status
            return
        data = b""
        while True:
            chunk = r.read1(65536)
            if not chunk:
                break
            data += chunk
        ok = data.endswith(b"data: [DONE]\n\n")
        for ev in data.split(b"\n\n")[:-2]:  # every chunk is JSON in valid UTF-8
            json.loads(ev[len(b"data: "):])
        res[i] = "done" if ok else "no [DONE]: %r" % data[-80:]
    except Exception as e:
        res[i] = "error %r" % e
ts = [threading.Thread(target=client, args=(i,)) for i in range(64)]
for t in ts: t.start()
for t in ts: t.join(300)
bad = [(i, r) for i, r in enumerate(res) if r not in ("done", "429")]
print({k: res.count(k) for k in ("done", "429")})
assert res.count("done") >= 16, "fewer completions than sequences"
sys.exit("bad: %r" % bad if bad else 0)
PYEOF
wait_idle && ok || { bad "not idle after the overload"; cat "$tmp/kv.json"; }
[ "$(py 'j["pool"]["blocks_free"] == j["pool"]["blocks_total"]' <"$tmp/kv.json")" = True ] && ok || bad "ledger: blocks not all free: $(cat "$tmp/kv.json")"
[ "$(metric kvllm:kv_blocks_used)" = 0 ] && [ "$(metric kvllm:kv_blocks_free)" = "$(metric kvllm:kv_blocks_capacity)" ] && ok || bad "metrics: blocks held after the overload"
p=$(metric kvllm:num_preemptions_total)
echo "overload: $(cat "$tmp/load.txt"), preemptions $p"
kill -TERM "$spid"; wait "$spid" && ok || bad "load server exit status"

# --- disconnects: 20 streams running, 20 requests queued, all 40 hang up
# (a stories260K-shaped model with a 32768-token context, so that no stream can
# finish on its own before its client hangs up, however slow the machine)
"$bin" mkmodel --preset stories260K --ctx 32768 --seed 3 -o "$tmp/long_ctx.gguf" >/dev/null 2>&1 ||
  bad "mkmodel for the disconnect test"
start drop -m "$tmp/long_ctx.gguf" --max-seqs 20 --max-queue 40 --kv-mem 512MiB || exit 1
python3 - "$port" >"$tmp/drop.txt" 2>&1 <<'PYEOF' && ok || { bad "disconnects"; cat "$tmp/drop.txt"; }
import json, socket, sys, time, urllib.request
port = int(sys.argv[1])
url = "http://127.0.0.1:%d" % port
def metric(name):
    for line in urllib.request.urlopen(url + "/metrics").read().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
def send(stream):
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 30000, "ignore_eos": True,
                       "stream": stream}).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    return s
d0 = metric("kvllm:client_disconnects_total")
running = [send(True) for _ in range(20)]
for s in running:  # each stream has started
    got = b""
    while b"data: {" not in got:
        got += s.recv(4096)
queued = [send(i % 2 == 0) for i in range(20)]
for _ in range(3000):
    if metric("kvllm:num_requests_waiting") == 20:
        break
    time.sleep(0.01)
else:
    sys.exit("the 20 never queued: waiting %s running %s" % (metric("kvllm:num_requests_waiting"),
                                                          metric("kvllm:num_requests_running")))
assert metric("kvllm:num_requests_running") == 20
for s in running + queued:
    s.close()
for _ in range(3000):
    if metric("kvllm:client_disconnects_total") - d0 == 40 and metric("kvllm:num_requests_running") == 0 \
            and metric("kvllm:num_requests_waiting") == 0:
        break
    time.sleep(0.01)
else:
    sys.exit("not all 40 cancelled: %s" % (metric("kvllm:client_disconnects_total") - d0))
assert metric("kvllm:request_success_total") is None  # labelled only
print("40 cancelled")
PYEOF
wait_idle && ok || { bad "not idle after the disconnects"; cat "$tmp/kv.json"; }
[ "$(py 'j["pool"]["blocks_free"] == j["pool"]["blocks_total"]' <"$tmp/kv.json")" = True ] && ok || bad "ledger after the disconnects: $(cat "$tmp/kv.json")"
[ "$(metric kvllm:kv_blocks_used)" = 0 ] && ok || bad "metrics: blocks held after the disconnects"
[ "$(metric 'kvllm:request_success_total{finished_reason="abort"}')" = 40 ] && ok || bad "40 aborted: $(metric 'kvllm:request_success_total{finished_reason="abort"}')"
kill -TERM "$spid"; wait "$spid" && ok || bad "drop server exit status"

# --- SIGTERM while a large model is still loading stops the server at once
# (the model loads on its own thread; a 230 MB file with --check-tensors
# takes far longer to load than the signal takes to arrive)
if "$bin" mkmodel --preset tinyllama-1.1b --layers 2 --type q8_0 -o "$tmp/big.gguf" >/dev/null 2>&1; then
  "$bin" serve -m "$tmp/big.gguf" --port 0 --check-tensors --load huge 2>"$tmp/bigload.err" &
  bpid=$!
  for _ in $(seq 1 1000); do grep -q listening "$tmp/bigload.err" && break; sleep 0.01; done
  kill -TERM "$bpid"
  t0=$(date +%s%N)
  wait "$bpid" && ok || bad "stop while loading: exit status"
  ms=$((($(date +%s%N) - t0) / 1000000))
  grep -q "SIGTERM while loading: stopped" "$tmp/bigload.err" && ok || bad "stop while loading: $(cat "$tmp/bigload.err")"
  [ "$ms" -lt 2000 ] && ok || bad "stop while loading took $ms ms"
  rm -f "$tmp/big.gguf"
else
  bad "mkmodel for the loading test"
fi

echo "test_serve_limits: $pass passed, $fail failed"
[ "$fail" = 0 ]
