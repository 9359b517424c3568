#!/usr/bin/env bash
# The dashboard's endpoints of kvllm serve (GET /v1/kv/map, /v1/kv/history,
# /v1/plan) and the Grafana dashboard (docs/grafana/kvllm-dashboard.json):
#   - 401 without the key when --api-key is set, 405 for another method;
#   - the map's shapes and enumerations; cached cells after a prompt's
#     blocks were registered; no prompt text anywhere in it;
#   - while 8 streams run on a slow model: 8 holders, and the map's
#     occupancy equals /v1/kv's at the same engine step (exactly between
#     steps; during a step the map also shows the blocks reserved for it,
#     at most one per running sequence);
#   - after they finish: every cell -1 or -2, no holder, nothing shared;
#   - the history fills, `since` returns only later samples, and a sample
#     of the busy interval has tokens, TTFT and TPOT;
#   - the plan for fitting and non-fitting prompts and contexts, and 400
#     naming the parameter and its range for bad values;
#   - with the contiguous layout: the map is 501, the plan counts slots;
#   - every metric name used by every panel of the Grafana dashboard is in
#     a live /metrics (a renamed metric fails here), the JSON is importable
#     (inputs, uid, schemaVersion, gridPos), and promtool parses every
#     expression (skipped with a line when promtool is missing).
# Nothing here asserts timing: waits poll for a state.
set -u
SERVE_TMP_NAME=serve_dash
. "$(dirname "$0")/serve_common.sh"

key=dash-key
# get PATH: GET with the key; prints the body, the status in $tmp/code
get() { curl -s -o "$tmp/body" -w '%{http_code}' -H "Authorization: Bearer $key" \
  "http://127.0.0.1:$port$1" >"$tmp/code"; cat "$tmp/body"; }
# check NAME PYTHON: run PYTHON (reads $tmp/*.json files itself); ok or bad NAME
check() { if python3 -c "$2" >"$tmp/check.out" 2>&1; then ok; else bad "$1"; cat "$tmp/check.out"; fi; }

# ---- a small server: stories260K, 16 blocks of 16, a swap area of 5 blocks
start small -m "$model" -c 256 --kv-mem 320KiB --swap-mem 100KiB --api-key "$key" || exit 1

for p in /v1/kv/map /v1/kv/history /v1/plan; do
  c=$(curl -s -o "$tmp/body" -w '%{http_code}' "http://127.0.0.1:$port$p")
  [ "$c" = 401 ] && grep -q invalid_api_key "$tmp/body" && ok || bad "$p without the key: $c"
  c=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer wrong" "http://127.0.0.1:$port$p")
  [ "$c" = 401 ] && ok || bad "$p with a wrong key: $c"
  get "$p" >/dev/null
  [ "$(code)" = 200 ] && ok || bad "$p with the key: $(code)"
done
c=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $key" "http://127.0.0.1:$port/v1/kv/map")
[ "$c" = 405 ] && ok || bad "POST /v1/kv/map: $c"

get /v1/kv/map >"$tmp/map0.json"
check "idle map shape" "
import json
m = json.load(open('$tmp/map0.json'))
for k in ['t', 'block_size', 'block_bytes', 'n_blocks', 'cells', 'shared', 'holders', 'swap',
          'occupancy', 'n_used', 'n_cached', 'n_free', 'n_shared', 'steps', 'in_step']:
    assert k in m, k
assert m['n_blocks'] == 16 == len(m['cells']) and m['block_size'] == 16, m
assert m['block_bytes'] == 16 * 1280
assert m['cells'] == [-1] * 16 and m['shared'] == [] and m['holders'] == []
assert m['swap']['n_blocks'] == 5 == len(m['swap']['cells']) and m['swap']['cells'] == [-1] * 5
assert m['occupancy'] == 0 and (m['n_used'], m['n_cached'], m['n_free']) == (0, 0, 16)
"

# a prompt of three full blocks and more: its full blocks stay cached after it ends
long='Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball.'
curl -s -H "Authorization: Bearer $key" "http://127.0.0.1:$port/v1/completions" \
  -d "{\"prompt\":\"$long\",\"max_tokens\":8,\"temperature\":0}" >"$tmp/c1.json"
wait_map_idle() {
  for _ in $(seq 1 300); do
    get /v1/kv/map >"$1"
    [ "$(py 'j["holders"] == [] and j["n_used"] == 0' <"$1")" = True ] && return 0
    sleep 0.1
  done
  return 1
}
wait_map_idle "$tmp/map1.json" || bad "map did not return to idle"
get /v1/kv >"$tmp/kv1.json"
check "cached cells after a request" "
import json
m = json.load(open('$tmp/map1.json')); kv = json.load(open('$tmp/kv1.json'))['pool']
c = m['cells']
assert set(c) <= {-1, -2}, c
assert c.count(-2) == m['n_cached'] >= 2 and c.count(-1) == m['n_free'], m
assert m['n_cached'] + m['n_free'] == kv['blocks_free'] == 16 and kv['occupancy'] == 0
"
grep -q 'Lily' "$tmp/map1.json" && bad "the map carries prompt text" || ok

# ---- the plan
get '/v1/plan?prompt_tokens=40' >"$tmp/plan1.json"
get '/v1/plan?prompt_tokens=400&context=64' >"$tmp/plan2.json"
get '/v1/plan?context=300' >"$tmp/plan3.json"
check "plan" "
import json
p1, p2, p3 = (json.load(open('$tmp/plan%d.json' % i)) for i in (1, 2, 3))
kv = json.load(open('$tmp/kv1.json'))['pool']
assert p1['prompt_tokens'] == 40 and p1['blocks_needed'] == 3 and p1['fits_now'] and p1['fits_ever'], p1
assert p1['blocks_available'] == kv['blocks_free'] and 'reason' not in p1
assert p1['bytes_per_token'] == kv['bytes_per_token'] == 1280 and p1['context'] == 256 == p1['max_ctx']
assert p1['users_at_context'] == 1 and p1['blocks_per_user'] == 16
assert p2['fits_ever'] is False and p2['fits_now'] is False and 'context of 256' in p2['reason'], p2
assert p2['blocks_needed'] == 25 and p2['kv_bytes_needed'] == 25 * 16 * 1280
assert p2['users_at_context'] == 4 and p2['kv_bytes_per_user'] == 4 * 16 * 1280, p2
assert 'prompt_tokens' not in p3 and p3['context_fits'] is False and p3['users_at_context'] == 0, p3
"
for bad_q in 'prompt_tokens=abc' 'prompt_tokens=0' 'prompt_tokens=-5' 'prompt_tokens=1e3' \
  'prompt_tokens=99999999999' 'prompt_tokens=' 'context=0' 'context=12x'; do
  get "/v1/plan?$bad_q" >"$tmp/planbad.json"
  name=${bad_q%%=*}
  [ "$(code)" = 400 ] && [ "$(py '(j["error"]["param"], j["error"]["type"], "[1, 2147483647]" in j["error"]["message"])' <"$tmp/planbad.json")" = "('$name', 'invalid_request_error', True)" ] \
    && ok || bad "plan ?$bad_q: $(code) $(cat "$tmp/planbad.json")"
done

# ---- the history
for _ in $(seq 1 100); do
  get /v1/kv/history >"$tmp/h1.json"
  [ "$(py 'len(j["samples"]) >= 3 and any(s["tokens_per_s"] > 0 for s in j["samples"])' <"$tmp/h1.json")" = True ] && break
  sleep 0.2
done
check "history shape" "
import json
h = json.load(open('$tmp/h1.json'))
assert h['interval_s'] == 1.0 and h['capacity'] == 600
s = h['samples']
assert len(s) >= 3, s
keys = ['t', 'occupancy', 'blocks_used', 'blocks_cached', 'running', 'waiting', 'swapped',
        'batch_tokens', 'tpot_ms', 'ttft_ms', 'prefix_hit_rate', 'prefix_tokens_saved', 'tokens_per_s']
assert all(k in x for x in s for k in keys)
assert all(a['t'] < b['t'] for a, b in zip(s, s[1:]))
busy = [x for x in s if x['tokens_per_s'] > 0]
assert busy and busy[0]['ttft_ms'] is not None and busy[0]['ttft_ms'] > 0, s
assert any(x['tpot_ms'] is not None for x in busy), busy
assert any(x['batch_tokens'] is not None for x in s), s
idle = [x for x in s if x['tokens_per_s'] == 0]
assert all(x['tpot_ms'] is None and x['ttft_ms'] is None for x in idle)
"
T=$(py 'j["samples"][-2]["t"]' <"$tmp/h1.json")
get "/v1/kv/history?since=$T" >"$tmp/h2.json"
check "history since" "
import json
h1, h2 = json.load(open('$tmp/h1.json')), json.load(open('$tmp/h2.json'))
s = h2['samples']
assert s and all(x['t'] > $T for x in s), s
assert s[0] == h1['samples'][-1], (s[0], h1['samples'][-1])
"
get "/v1/kv/history?since=1e13" >"$tmp/h3.json"
[ "$(code)" = 400 ] && ok || bad "history since=1e13: $(code)"
for q in abc -1 nan inf ''; do
  get "/v1/kv/history?since=$q" >"$tmp/h3.json"
  [ "$(code)" = 400 ] && [ "$(py 'j["error"]["param"]' <"$tmp/h3.json")" = since ] && ok || bad "history since=$q: $(code) $(cat "$tmp/h3.json")"
done

# ---- the Grafana dashboard against a live /metrics
curl -s "http://127.0.0.1:$port/metrics" >"$tmp/metrics.txt"
check "grafana dashboard" "
import json, re
d = json.load(open('$src/docs/grafana/kvllm-dashboard.json'))
names = set()
for line in open('$tmp/metrics.txt'):
    if line.strip() and not line.startswith('#'):
        names.add(re.match(r'[a-zA-Z_:][a-zA-Z0-9_:]*', line).group(0))
assert [i['name'] for i in d['__inputs']] == ['DS_PROMETHEUS'] and d['__inputs'][0]['pluginId'] == 'prometheus'
assert d['uid'] and d['title'] and isinstance(d['schemaVersion'], int) and d['schemaVersion'] >= 30
kinds, exprs = [], []
for p in d['panels']:
    g = p['gridPos']
    assert all(isinstance(g[k], int) for k in 'hwxy') and g['x'] + g['w'] <= 24, p['title']
    assert p['datasource']['uid'] == '\${DS_PROMETHEUS}' and p['targets'], p['title']
    kinds.append(p['type'])
    for t in p['targets']:
        used = re.findall(r'kvllm:[a-zA-Z0-9_:]+', t['expr'])
        assert used, (p['title'], t['expr'])
        for n in used:
            assert n in names, '%s (panel %r) is not in /metrics' % (n, p['title'])
        exprs.append(t['expr'])
assert kinds.count('heatmap') == 3, kinds
for h in ('time_to_first_token_seconds', 'time_per_output_token_seconds', 'inter_token_latency_seconds'):
    assert any(p['type'] == 'heatmap' and h + '_bucket' in p['targets'][0]['expr'] and p['targets'][0]['format'] == 'heatmap' for p in d['panels']), h
for n in ['kv_cache_usage_perc', 'num_requests_running', 'num_requests_waiting', 'num_requests_swapped',
          'num_preemptions_recompute_total', 'num_preemptions_swap_total', 'prompt_tokens_cached_total']:
    assert any('kvllm:' + n in e for e in exprs), n
ids = [p['id'] for p in d['panels']]
assert len(set(ids)) == len(ids)
# a recording-rules file of every expression, for promtool
with open('$tmp/rules.yml', 'w') as f:
    f.write('groups:\n- name: dash\n  rules:\n')
    for i, e in enumerate(exprs):
        e = e.replace('\$__rate_interval', '1m').replace('\$instance', '.*')
        f.write('  - record: dash_expr_%d\n    expr: %s\n' % (i, json.dumps(e)))
"
if command -v promtool >/dev/null; then
  promtool check rules "$tmp/rules.yml" >"$tmp/promtool.out" 2>&1 && ok || { bad "promtool check rules"; cat "$tmp/promtool.out"; }
else
  echo "SKIP: promtool not installed (Debian prometheus): the expressions' syntax is not checked"
fi
kill "$spid"; wait "$spid" 2>/dev/null

# ---- the contiguous layout has no blocks to map: 501; the plan counts slots
start contig -m "$model" --kv-layout contiguous -c 128 --max-seqs 4 --api-key "$key" || exit 1
get /v1/kv/map >"$tmp/mapx.json"
[ "$(code)" = 501 ] && [ "$(py 'j["error"]["code"]' <"$tmp/mapx.json")" = unsupported ] && ok || bad "contiguous map: $(code) $(cat "$tmp/mapx.json")"
get '/v1/plan?prompt_tokens=100&context=128' >"$tmp/planx.json"
[ "$(code)" = 200 ] && [ "$(py '(j["fits_now"], j["blocks_needed"], j["users_at_context"], j["n_blocks"])' <"$tmp/planx.json")" = "(True, 1, 4, 4)" ] \
  && ok || bad "contiguous plan: $(cat "$tmp/planx.json")"
kill "$spid"; wait "$spid" 2>/dev/null

# ---- a slow model: 8 streams at once
"$bin" mkmodel -o "$tmp/slow.gguf" --dim 768 --layers 8 --ffn 2048 --heads 12 --kv-heads 12 \
  --vocab-size 512 --ctx 8192 --type q8_0 >/dev/null 2>"$tmp/mkmodel.err" || { bad "mkmodel"; cat "$tmp/mkmodel.err"; }
# 320 blocks of 16 positions (f16 KV, 24 KiB a position); 8 x 600 tokens
# take 304, so all 8 run to the end without preemption. 600 steps last
# seconds even on a fast machine (the checks below take well under one):
# 150 tokens ended before the checks on a 2026-12 machine.
start slow -m "$tmp/slow.gguf" -c 5120 --kv-mem 120MiB --max-seqs 8 --api-key "$key" || exit 1
spids=()
ntok=600
[ -n "${KVL_SAN_FLAGS:-}" ] && ntok=40 # a sanitizer build steps the slow model ~30x slower
for i in 1 2 3 4 5 6 7 8; do
  curl -sN -H "Authorization: Bearer $key" "http://127.0.0.1:$port/v1/completions" \
    -d "{\"prompt\":\"Stream $i begins\",\"max_tokens\":$ntok,\"temperature\":0,\"ignore_eos\":true,\"stream\":true}" >"$tmp/s$i.txt" &
  spids+=($!)
done
seen=0
for _ in $(seq 1 600); do
  get /v1/kv/map >"$tmp/mapl.json"
  [ "$(py 'len(j["holders"])' <"$tmp/mapl.json")" = 8 ] && { seen=1; break; }
  sleep 0.05
done
[ $seen = 1 ] && ok || bad "the map never showed 8 holders: $(cat "$tmp/mapl.json" | head -c 600)"
check "map under load" "
import json
m = json.load(open('$tmp/mapl.json'))
h = m['holders']
assert [x['request'] for x in h] == sorted(x['request'] for x in h)
assert all(x['state'] == 'running' and x['blocks'] >= 1 and x['tokens'] >= 1 for x in h), h
c = m['cells']
assert all(-2 <= v < len(h) for v in c)
assert sum(1 for v in c if v >= 0) == m['n_used'] == sum(x['blocks'] for x in h), m
for k in range(len(h)):
    assert c.count(k) == h[k]['blocks'], k
assert abs(m['occupancy'] - m['n_used'] / m['n_blocks']) < 1e-12
"
# While all 8 run: a prompt needing one block more than is free (not now,
# but some day), then the map against /v1/kv at one engine step (three
# GETs in a row, compared when no step ended between them).
python3 - "$port" "$key" >"$tmp/load.out" 2>&1 <<'PYEOF' && ok || { bad "map vs /v1/kv under load"; cat "$tmp/load.out"; }
import json, sys, urllib.request
port, key = sys.argv[1], sys.argv[2]
def get(path):
    r = urllib.request.Request("http://127.0.0.1:%s%s" % (port, path), headers={"Authorization": "Bearer " + key})
    return json.load(urllib.request.urlopen(r))
kv = get("/v1/kv")["pool"]
n = (kv["blocks_free"] + 1) * kv["block_size"]
p = get("/v1/plan?prompt_tokens=%d" % n)
running = len(get("/v1/kv/map")["holders"])
assert running == 8, "the streams ended too soon (%d holders)" % running
assert p["fits_ever"] is True and p["fits_now"] is False and "free now" in p["reason"], p
assert p["blocks_needed"] > p["blocks_available"], p
same = exact = 0
for _ in range(400):
    a = get("/v1/kv")["pool"]; m = get("/v1/kv/map"); b = get("/v1/kv")["pool"]
    if len(m["holders"]) < 8:
        break
    if not (a["steps"] == b["steps"] == m["steps"]):
        continue
    same += 1
    if not m["in_step"]:
        exact += 1
        assert m["occupancy"] == a["occupancy"] and m["n_used"] == a["blocks_used"], (m["occupancy"], a)
    else:  # the blocks reserved for the step in flight are in the map only
        d = m["n_used"] - a["blocks_used"]
        assert 0 <= d <= len(m["holders"]), d
        assert abs(m["occupancy"] - a["occupancy"] - d / m["n_blocks"]) < 1e-12
    if same >= 20:
        break
print("map vs /v1/kv under load: %d triples at one step, %d between steps (exact)" % (same, exact))
assert same >= 3, same
PYEOF
cat "$tmp/load.out"

for p in "${spids[@]}"; do wait "$p"; done
for i in 1 2 3 4 5 6 7 8; do
  grep -q '"finish_reason":"length"' "$tmp/s$i.txt" && tail -c 14 "$tmp/s$i.txt" | grep -q 'data: \[DONE\]' && ok || bad "stream $i incomplete"
done
wait_map_idle "$tmp/mape.json" || bad "the map did not empty after the streams"
check "map after the streams" "
import json
m = json.load(open('$tmp/mape.json'))
assert set(m['cells']) <= {-1, -2} and m['holders'] == [] and m['shared'] == [], m
assert set(m['swap']['cells']) <= {-1, -3}
assert m['n_used'] == 0 and m['occupancy'] == 0
"
for _ in $(seq 1 30); do
  get /v1/kv/history >"$tmp/hl.json"
  [ "$(py 'any(s["running"] >= 1 for s in j["samples"]) and j["samples"][-1]["running"] == 0' <"$tmp/hl.json")" = True ] && break
  sleep 0.2
done
check "history of the load" "
import json
s = json.load(open('$tmp/hl.json'))['samples']
busy = [x for x in s if x['running'] >= 1]
assert busy, s
assert any(x['batch_tokens'] is not None and x['batch_tokens'] >= 1 for x in busy), busy
assert any(x['tpot_ms'] is not None and x['tpot_ms'] > 0 and x['tokens_per_s'] > 0 for x in busy), busy
assert min(x['occupancy'] for x in busy) > 0 and max(x['blocks_used'] for x in busy) >= 8
"
kill "$spid"; wait "$spid" 2>/dev/null

echo "test_serve_dash: $pass passed, $fail failed"
[ "$fail" = 0 ]
