#!/usr/bin/env bash
# kvllm ppl --stream with KV policies, end to end on stories260K (context
# 512): a stream past the context runs under window and sinks and never
# holds more than the budget; with a budget at least the stream's length
# window and sinks score exactly the same and match full f32 KV decoding
# the same stream (--kl-ref: KL 0); bad policy flags are refused
# with the field and the limit; run refuses the policy flags.
set -u
bin=${KVL_BIN:?}
shared=${KVL_SHARED:?}
tmp=${KVL_TMP:-/tmp}/ppl_stream
mkdir -p "$tmp"
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
m=$shared/models/stories260K.bin
z=$shared/models/tok512.bin
t=$shared/models/TinyStories-valid-reduced.txt
ppl() { "$bin" ppl -m "$m" --tokenizer "$z" -f "$t" -t 1 "$@"; }
val() { awk -v k="$1" '$1==k{print $2}' "$2"; }

# past the context (600 > 512) with a budget of 96
for pol in window sinks; do
  ppl --stream 600 --kv-policy $pol --kv-budget-tokens 96 >"$tmp/$pol.txt" 2>"$tmp/$pol.err" || bad "$pol stream: $(cat "$tmp/$pol.err")"
  mx=$(val max_cache_len "$tmp/$pol.txt")
  ev=$(val evicted_tokens "$tmp/$pol.txt")
  [ -n "$mx" ] && [ "$mx" -le 96 ] && [ "$ev" -ge 500 ] && ok || bad "$pol: max_cache_len '$mx' evicted '$ev'"
  p=$(val ppl "$tmp/$pol.txt")
  awk -v p="$p" 'BEGIN{exit !(p > 1 && p < 20)}' && ok || bad "$pol: ppl '$p'"
done

# --stream-log: a line every 256 tokens; KV bytes stop growing at the budget
ppl --stream 1300 --kv-policy sinks --kv-budget-tokens 128 --stream-log "$tmp/log.txt" >/dev/null 2>&1 || bad "stream-log run"
[ "$(wc -l <"$tmp/log.txt")" = 5 ] && [ "$(awk '{print $3}' "$tmp/log.txt" | sort -u | wc -l)" = 1 ] &&
  [ "$(awk '{print $4}' "$tmp/log.txt" | sort -u)" -le 128 ] && ok || { bad "stream-log"; cat "$tmp/log.txt"; }

# budget >= stream: no eviction, the same numbers for both policies
ppl --stream 300 --kv-policy window --kv-budget-tokens 320 >"$tmp/w.txt" 2>/dev/null || bad "window 320"
ppl --stream 300 --kv-policy sinks --kv-budget-tokens 300 >"$tmp/s.txt" 2>/dev/null || bad "sinks 300"
[ "$(val nll "$tmp/w.txt")" = "$(val nll "$tmp/s.txt")" ] && [ "$(val evicted_tokens "$tmp/s.txt")" = 0 ] && ok ||
  bad "within budget: window nll $(val nll "$tmp/w.txt") sinks $(val nll "$tmp/s.txt")"

# against full f32 KV decoding the same stream: identical logits (KL 0,
# every top-1 the same) within the budget; evicting changes them
ppl --stream 300 -c 512 --kl-ref --kv-policy sinks --kv-budget-tokens 320 >"$tmp/k0.txt" 2>/dev/null || bad "kl-ref within budget"
[ "$(val kl_mean "$tmp/k0.txt")" = 0 ] && [ "$(val top1_agree "$tmp/k0.txt")" = 1.000000 ] && ok ||
  bad "kl within budget: $(val kl_mean "$tmp/k0.txt") $(val top1_agree "$tmp/k0.txt")"
ppl --stream 300 -c 512 --kl-ref --kv-policy window --kv-budget-tokens 64 >"$tmp/k1.txt" 2>/dev/null || bad "kl-ref evicting"
awk -v k="$(val kl_mean "$tmp/k1.txt")" 'BEGIN{exit !(k > 0 && k < 1)}' && ok || bad "kl evicting: $(val kl_mean "$tmp/k1.txt")"

# refusals: exit 2 (usage) or 1, with the field named
ppl --stream 300 --kv-policy sinks --kv-budget-tokens 20 >/dev/null 2>"$tmp/e1.err"
[ $? != 0 ] && grep -q "budget_tokens 20 not in \[48" "$tmp/e1.err" && ok || { bad "small budget"; cat "$tmp/e1.err"; }
ppl --stream 300 --kv-policy lru >/dev/null 2>"$tmp/e2.err"
[ $? = 2 ] && grep -q "'lru' is not full, window, sinks, h2o or snapkv" "$tmp/e2.err" && ok || { bad "bad policy"; cat "$tmp/e2.err"; }
ppl --kv-policy sinks --kv-budget-tokens 64 >/dev/null 2>"$tmp/e3.err"
[ $? = 2 ] && grep -q "give --stream N" "$tmp/e3.err" && ok || { bad "policy without stream"; cat "$tmp/e3.err"; }
ppl --stream 300 --kv-policy sinks --kv-budget-tokens 600 >/dev/null 2>"$tmp/e4.err"
[ $? != 0 ] && grep -q "max_ctx 512" "$tmp/e4.err" && ok || { bad "budget past context"; cat "$tmp/e4.err"; }
"$bin" run -m "$m" --tokenizer "$z" -p "Once" -n 4 --kv-policy sinks >/dev/null 2>"$tmp/e5.err"
[ $? = 2 ] && grep -q "keeps full KV" "$tmp/e5.err" && ok || { bad "run --kv-policy"; cat "$tmp/e5.err"; }

echo "test_ppl_stream: $pass passed, $fail failed"
[ "$fail" = 0 ]
