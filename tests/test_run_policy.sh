#!/usr/bin/env bash
# kvllm run --kv-policy window|sinks through the engine (docs/eviction.md):
# a budget that holds the whole stream gives full's tokens; a small budget
# generates past a 256-token context (-c) to -n with the cache
# bounded and the evictions reported; a missing budget, h2o, a budget
# under its bound and --parallel 2 are refused with exit 2 naming the field.
set -u
bin=${KVL_BIN:?}
shared=${KVL_SHARED:?}
tmp=${KVL_TMP:-/tmp}/run_policy
mkdir -p "$tmp"
m=$shared/models/stories260K.gguf
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
toks() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["samples"][0]["tokens"])' "$1"; }

"$bin" run -m "$m" -p "Once upon a time" -n 100 --temp 0 -o json >"$tmp/full.json" 2>/dev/null
for p in window sinks; do
    "$bin" run -m "$m" -p "Once upon a time" -n 100 --temp 0 -o json --kv-policy $p --kv-budget-tokens 256 >"$tmp/$p.json" 2>"$tmp/$p.err"
    [ "$(toks "$tmp/$p.json")" = "$(toks "$tmp/full.json")" ] && ok || { bad "$p with a large budget differs from full"; cat "$tmp/$p.err"; }
    # 5 + 700 positions past a 256-token context in a 64-position cache
    "$bin" run -m "$m" -p "Once upon a time" -n 700 -c 256 --temp 0 --ignore-eos --kv-policy $p --kv-budget-tokens 64 >"$tmp/$p.out" 2>"$tmp/$p.err"
    [ $? = 0 ] && grep -q "generated 700 tokens" "$tmp/$p.err" && ok || { bad "$p: 700 tokens past the context"; cat "$tmp/$p.err"; }
    grep -q "kv policy $p: [0-9]* blocks ([0-9]* positions) evicted" "$tmp/$p.err" && ok || { bad "$p: evictions reported"; cat "$tmp/$p.err"; }
done
"$bin" run -m "$m" -p x -n 5 --kv-policy window >/dev/null 2>"$tmp/e"; [ $? = 2 ] && grep -q -- "--kv-budget-tokens" "$tmp/e" && ok || { bad "missing budget"; cat "$tmp/e"; }
"$bin" run -m "$m" -p x -n 5 --kv-policy h2o --kv-budget-tokens 64 >/dev/null 2>"$tmp/e"; [ $? = 2 ] && grep -q "h2o" "$tmp/e" && ok || { bad "h2o refused"; cat "$tmp/e"; }
"$bin" run -m "$m" -p x -n 5 --kv-policy sinks --kv-budget-tokens 20 >/dev/null 2>"$tmp/e"; [ $? = 2 ] && grep -q "budget_tokens 20" "$tmp/e" && ok || { bad "small budget"; cat "$tmp/e"; }
"$bin" run -m "$m" -p x -n 5 --parallel 2 --kv-policy window --kv-budget-tokens 64 >/dev/null 2>"$tmp/e"; [ $? = 2 ] && grep -q "n 2" "$tmp/e" && ok || { bad "parallel 2"; cat "$tmp/e"; }
echo "test_run_policy: $pass passed, $fail failed"
[ "$fail" = 0 ]
