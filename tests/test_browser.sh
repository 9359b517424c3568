#!/usr/bin/env bash
# The built-in page (GET /, /static/NAME; web/): first over HTTP with curl
# (content types, ETag and 304, 404 for unknown names, no key needed for
# the page while /v1 needs one), then in headless Chromium (Debian
# `chromium`) driven by node's test runner with puppeteer-core from npm
# (tests/browser/*.test.mjs): no console errors, a chat round trip equal
# to the API's text at temperature 0, stop, the API key prompt, 8 streams
# seen on the block map. The browser part says SKIP when node, npm,
# chromium or the npm registry is missing. Nothing here asserts timing.
set -u
SERVE_TMP_NAME=browser
. "$(dirname "$0")/serve_common.sh"

start chat -m "$model" --chat-template llama2 || exit 1
base=http://127.0.0.1:$port
chat_port=$port
# fetch_hdr URL: the status, content type, ETag and cache header of a GET
fetch_hdr() { rm -f "$tmp/asset"; curl -s -o "$tmp/asset" -D - "$@" | tr -d '\r' >"$tmp/hdr"; }
hv() { awk -v k="$1" 'tolower($1) == tolower(k) ":" {sub(/^[^:]*: /, ""); print}' "$tmp/hdr"; }
status() { awk 'NR == 1 {print $2}' "$tmp/hdr"; }
fetch_hdr "$base/"
[ "$(status)" = 200 ] && [ "$(hv Content-Type)" = "text/html; charset=utf-8" ] && ok || bad "GET /: $(cat "$tmp/hdr")"
cmp -s "$tmp/asset" "$src/web/index.html" && ok || bad "GET / is not web/index.html"
etag=$(hv ETag)
[ -n "$etag" ] && [ "$(hv Cache-Control)" = no-cache ] && hv Content-Security-Policy | grep -q "default-src 'self'" && ok || bad "GET / headers: $(cat "$tmp/hdr")"
fetch_hdr -H "If-None-Match: $etag" "$base/"
[ "$(status)" = 304 ] && { [ ! -s "$tmp/asset" ]; } && ok || bad "If-None-Match $etag: $(status)"
fetch_hdr -H "If-None-Match: \"0000\", W/$etag" "$base/"
[ "$(status)" = 304 ] && ok || bad "If-None-Match list with W/$etag: $(status)"
fetch_hdr -H 'If-None-Match: "0000"' "$base/"
[ "$(status)" = 200 ] && ok || bad "another ETag: $(status)"
fetch_hdr -H "If-None-Match: ${etag%\"}0\"" "$base/"
[ "$(status)" = 200 ] && ok || bad "an ETag one digit longer: $(status)"
for f in app.js:text/javascript style.css:text/css index.html:text/html; do
  fetch_hdr "$base/static/${f%%:*}"
  [ "$(status)" = 200 ] && [ "$(hv Content-Type)" = "${f#*:}; charset=utf-8" ] && cmp -s "$tmp/asset" "$src/web/${f%%:*}" && ok || bad "/static/${f%%:*}: $(status) $(hv Content-Type)"
done
for u in /static/ /static/nope.js /static/../web/app.js /static/app.js/x /index.html; do
  fetch_hdr --path-as-is "$base$u"
  [ "$(status)" = 404 ] && ok || bad "GET $u: $(status), want 404"
done
[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$base/")" = 405 ] && ok || bad "POST / is not 405"
[ "$(metric 'kvllm:http_responses_total{status="404"}')" != "" ] && ok || bad "404s are counted in /metrics"

start key -m "$model" --chat-template llama2 --api-key sekret || exit 1
key_port=$port
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$key_port/")" = 200 ] && ok || bad "the page needs no key"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$key_port/static/app.js")" = 200 ] && ok || bad "the script needs no key"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$key_port/v1/kv")" = 401 ] && ok || bad "/v1/kv without the key is not 401"

# a slower model (random weights, 26M parameters) keeps 8 streams open long
# enough for the page to see them
"$bin" mkmodel -o "$tmp/load.gguf" --preset stories260K --dim 512 --heads 8 --kv-heads 8 \
  --layers 8 --ffn 1376 --ctx 1024 >/dev/null 2>"$tmp/mkmodel.err" || bad "mkmodel: $(cat "$tmp/mkmodel.err")"
start load -m "$tmp/load.gguf" --chat-template llama2 || exit 1
load_port=$port

npmdir=$build/npm_browser
chromium=$(command -v chromium || true)
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "SKIP: node/npm not installed: the browser tests did not run"
elif [ -z "$chromium" ]; then
  echo "SKIP: chromium not installed (scripts/deps.sh test): the browser tests did not run"
else
  mkdir -p "$npmdir"
  if [ -d "$npmdir/node_modules/puppeteer-core" ] || (cd "$npmdir" && timeout 300 npm install --no-audit --no-fund --silent puppeteer-core >"$tmp/npm.log" 2>&1); then
    if KVL_NPM_DIR=$npmdir KVL_CHROMIUM=$chromium KVL_BASE_CHAT=http://127.0.0.1:$chat_port \
      KVL_BASE_LOAD=http://127.0.0.1:$load_port KVL_BASE_KEY=http://127.0.0.1:$key_port KVL_KEY=sekret \
      node --test --test-concurrency=1 "$src"/tests/browser/*.test.mjs >"$tmp/node.out" 2>&1; then
      ok
    else
      bad "browser tests:"; cat "$tmp/node.out"
    fi
    grep -E '^# (tests|pass|fail)' "$tmp/node.out"
  else
    echo "SKIP: npm install puppeteer-core failed (no registry?): $(tail -2 "$tmp/npm.log")"
  fi
fi

echo "test_browser: $pass passed, $fail failed"
[ "$fail" = 0 ]
