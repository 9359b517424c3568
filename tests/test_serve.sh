#!/usr/bin/env bash
# End-to-end checks of kvllm serve with curl (and the official `openai` npm
# client): start the server on a free port with stories260K, wait for
# /health, then completions (greedy text equals kvllm run's), a streamed
# chat completion (SSE chunks, usage chunk, [DONE]; same text as the
# non-streamed one), n=2, stop strings, logprobs, bad JSON and bad fields
# (400 naming the field), oversize requests (400 / 413 with the numbers),
# 429 with Retry-After when the queue is full, client disconnect mid-stream
# (the engine request is cancelled, no block stays held), /metrics parses,
# /v1/kv, and SIGTERM with a request in flight (it gets its final chunk and
# [DONE]; exit 0). Nothing here asserts timing: waits poll for a state.
set -u
SERVE_TMP_NAME=serve
. "$(dirname "$0")/serve_common.sh"

# the shipped model's file has no chat template: the main server names one
start main -m "$model" --chat-template llama2 || exit 1
grep -q 'kvllm serve: chat template llama2 (--chat-template)' "$tmp/main.err" && ok || bad "start-up report names the chat template"
grep -q 'kvllm serve: KV paged, .* tokens = .* full-context sequences' "$tmp/main.err" && ok || bad "start-up report has the KV capacity"
grep -q "as 'stories260K'" "$tmp/main.err" && ok || bad "start-up report names the model id"
mid=$(curl -s "http://127.0.0.1:$port/v1/models" | py 'j["data"][0]["id"]')
[ "$mid" = stories260K ] && ok || bad "/v1/models lists stories260K (got '$mid')"

# --- completion: greedy text equals kvllm run's
want=$("$bin" run -m "$model" -p "Once upon a time" -n 40 --temp 0 -t 1 -o json 2>/dev/null | py 'j["samples"][0]["text"]')
got=$(post /v1/completions '{"model":"stories260K","prompt":"Once upon a time","max_tokens":40,"temperature":0}' | py 'j["choices"][0]["text"]')
[ "$(code)" = 200 ] && ok || bad "completion status $(code)"
[ -n "$want" ] && [ "$got" = "$want" ] && ok || bad "completion text '$got' != kvllm run's '$want'"
u=$(py '(j["usage"]["prompt_tokens"], j["usage"]["completion_tokens"], j["usage"]["total_tokens"], j["usage"]["prompt_tokens_details"]["cached_tokens"], j["choices"][0]["finish_reason"], j["object"])' <"$tmp/body")
[ "$u" = "(5, 40, 45, 0, 'length', 'text_completion')" ] && ok || bad "completion usage/finish $u"

# --- the prefix cache: the same long prompt again is served from cached
# blocks (same text), another cache_salt never is
long='Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball.'
r1=$(post /v1/completions "{\"prompt\":\"$long\",\"max_tokens\":8,\"temperature\":0,\"cache_salt\":\"t1\"}" | py '(j["choices"][0]["text"], j["usage"]["prompt_tokens_details"]["cached_tokens"])')
r2=$(post /v1/completions "{\"prompt\":\"$long\",\"max_tokens\":8,\"temperature\":0,\"cache_salt\":\"t1\"}" | py '(j["choices"][0]["text"], j["usage"]["prompt_tokens_details"]["cached_tokens"], j["usage"]["prompt_tokens_details"]["cached_tokens_tier"])')
r3=$(post /v1/completions "{\"prompt\":\"$long\",\"max_tokens\":8,\"temperature\":0,\"cache_salt\":\"other\"}" | py 'j["usage"]["prompt_tokens_details"]["cached_tokens"]')
python3 - "$r1" "$r2" "$r3" <<'PY' && ok || bad "prefix cache over HTTP: $r1 / $r2 / $r3"
import ast, sys
t1, c1 = ast.literal_eval(sys.argv[1]); t2, c2, tier2 = ast.literal_eval(sys.argv[2])
assert c1 == 0 and c2 >= 16 and tier2 == 0 and t1 == t2 and int(sys.argv[3]) == 0
PY

# --- chat: streamed text equals non-streamed text; SSE shape; usage chunk
chat='"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Tell me about a cat."}],"max_tokens":30,"temperature":0'
ns=$(post /v1/chat/completions "{$chat}" | py 'j["choices"][0]["message"]["content"]')
cp "$tmp/body" "$tmp/chat_ns.json"
[ "$(code)" = 200 ] && [ -n "$ns" ] && ok || bad "chat completion ($(code)): $(cat "$tmp/body")"
[ "$(py 'j["object"], j["choices"][0]["message"]["role"]' <"$tmp/body")" = "('chat.completion', 'assistant')" ] && ok || bad "chat object/role"
curl -sN "http://127.0.0.1:$port/v1/chat/completions" -d "{$chat,\"stream\":true,\"stream_options\":{\"include_usage\":true}}" >"$tmp/sse.txt"
python3 - "$tmp/sse.txt" "$tmp/chat_ns.json" >"$tmp/sse.check" 2>&1 <<'EOF' && ok || { bad "SSE stream"; cat "$tmp/sse.check"; }
import json, sys
raw = open(sys.argv[1]).read()
events = [e for e in raw.split("\n\n") if e.strip()]
assert all(e.startswith("data: ") for e in events), "every event is data:"
assert events[-1] == "data: [DONE]", "ends with [DONE]"
chunks = [json.loads(e[6:]) for e in events[:-1]]
assert all(c["object"] == "chat.completion.chunk" for c in chunks)
assert chunks[0]["choices"][0]["delta"].get("role") == "assistant", "first delta has the role"
text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
want = json.load(open(sys.argv[2]))["choices"][0]["message"]["content"]
assert text == want, "streamed text %r != non-streamed %r" % (text, want)
fin = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
assert fin == ["length"] or fin == ["stop"], fin
last = chunks[-1]
assert last["choices"] == [] and last["usage"]["completion_tokens"] > 0, "usage chunk last"
assert last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] + last["usage"]["completion_tokens"]
print("ok", len(chunks))
EOF
curl -sN "http://127.0.0.1:$port/v1/completions" -d '{"prompt":"Once upon a time","max_tokens":40,"temperature":0,"stream":true}' >"$tmp/sse2.txt"
st=$(python3 -c "
import json,sys
ev=[e for e in open('$tmp/sse2.txt').read().split('\n\n') if e.strip()]
print(''.join(json.loads(e[6:])['choices'][0]['text'] for e in ev[:-1] if json.loads(e[6:])['choices']), end='')
")
[ "$st" = "$want" ] && tail -c 14 "$tmp/sse2.txt" | grep -q 'data: \[DONE\]' && ok || bad "streamed completion '$st' != '$want'"

# --- n=2, stop strings, logprobs, sessions
post /v1/completions '{"prompt":"Once upon a time","max_tokens":20,"n":2,"temperature":0.9,"seed":7,"user":"alice"}' >/dev/null
[ "$(code)" = 200 ] && [ "$(py '[c["index"] for c in j["choices"]]' <"$tmp/body")" = "[0, 1]" ] && ok || bad "n=2: $(cat "$tmp/body")"
stop=$(post /v1/completions '{"prompt":"Once upon a time","max_tokens":40,"temperature":0,"stop":["Lily","zzz"]}' | py 'j["choices"][0]["text"], j["choices"][0]["finish_reason"]')
exp=$(python3 -c "import sys; t=sys.argv[1]; print((t[:t.index('Lily')], 'stop'))" "$want")
[ "$stop" = "$exp" ] && ok || bad "stop: got $stop, want $exp"
stop1=$(post /v1/completions '{"prompt":"Once upon a time","max_tokens":40,"temperature":0,"stop":"Lily"}' | py 'j["choices"][0]["finish_reason"]')
[ "$stop1" = stop ] && ok || bad "stop as a string"
lp=$(post /v1/completions '{"prompt":"Once upon a time","max_tokens":5,"temperature":0,"logprobs":0}' | py 'len(j["choices"][0]["logprobs"]["token_logprobs"]), all(x <= 0 for x in j["choices"][0]["logprobs"]["token_logprobs"])')
[ "$lp" = "(5, True)" ] && ok || bad "completion logprobs: $lp"
lpc=$(post /v1/chat/completions '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":4,"temperature":0,"logprobs":true,"top_logprobs":0}' | py 'len(j["choices"][0]["logprobs"]["content"])')
[ "$lpc" = 4 ] && ok || bad "chat logprobs: $lpc"
# top log-probabilities: greedy picks the first alternative; best first; as many as asked
tl=$(post /v1/chat/completions '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":4,"temperature":0,"logprobs":true,"top_logprobs":3}' | py 'all(len(e["top_logprobs"]) == 3 and e["top_logprobs"][0]["token"] == e["token"] and abs(e["top_logprobs"][0]["logprob"] - e["logprob"]) < 1e-6 and e["top_logprobs"][0]["logprob"] >= e["top_logprobs"][1]["logprob"] >= e["top_logprobs"][2]["logprob"] and "bytes" in e["top_logprobs"][1] for e in j["choices"][0]["logprobs"]["content"])')
[ "$tl" = True ] && ok || bad "chat top_logprobs: $tl $(cat "$tmp/body")"
tlc=$(post /v1/completions '{"prompt":"Once upon a time","max_tokens":5,"temperature":0,"logprobs":2}' | py '[(len(d) >= 1, max(d.values()) == lp) for d, lp in zip(j["choices"][0]["logprobs"]["top_logprobs"], j["choices"][0]["logprobs"]["token_logprobs"])]')
[ "$tlc" = "[(True, True), (True, True), (True, True), (True, True), (True, True)]" ] && ok || bad "completion top_logprobs: $tlc $(cat "$tmp/body")"
# penalties: accepted, and at temperature 0 a strong frequency penalty changes a 60-token greedy text
p0=$(post /v1/completions '{"prompt":"Once upon a time","max_tokens":60,"temperature":0}' | py 'j["choices"][0]["text"]')
p1=$(post /v1/completions '{"prompt":"Once upon a time","max_tokens":60,"temperature":0,"frequency_penalty":2,"presence_penalty":0.5}' | py 'j["choices"][0]["text"]')
[ "$(code)" = 200 ] && [ -n "$p1" ] && [ "$p0" != "$p1" ] && ok || bad "penalties: $(code) same text: $p1"
ses=$(curl -s "http://127.0.0.1:$port/v1/kv" | py '[(s["user"], s["requests"]) for s in j["sessions"]]')
[ "$ses" = "[('alice', 1)]" ] && ok || bad "session of user alice in /v1/kv: $ses"

# --- bad input: 400 naming the field
check400() { # BODY PARAM [PATH]
  post "${3:-/v1/completions}" "$1" >/dev/null
  local p; p=$(py 'j["error"]["param"]' <"$tmp/body" 2>/dev/null)
  [ "$(code)" = 400 ] && [ "$p" = "$2" ] && ok || bad "body $1: want 400 param $2, got $(code) $(cat "$tmp/body")"
}
post /v1/completions '{"prompt": "Once' >/dev/null
[ "$(code)" = 400 ] && grep -q 'not valid JSON' "$tmp/body" && ok || bad "bad JSON: $(code) $(cat "$tmp/body")"
post /v1/completions '[1,2]' >/dev/null
[ "$(code)" = 400 ] && grep -q 'JSON object' "$tmp/body" && ok || bad "non-object body"
printf '{"prompt":"\xff\xfe"}' >"$tmp/bad_utf8.json"
c=$(curl -s -o "$tmp/body" -w '%{http_code}' "http://127.0.0.1:$port/v1/completions" --data-binary @"$tmp/bad_utf8.json")
[ "$c" = 400 ] && grep -q 'UTF-8' "$tmp/body" && ok || bad "invalid UTF-8: $c"
check400 '{"prompt":"x","temperature":"hot"}' temperature
check400 '{"prompt":"x","temperature":3}' temperature
check400 '{"prompt":"x","top_p":0}' top_p
check400 '{"prompt":"x","max_tokens":0}' max_tokens
check400 '{"prompt":"x","max_tokens":1.5}' max_tokens
check400 '{"prompt":"x","n":1000}' n
check400 '{"prompt":"x","n":0}' n
check400 '{"prompt":"x","top_k":-2}' top_k
check400 '{"prompt":"x","min_p":1.5}' min_p
check400 '{"prompt":"x","seed":0.5}' seed
check400 '{"prompt":"x","priority":3000000000}' priority
check400 '{"prompt":"x","max_completion_tokens":-1}' max_completion_tokens
check400 '{"prompt":"x","ignore_eos":1}' ignore_eos
check400 '{"prompt":"x","stream_options":[]}' stream_options
check400 '{"prompt":"x","stop":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}' stop
check400 "{\"prompt\":\"x\",\"stop\":\"$(head -c 129 /dev/zero | tr '\0' s)\"}" stop
check400 '{"prompt":"x","user":5}' user
check400 '{"prompt":"x","presence_penalty":2.5}' presence_penalty
check400 '{"prompt":"x","frequency_penalty":"1"}' frequency_penalty
check400 '{"prompt":"x","logprobs":6}' logprobs
check400 '{"prompt":"x","stop":[1]}' stop
# the kv_policy extension (docs/eviction.md): bad shapes name the nested field
check400 '{"prompt":"x","kv_policy":"window"}' kv_policy
check400 '{"prompt":"x","kv_policy":{"kind":"lru","budget_tokens":64}}' kv_policy.kind
check400 '{"prompt":"x","kv_policy":{"kind":"h2o","budget_tokens":64,"heavy":1.5}}' kv_policy.heavy
grep -q 'kv_policy.heavy must be a number in (0, 1)' "$tmp/body" && ok || bad "heavy's range named: $(cat "$tmp/body")"
check400 '{"prompt":"x","kv_policy":{"kind":"h2o","budget_tokens":64,"heavy":0}}' kv_policy.heavy
check400 '{"prompt":"x","kv_policy":{"kind":"h2o","budget_tokens":64,"heavy":"half"}}' kv_policy.heavy
check400 '{"prompt":"x","kv_policy":{"kind":"snapkv","budget_tokens":96,"obs_window":0}}' kv_policy.obs_window
grep -q 'kv_policy.obs_window must be an integer in \[1, ' "$tmp/body" && ok || bad "obs_window's range named: $(cat "$tmp/body")"
check400 '{"prompt":"x","kv_policy":{"kind":"snapkv","budget_tokens":96,"obs_window":2.5}}' kv_policy.obs_window
# snapkv's default window of 32 needs a budget of 1 + 2 blocks of 16 + 32
check400 '{"prompt":"x","kv_policy":{"kind":"snapkv","budget_tokens":48}}' kv_policy.budget_tokens
check400 '{"prompt":"x","kv_policy":{"kind":"h2o","budget_tokens":64,"score":"max"}}' kv_policy.score
check400 '{"prompt":"x","kv_policy":{"kind":"h2o","budget_tokens":64,"mass_stride":0}}' kv_policy.mass_stride
check400 '{"prompt":"x","kv_policy":{"kind":"h2o","budget_tokens":64,"mass_stride":17}}' kv_policy.mass_stride
check400 '{"prompt":"x","kv_policy":{"kind":"snapkv","budget_tokens":96,"pool":2}}' kv_policy.pool
check400 '{"prompt":"x","kv_policy":{"kind":"window"}}' kv_policy.budget_tokens
check400 '{"prompt":"x","kv_policy":{"kind":"sinks","budget_tokens":8}}' kv_policy.budget_tokens
check400 '{"prompt":"x","kv_policy":{"kind":"sinks","budget_tokens":64,"sinks":-1}}' kv_policy.sinks
check400 '{"prompt":"x","n":2,"kv_policy":{"kind":"window","budget_tokens":64}}' n
# streams through a 64-position cache: sinks with a short prompt and 300
# outputs; h2o and snapkv with a prompt of about 150 tokens (snapkv: cut to
# the budget after its prefill) and 200 outputs. KIND PROMPT MAX_TOKENS KV_POLICY
kv_stream() {
  curl -sN "http://127.0.0.1:$port/v1/completions" -d "{\"prompt\":\"$2\",\"max_tokens\":$3,\"temperature\":0,\"ignore_eos\":true,\"stream\":true,\"stream_options\":{\"include_usage\":true},\"kv_policy\":{$4}}" >"$tmp/kvp.txt"
  python3 - "$tmp/kvp.txt" "$1" "$3" >"$tmp/kvp.check" 2>&1 <<'PY' && ok || { bad "kv_policy {$4} stream"; cat "$tmp/kvp.check"; }
import json, sys
kind, n = sys.argv[2], int(sys.argv[3])
ev = [e[6:] for e in open(sys.argv[1]).read().split("\n\n") if e.startswith("data: ")]
assert ev[-1] == "[DONE]", ev[-3:]
chunks = [json.loads(e) for e in ev[:-1]]
u = chunks[-1]["usage"]
assert u["completion_tokens"] == n, u
assert kind == "sinks" or u["prompt_tokens"] > 64, u  # h2o, snapkv: a prompt over the budget
kp = u["kv_policy"]
fed = u["prompt_tokens"] + n - 1  # the last token is not fed
assert kp["kind"] == kind and fed - kp["evicted_tokens"] <= 64, kp
assert kp["evicted_tokens"] == 16 * kp["evicted_blocks"], kp
assert len("".join(c["choices"][0]["text"] for c in chunks if c["choices"])) > 0
PY
}
kv_stream sinks "Once upon a time" 300 '"kind":"sinks","budget_tokens":64,"sinks":4'
long="Once upon a time there was a little girl named Lily. She loved to play outside in the park with her friends. One day she saw a big red ball near the tree and she ran to get it. Her mom said to be careful. Lily smiled and said she would. Then the sun came out and the birds sang a happy song. Lily and her friends played until the sky was dark."
kv_stream h2o "$long" 200 '"kind":"h2o","budget_tokens":64,"heavy":0.25'
kv_stream h2o "$long" 120 '"kind":"h2o","budget_tokens":64,"score":"sum","mass_stride":1,"sinks":4'
kv_stream snapkv "$long" 120 '"kind":"snapkv","budget_tokens":64,"obs_window":8,"pool":3'
kv_stream snapkv "$long" 200 '"kind":"snapkv","budget_tokens":64,"obs_window":8'
check400 '{"prompt":"x","stop":""}' stop
check400 '{"prompt":"x","model":"gpt-4"}' model
check400 '{"prompt":"x","stream":"yes"}' stream
check400 '{"prompt":[1,99999]}' prompt
check400 '{"max_tokens":3}' prompt
check400 '{"messages":[]}' messages /v1/chat/completions
check400 '{"messages":[{"role":"robot","content":"hi"}]}' 'messages[0].role' /v1/chat/completions
check400 '{"messages":[{"role":"user","content":"hi"}],"top_logprobs":2}' top_logprobs /v1/chat/completions
grep -q '"message":"top_logprobs needs logprobs: true' "$tmp/body" && ok || bad "top_logprobs without logprobs says why"
check400 '{"messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":21}' top_logprobs /v1/chat/completions
check400 '{"messages":[1]}' 'messages[0].role' /v1/chat/completions
check400 '{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}' 'messages[0].content' /v1/chat/completions
check400 '{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}' messages /v1/chat/completions
mt=$(post /v1/chat/completions '{"messages":[{"role":"system","content":"s"},{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":[{"type":"text","text":"c"}]}],"max_tokens":3}' | py 'j["choices"][0]["finish_reason"]')
[ "$(code)" = 200 ] && [ "$mt" = length ] && ok || bad "multi-turn chat: $(code) $(cat "$tmp/body")"
c=$(curl -s -o "$tmp/body" -w '%{http_code}' "http://127.0.0.1:$port/health" -H "X-Big: $(head -c 40000 /dev/zero | tr '\0' a)")
[ "$c" = 431 ] && [ "$(py 'j["error"]["code"]' <"$tmp/body")" = headers_too_large ] && ok || bad "headers over 32 KiB: $c $(cat "$tmp/body")"
# far past libmicrohttpd's own buffer (64 KiB): its HTML 431, still a 431
hdrs=(); for i in $(seq 1 3000); do hdrs+=(-H "X-$i: v"); done
c=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health" "${hdrs[@]}")
[ "$c" = 431 ] && ok || bad "3000 small headers: $c"
# oversize: prompt + max_tokens over the context (the numbers in the message)
post /v1/completions '{"prompt":"Once upon a time","max_tokens":2045}' >/dev/null
[ "$(code)" = 400 ] && grep -q '2050 > the context 2048' "$tmp/body" && ok || bad "over the context: $(code) $(cat "$tmp/body")"
post /v1/completions "{\"prompt\":\"$(python3 -c "print('hello ' * 3000)")\",\"max_tokens\":4}" >/dev/null
[ "$(code)" = 400 ] && grep -q 'the prompt has 9002 tokens; the context holds 2048' "$tmp/body" && ok || bad "prompt over the context: $(code) $(cat "$tmp/body")"
python3 -c "print('{\"prompt\":\"' + 'a' * 1100000 + '\"}')" >"$tmp/big.json"
c=$(curl -s -o "$tmp/body" -w '%{http_code}' "http://127.0.0.1:$port/v1/completions" --data-binary @"$tmp/big.json")
[ "$c" = 413 ] && grep -q '1048576 bytes' "$tmp/body" && ok || bad "body over --max-body: $c $(cat "$tmp/body")"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/nope")" = 404 ] && ok || bad "404"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/completions")" = 405 ] && ok || bad "405 for GET /v1/completions"
tk=$(post /tokenize '{"prompt":"Once upon a time"}' | py 'j["tokens"]')
dt=$(post /detokenize "{\"tokens\":$tk}" | py 'j["prompt"]')
[ "$dt" = "Once upon a time" ] && ok || bad "tokenize/detokenize round trip: $tk -> '$dt'"
check400 '{"tokens":[-1]}' tokens /detokenize
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ] && ok || bad "still healthy after bad input"

curl -s "http://127.0.0.1:$port/metrics" >"$tmp/metrics.txt"
# --- /metrics parses (Prometheus text format)
python3 - "$tmp/metrics.txt" >"$tmp/metrics.check" 2>&1 <<'EOF' && ok || { bad "/metrics format"; cat "$tmp/metrics.check"; }
import re, sys
types, seen = {}, set()
name_re = r'[a-zA-Z_:][a-zA-Z0-9_:]*'
for line in open(sys.argv[1]):
    line = line.rstrip("\n")
    if line.startswith("# HELP "):
        continue
    m = re.fullmatch(r'# TYPE (%s) (counter|gauge|histogram)' % name_re, line)
    if m:
        assert m.group(1) not in types, "TYPE twice: " + line
        types[m.group(1)] = m.group(2)
        continue
    m = re.fullmatch(r'(%s)(\{[a-zA-Z_]+="[^"]*"(,[a-zA-Z_]+="[^"]*")*\})? (\S+)' % name_re, line)
    assert m, "bad line: %r" % line
    float(m.group(4))
    base = re.sub(r'_(bucket|sum|count)$', '', m.group(1)) if m.group(1) not in types else m.group(1)
    assert base in types, "no TYPE for " + line
for need in ["kvllm:num_requests_running", "kvllm:num_requests_waiting", "kvllm:kv_blocks_capacity",
             "kvllm:kv_blocks_free", "kvllm:kv_blocks_used", "kvllm:num_preemptions_total",
             "kvllm:swap_out_bytes_total", "kvllm:prompt_tokens_total", "kvllm:generation_tokens_total",
             "kvllm:time_to_first_token_seconds", "kvllm:time_per_output_token_seconds",
             "kvllm:http_responses_total", "kvllm:request_success_total",
             "kvllm:inter_token_latency_seconds", "kvllm:http_deadline_closed_total"]:
    assert need in types, "missing " + need
print("ok", len(types))
EOF
grep -qE '^kvllm:http_responses_total\{status="400"\} [1-9]' "$tmp/metrics.txt" && ok || bad "400s counted"
grep -qE '^kvllm:kv_evicted_blocks_total [1-9]' "$tmp/metrics.txt" && ok || bad "kv_policy evictions counted"
# --- promtool (Debian package prometheus): the only finding allowed is the
# `kvllm:` prefix's colon, which vLLM's names (`vllm:`) have too
if command -v promtool >/dev/null; then
  promtool check metrics <"$tmp/metrics.txt" >"$tmp/promtool.txt" 2>&1; rc=$?
  others=$(grep -v "metric names should not contain ':'" "$tmp/promtool.txt")
  { [ "$rc" = 0 ] || [ "$rc" = 3 ]; } && [ -z "$others" ] && ok || bad "promtool check metrics (rc $rc): $others"
else
  echo "SKIP: promtool not installed (Debian package prometheus; scripts/deps.sh test): /metrics not checked by promtool"
fi
grep -qE '^kvllm:time_to_first_token_seconds_count [1-9]' "$tmp/metrics.txt" && ok || bad "TTFT observed"
grep -qE '^kvllm:inter_token_latency_seconds_count [1-9]' "$tmp/metrics.txt" && ok || bad "ITL observed"

# --- the official openai npm client (skipped when npm cannot reach the registry)
npmdir=$build/npm_openai
if command -v npm >/dev/null && command -v node >/dev/null; then
  mkdir -p "$npmdir"
  if [ -d "$npmdir/node_modules/openai" ] || (cd "$npmdir" && timeout 180 npm install --no-audit --no-fund --silent openai >"$tmp/npm.log" 2>&1); then
    cp "$src/tests/serve_openai_client.mjs" "$npmdir/"
    if node "$npmdir/serve_openai_client.mjs" "$port" stories260K >"$tmp/node.json" 2>"$tmp/node.err"; then
      r=$(py 'j["text"] != "" and j["role"] == "assistant" and j["finish"] in ("length","stop") and j["usage"]["completion_tokens"] > 0 and j["completion_usage"]["completion_tokens"] == 12' <"$tmp/node.json")
      [ "$r" = True ] && ok || bad "openai client saw: $(cat "$tmp/node.json")"
      nc=$(py 'j["completion"]' <"$tmp/node.json")
      want12=$("$bin" run -m "$model" -p "Once upon a time" -n 12 --temp 0 -t 1 -o json 2>/dev/null | py 'j["samples"][0]["text"]')
      [ "$nc" = "$want12" ] && ok || bad "openai client completion '$nc' != kvllm run's '$want12'"
    else
      bad "the openai client failed"; cat "$tmp/node.err"
    fi
  else
    echo "SKIP: npm install openai failed (no registry?): $(tail -2 "$tmp/npm.log")"
  fi
else
  echo "SKIP: node/npm not installed: the openai client test did not run"
fi

# --- bench/serve_load.py replays a workload of kvllm bench serve --dump-workload
"$bin" bench serve -m "$model" --num-prompts 6 --input-len 8:24 --output-len 4:12 --shared-prefix 6 \
  --request-rate 50 --dump-workload "$tmp/w.jsonl" 2>"$tmp/dump.err" || bad "dump-workload: $(cat "$tmp/dump.err")"
r=$(python3 -c "
import json,sys
w=[json.loads(l) for l in open(sys.argv[1])]
print(len(w), all(x['prompt'][:6] == w[0]['prompt'][:6] for x in w), sum(x['max_tokens'] for x in w))" "$tmp/w.jsonl")
set -- $r
[ "$1 $2" = "6 True" ] && ok || bad "dumped workload: $r"
for mode in "" "--turns 3 --max-concurrency 1 --prompt text"; do
  # shellcheck disable=SC2086
  python3 "$src/bench/serve_load.py" --url "http://127.0.0.1:$port" --workload "$tmp/w.jsonl" \
    --json "$tmp/load.json" $mode >"$tmp/load.txt" 2>&1 || bad "serve_load $mode: $(cat "$tmp/load.txt")"
  got=$(py '(j["completed"], j["failed"], j["total_output_tokens"])' <"$tmp/load.json")
  [ "$got" = "(6, 0, $3)" ] && ok || bad "serve_load $mode: $got, want (6, 0, $3)"
done
grep -q 'Output token throughput (tok/s):' "$tmp/load.txt" && grep -q 'P99 ITL (ms):' "$tmp/load.txt" && ok || bad "serve_load report: $(cat "$tmp/load.txt")"

# --- SIGTERM: exit 0
kill -TERM "$spid"
wait "$spid"; rc=$?
[ "$rc" = 0 ] && ok || bad "SIGTERM exit status $rc"
grep -q 'kvllm serve: stopped' "$tmp/main.err" && ok || bad "shutdown reported"

# --- a slow model (random weights, ~60 MB) so that requests stay open while
# the test looks: one sequence, a queue of one
"$bin" mkmodel -o "$tmp/slow.gguf" --dim 768 --layers 8 --ffn 2048 --heads 12 --kv-heads 12 \
  --vocab-size 512 --ctx 4096 --type q8_0 >/dev/null 2>"$tmp/mkmodel.err" || { bad "mkmodel"; cat "$tmp/mkmodel.err"; }
start slow -m "$tmp/slow.gguf" --max-seqs 1 --max-queue 1 --grace 0 || exit 1
long='{"prompt":"x","max_tokens":4000,"temperature":0,"stream":true}'

# random weights over a vocabulary of byte pieces emit byte sequences that
# are not UTF-8: every response and chunk is still strict UTF-8 JSON, the
# streamed text equals the non-streamed one, and the bad bytes became U+FFFD
rnd='{"prompt":"x","max_tokens":48,"temperature":0,"ignore_eos":true'
curl -s "http://127.0.0.1:$port/v1/completions" -d "$rnd}" >"$tmp/rnd.json"
curl -sN "http://127.0.0.1:$port/v1/completions" -d "$rnd,\"stream\":true}" >"$tmp/rnd.sse"
python3 - "$tmp/rnd.json" "$tmp/rnd.sse" >"$tmp/rnd.check" 2>&1 <<'PYEOF' && ok || { bad "UTF-8 of random-model text"; cat "$tmp/rnd.check"; }
import json, sys
whole = json.loads(open(sys.argv[1], "rb").read())["choices"][0]["text"]
chunks = [json.loads(e[6:]) for e in open(sys.argv[2], "rb").read().split(b"\n\n")
          if e.startswith(b"data: {")]
streamed = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
assert streamed == whole, (streamed, whole)
print("text of %d characters, %d U+FFFD, %d other non-ASCII" % (
    len(whole), whole.count("\ufffd"), sum(ord(ch) > 127 and ch != "\ufffd" for ch in whole)))
PYEOF
cat "$tmp/rnd.check"

# client disconnect mid-stream: cancelled, no block held once idle
cut_stream /v1/completions "$long" >"$tmp/cut.txt"
grep -q '^data: {' "$tmp/cut.txt" && ok || bad "the cut stream had started"
wait_idle && ok || { bad "not idle after a disconnect"; cat "$tmp/kv.json"; }
curl -s "http://127.0.0.1:$port/metrics" >"$tmp/metrics2.txt"
grep -qE '^kvllm:client_disconnects_total [1-9]' "$tmp/metrics2.txt" && ok || bad "disconnect counted: $(grep disconnects "$tmp/metrics2.txt")"
grep -qE '^kvllm:request_success_total\{finished_reason="abort"\} [1-9]' "$tmp/metrics2.txt" && ok || bad "aborted request counted"
grep -qE '^kvllm:kv_blocks_used 0$' "$tmp/metrics2.txt" && ok || bad "metrics: blocks used after idle"

# one request running (streamed), one waiting, the next refused with 429;
# then the waiting one's client hangs up: its request is cancelled
curl -sN "http://127.0.0.1:$port/v1/completions" -d "$long" >"$tmp/r1.txt" 2>/dev/null &
r1=$!
for _ in $(seq 1 3000); do grep -q '^data: {' "$tmp/r1.txt" 2>/dev/null && break; sleep 0.02; done
python3 - "$port" >"$tmp/queue.txt" 2>&1 <<'PYEOF' && ok || { bad "queue full / hang-up while queued"; cat "$tmp/queue.txt"; }
import json, socket, sys, time, urllib.request, urllib.error
port = int(sys.argv[1])
url = "http://127.0.0.1:%d" % port
def metric(name):
    for line in urllib.request.urlopen(url + "/metrics").read().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
body = b'{"prompt":"x","max_tokens":5}'
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
for _ in range(3000):  # until it waits (the stream holds the only sequence)
    if metric("kvllm:num_requests_waiting") >= 1:
        break
    time.sleep(0.01)
else:
    sys.exit("never queued")
try:
    urllib.request.urlopen(urllib.request.Request(url + "/v1/completions", data=body))
    sys.exit("no 429 with a full queue")
except urllib.error.HTTPError as e:
    assert e.code == 429, e.code
    assert e.headers["Retry-After"] == "1", dict(e.headers)
    j = json.loads(e.read())
    assert j["error"]["type"] == "rate_limit_error", j
    assert "requests waiting, the queue holds 1" in j["error"]["message"], j
print("429 ok")
d0 = metric("kvllm:client_disconnects_total")
s.close()
for _ in range(3000):  # until the server noticed and cancelled it
    if metric("kvllm:client_disconnects_total") > d0 and metric("kvllm:num_requests_waiting") == 0:
        print("cancelled while queued")
        sys.exit(0)
    time.sleep(0.01)
sys.exit("not cancelled")
PYEOF
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ] && ok || bad "healthy while busy"
# the ledger while the stream runs: one running request holding blocks, the pool agrees
curl -s "http://127.0.0.1:$port/v1/kv" >"$tmp/kv_busy.json"
r=$(py '[(q["state"], q["blocks"] > 0, q["kv_bytes"] == q["blocks"] * j["pool"]["block_bytes"]) for q in j["requests"]] == [("running", True, True)] and j["pool"]["blocks_used"] > 0 and j["pool"]["blocks_used"] + j["pool"]["blocks_free"] == j["pool"]["blocks_total"]' <"$tmp/kv_busy.json")
[ "$r" = True ] && ok || bad "ledger while busy: $(cat "$tmp/kv_busy.json")"
grep -qE '^kvllm:num_requests_running 1$' <(curl -s "http://127.0.0.1:$port/metrics") && ok || bad "metrics: one running"
# SIGINT with the stream in flight (grace 0): it gets finish_reason abort and [DONE]; exit 0
kill -INT "$spid"; wait "$spid"; rc=$?
wait "$r1"
[ "$rc" = 0 ] && ok || bad "SIGINT exit status $rc"
tail -c 14 "$tmp/r1.txt" | grep -q 'data: \[DONE\]' && ok || bad "in-flight stream got [DONE] at shutdown"
grep -q '"finish_reason":"abort"' "$tmp/r1.txt" && ok || bad "in-flight stream ended with abort"
grep -q 'cancelled 1 requests' "$tmp/slow.err" && ok || bad "shutdown says what it cancelled: $(cat "$tmp/slow.err")"

# --- the prefix tier over HTTP: carol's prompt (9 blocks of 4) leaves the
# 40-block pool for the second tier while two long prompts run, then comes
# back: the same text, usage says how many cached tokens the tier gave, and
# carol's session in /v1/kv counts her demoted and promoted blocks
start tier -m "$model" -c 160 --block-size 4 --kv-mem 200KiB --swap-mem 2MiB --prefix-tier host || exit 1
ids() { python3 -c "import sys; print([1] + [3 + (i * 37 + int(sys.argv[2]) * 101) % 500 for i in range(int(sys.argv[1]) - 1)])" "$1" "$2"; }
a=$(ids 33 0) b=$(ids 120 1) c=$(ids 120 2)
post /v1/completions "{\"prompt\":$a,\"max_tokens\":4,\"temperature\":0,\"user\":\"carol\"}" >"$tmp/tier1.json"
post /v1/completions "{\"prompt\":$b,\"max_tokens\":4,\"temperature\":0,\"user\":\"dave\"}" >/dev/null
post /v1/completions "{\"prompt\":$c,\"max_tokens\":4,\"temperature\":0,\"user\":\"dave\"}" >/dev/null
post /v1/completions "{\"prompt\":$a,\"max_tokens\":4,\"temperature\":0,\"user\":\"carol\"}" >"$tmp/tier2.json"
curl -s "http://127.0.0.1:$port/v1/kv" >"$tmp/tier_kv.json"
python3 - "$tmp/tier1.json" "$tmp/tier2.json" "$tmp/tier_kv.json" >"$tmp/tier.check" 2>&1 <<'PY' && ok || { bad "prefix tier over HTTP"; cat "$tmp/tier.check"; }
import json, sys
r1, r2, kv = (json.load(open(f)) for f in sys.argv[1:4])
d1, d2 = r1["usage"]["prompt_tokens_details"], r2["usage"]["prompt_tokens_details"]
assert d1 == {"cached_tokens": 0, "cached_tokens_tier": 0}, d1
assert r2["choices"][0]["text"] == r1["choices"][0]["text"], (r1, r2)
assert d2["cached_tokens"] == 32 and 0 < d2["cached_tokens_tier"] <= 32, d2
carol = [s for s in kv["sessions"] if s["user"] == "carol"][0]
dave = [s for s in kv["sessions"] if s["user"] == "dave"][0]
assert carol["blocks_demoted"] > 0 and carol["blocks_promoted"] == d2["cached_tokens_tier"] // 4, carol
assert dave["blocks_promoted"] == 0, dave
assert carol["blocks_shared"] == 0 and carol["blocks"] == 0, carol
t = carol["turns"]
assert [x["cached_tokens"] for x in t] == [0, 32], t
assert [x["cached_tokens_tier"] for x in t] == [0, d2["cached_tokens_tier"]], t
PY
kill -TERM "$spid"; wait "$spid" && ok || bad "tier server exit status"

# --- no --chat-template and none in the file: chat is 400 naming the flag
start notmpl -m "$model" --kv-type-k f16 --kv-type-v int8 --block-size 8 --kv-mem 2MiB || exit 1
# the shared KV flags reach the engine (kvl_cli_engine_kv, as run and chat)
grep -q 'KV paged, f16/int8, block 8, 504 blocks .* 2097152 bytes: kv_mem as given' "$tmp/notmpl.err" && grep -q ', 1 threads$' "$tmp/notmpl.err" && ok || bad "KV flags in the start-up report: $(cat "$tmp/notmpl.err")"
post /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}]}' >/dev/null
[ "$(code)" = 400 ] && grep -q -- '--chat-template' "$tmp/body" && grep -q '"code":"chat_template_missing"' "$tmp/body" && ok || bad "chat without a template: $(code) $(cat "$tmp/body")"
grep -q 'no chat template.*answers 400' "$tmp/notmpl.err" && ok || bad "start-up report says chat is off"
kill -TERM "$spid"; wait "$spid" && ok || bad "notmpl server exit status"

# --- a port in use is refused with the reason
start holder -m "$model" --api-key s3cret || exit 1
# --api-key: 401 without or with a wrong key, 200 with it; /health and /metrics open
c1=$(curl -s -o "$tmp/body" -w '%{http_code}' "http://127.0.0.1:$port/v1/models")
[ "$c1" = 401 ] && [ "$(py 'j["error"]["code"]' <"$tmp/body")" = invalid_api_key ] && ok || bad "no key: $c1"
c2=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer s3cre' "http://127.0.0.1:$port/v1/models")
c3=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer s3cret' "http://127.0.0.1:$port/v1/models")
c4=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/metrics")
[ "$c2 $c3 $c4" = "401 200 200" ] && ok || bad "api key: wrong $c2, right $c3, metrics $c4"
"$bin" serve -m "$model" --port "$port" >/dev/null 2>"$tmp/inuse.err"; rc=$?
[ "$rc" = 1 ] && grep -q 'Address already in use' "$tmp/inuse.err" && ok || bad "port in use: rc $rc $(cat "$tmp/inuse.err")"
kill -TERM "$spid"; wait "$spid"
"$bin" serve --port 99999 >/dev/null 2>"$tmp/badport.err"; rc=$?
[ "$rc" = 2 ] && grep -q -- '--port' "$tmp/badport.err" && ok || bad "bad --port: rc $rc"

# flag errors: exit 2 naming the flag
for args in "--max-seqs 0" "--preempt sometimes" "--max-body 1" "--grace -1" "--bogus" "--host nowhere"; do
  "$bin" serve -m "$model" --port 0 $args >/dev/null 2>"$tmp/flag.err"; rc=$?
  flag=${args%% *}; [ "$flag" = --host ] && flag=--host
  [ "$rc" = 2 ] && grep -q -- "$flag" "$tmp/flag.err" && ok || bad "serve $args: rc $rc $(cat "$tmp/flag.err")"
done

echo "test_serve: $pass passed, $fail failed"
[ "$fail" = 0 ]
