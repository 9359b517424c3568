#!/usr/bin/env bash
# kvllm run --kv-policy window|sinks|h2o|snapkv through the engine
# (docs/eviction.md): a budget that holds the whole stream gives full's
# tokens; a small budget generates past a 256-token context (-c) to -n with
# the cache bounded and the evictions reported; snapkv cuts a prompt longer
# than its budget after the prefill (prefilled in one batch and in chunks of
# --max-batch-tokens); a missing budget, a budget under its bound, --kv-heavy and
# --kv-obs-window out of range and --parallel 2 are refused with exit 2
# naming the field.
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
for p in window sinks h2o snapkv; do
    "$bin" run -m "$m" -p "Once upon a time" -n 100 --temp 0 -o json --kv-policy $p --kv-budget-tokens 256 >"$tmp/$p.json" 2>"$tmp/$p.err"
    [ "$(toks "$tmp/$p.json")" = "$(toks "$tmp/full.json")" ] && ok || { bad "$p with a large budget differs from full"; cat "$tmp/$p.err"; }
    # 5 + 700 positions past a 256-token context in a 64-position cache
    "$bin" run -m "$m" -p "Once upon a time" -n 700 -c 256 --temp 0 --ignore-eos --kv-policy $p --kv-budget-tokens 64 --kv-obs-window 8 --kv-heavy 0.25 >"$tmp/$p.out" 2>"$tmp/$p.err"
    [ $? = 0 ] && grep -q "generated 700 tokens" "$tmp/$p.err" && ok || { bad "$p: 700 tokens past the context"; cat "$tmp/$p.err"; }
    grep -q "kv policy $p: [0-9]* blocks ([0-9]* positions) evicted" "$tmp/$p.err" && ok || { bad "$p: evictions reported"; cat "$tmp/$p.err"; }
done
"$bin" run -m "$m" -p x -n 5 --kv-policy window >/dev/null 2>"$tmp/e"; [ $? = 2 ] && grep -q -- "--kv-budget-tokens" "$tmp/e" && ok || { bad "missing budget"; cat "$tmp/e"; }
# snapkv: a prompt of about 150 tokens cut to a budget of 64 right after its
# prefill (the first decode step already holds at most 64 positions), in one
# batch and in chunks of 40 tokens
long="Once upon a time there was a little girl named Lily. She loved to play outside in the park with her friends. One day she saw a big red ball near the tree and she ran to get it. Her mom said to be careful. Lily smiled and said she would. Then the sun came out and the birds sang a happy song. Lily and her friends played until the sky was dark."
for b in 256 40; do
    "$bin" run -m "$m" -p "$long" -n 50 -c 256 --max-batch-tokens $b --temp 0 --ignore-eos --kv-policy snapkv --kv-budget-tokens 64 --kv-obs-window 8 >"$tmp/snap.out" 2>"$tmp/snap.err"
    n=$(sed -n 's/.*prompt \([0-9]*\) tokens.*/\1/p' "$tmp/snap.err")
    ev=$(sed -n 's/.*kv policy snapkv: [0-9]* blocks (\([0-9]*\) positions) evicted.*/\1/p' "$tmp/snap.err")
    # fed: the prompt + 49 outputs; at most 64 remain
    [ -n "$n" ] && [ "$n" -gt 64 ] && [ -n "$ev" ] && [ $((n + 49 - ev)) -le 64 ] && ok || { bad "snapkv --max-batch-tokens $b: prompt $n cut (evicted $ev)"; cat "$tmp/snap.err"; }
done
"$bin" run -m "$m" -p x -n 5 --kv-policy h2o --kv-budget-tokens 64 --kv-heavy 1.5 >/dev/null 2>"$tmp/e"; [ $? = 2 ] && grep -q -- "--kv-heavy" "$tmp/e" && ok || { bad "heavy 1.5"; cat "$tmp/e"; }
"$bin" run -m "$m" -p x -n 5 --kv-policy snapkv --kv-budget-tokens 48 >/dev/null 2>"$tmp/e"; [ $? = 2 ] && grep -q "budget_tokens 48 not in \[64" "$tmp/e" && ok || { bad "snapkv budget under its window"; cat "$tmp/e"; }
"$bin" run -m "$m" -p x -n 5 --kv-policy snapkv --kv-budget-tokens 64 --kv-obs-window 500 >/dev/null 2>"$tmp/e"; [ $? = 2 ] && grep -q "obs_window 500" "$tmp/e" && ok || { bad "obs_window 500"; cat "$tmp/e"; }
"$bin" run -m "$m" -p x -n 5 --kv-policy sinks --kv-budget-tokens 20 >/dev/null 2>"$tmp/e"; [ $? = 2 ] && grep -q "budget_tokens 20" "$tmp/e" && ok || { bad "small budget"; cat "$tmp/e"; }
"$bin" run -m "$m" -p x -n 5 --parallel 2 --kv-policy window --kv-budget-tokens 64 >/dev/null 2>"$tmp/e"; [ $? = 2 ] && grep -q "n 2" "$tmp/e" && ok || { bad "parallel 2"; cat "$tmp/e"; }
echo "test_run_policy: $pass passed, $fail failed"
[ "$fail" = 0 ]
