#!/usr/bin/env bash
# Take docs/web-page.png: kvllm serve with the shipped stories260K and a
# 16 KiB KV budget per stream... (see screenshot.mjs for the load).
#   tests/browser/screenshot.sh [BUILD_DIR] [OUT.png]
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
. "$src/scripts/lib_serve.sh"
build=$(cd "${1:-$src/build}" && pwd)
out=${2:-$src/docs/web-page.png}
shared=${KVL_SHARED:-$src/../shared}
npmdir=$build/npm_browser
[ -d "$npmdir/node_modules/puppeteer-core" ] || (mkdir -p "$npmdir" && cd "$npmdir" && npm install --no-audit --no-fund --silent puppeteer-core)
log=$(mktemp)
"$build/kvllm" serve -m "$shared/models/stories260K.gguf" --chat-template llama2 --port 0 -t 1 \
  --kv-mem 6MiB 2>"$log" &
spid=$!
trap 'kill $spid 2>/dev/null; rm -f "$log"' EXIT
port=$(kvl_serve_wait "$log" "$spid" 100) || { cat "$log"; exit 1; }
KVL_NPM_DIR=$npmdir node "$src/tests/browser/screenshot.mjs" "http://127.0.0.1:$port" "$out" "${KVL_SHOT_STREAMS:-12}"
