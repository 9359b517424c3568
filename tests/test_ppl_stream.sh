#!/usr/bin/env bash
# kvllm ppl --stream with KV policies, end to end on stories260K (context
# 512): a stream past the context runs under window, sinks, h2o and snapkv
# and never holds more than the budget; --prompt (prefill, cut, decode)
# stays within the budget after the cut and, with a budget >= the stream,
# gives full KV's logits under every policy; with a budget at least the stream's length
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

# h2o and snapkv past the context: never above the budget
for pol in h2o snapkv; do
  ppl --stream 600 --kv-policy $pol --kv-budget-tokens 96 >"$tmp/$pol.txt" 2>"$tmp/$pol.err" || bad "$pol stream: $(cat "$tmp/$pol.err")"
  mx=$(val max_cache_len "$tmp/$pol.txt")
  ev=$(val evicted_tokens "$tmp/$pol.txt")
  [ -n "$mx" ] && [ "$mx" -le 96 ] && [ "$ev" -ge 500 ] && ok || bad "$pol: max_cache_len '$mx' evicted '$ev'"
done

# --prompt: a 300-token prompt prefilled whole, cut to a budget of 96, then
# decoded: never above the budget after the cut, each policy evicts; with
# a budget >= the stream every policy gives full KV's logits (KL 0)
for pol in window sinks h2o snapkv; do
  ppl --stream 400 -c 512 --kl-ref --prompt 300 --kv-policy $pol --kv-budget-tokens 96 >"$tmp/p$pol.txt" 2>"$tmp/p$pol.err" || bad "$pol prompt: $(cat "$tmp/p$pol.err")"
  mx=$(val max_cache_len "$tmp/p$pol.txt")
  ev=$(val evicted_tokens "$tmp/p$pol.txt")
  k=$(val kl_mean "$tmp/p$pol.txt")
  [ -n "$mx" ] && [ "$mx" -le 96 ] && [ "$ev" -ge 300 ] && awk -v k="$k" 'BEGIN{exit !(k > 0 && k < 2)}' && ok ||
    bad "$pol prompt: max_cache_len '$mx' evicted '$ev' kl '$k'"
  ppl --stream 400 -c 512 --kl-ref --prompt 300 --kv-policy $pol --kv-budget-tokens 400 >"$tmp/q$pol.txt" 2>/dev/null || bad "$pol prompt within budget"
  [ "$(val kl_mean "$tmp/q$pol.txt")" = 0 ] && [ "$(val top1_agree "$tmp/q$pol.txt")" = 1.000000 ] &&
    [ "$(val evicted_tokens "$tmp/q$pol.txt")" = 0 ] && ok || bad "$pol prompt within budget: kl $(val kl_mean "$tmp/q$pol.txt")"
done
# snapkv and window keep different blocks of the same prompt
[ "$(val nll "$tmp/psnapkv.txt")" != "$(val nll "$tmp/pwindow.txt")" ] && ok || bad "snapkv == window after the cut"

# the scored policies' options are reported, with their defaults: h2o's
# mean score, mass stride, and no sink block unless --kv-sinks says so
# (before or after --kv-policy); a non-default stride, score and pool run
ppl --stream 300 --kv-policy h2o --kv-budget-tokens 96 >"$tmp/o1.txt" 2>/dev/null || bad "h2o defaults"
[ "$(val kv_score "$tmp/o1.txt")" = mean ] && [ "$(val kv_sinks "$tmp/o1.txt")" = 0 ] &&
  [ -n "$(val kv_mass_stride "$tmp/o1.txt")" ] && ok || bad "h2o defaults: $(tr '\n' ' ' <"$tmp/o1.txt")"
ppl --stream 300 --kv-sinks 4 --kv-policy h2o --kv-budget-tokens 96 --kv-score sum --kv-mass-stride 4 >"$tmp/o2.txt" 2>/dev/null || bad "h2o options"
[ "$(val kv_score "$tmp/o2.txt")" = sum ] && [ "$(val kv_sinks "$tmp/o2.txt")" = 4 ] &&
  [ "$(val kv_mass_stride "$tmp/o2.txt")" = 4 ] && [ "$(val max_cache_len "$tmp/o2.txt")" -le 96 ] && ok || bad "h2o options: $(tr '\n' ' ' <"$tmp/o2.txt")"
ppl --stream 400 --prompt 300 --kv-policy snapkv --kv-budget-tokens 96 --kv-pool 3 >"$tmp/o3.txt" 2>/dev/null || bad "snapkv pool"
[ "$(val kv_pool "$tmp/o3.txt")" = 3 ] && [ "$(val kv_sinks "$tmp/o3.txt")" = 0 ] &&
  [ "$(val max_cache_len "$tmp/o3.txt")" -le 96 ] && ok || bad "snapkv pool: $(tr '\n' ' ' <"$tmp/o3.txt")"
ppl --stream 300 --kv-policy sinks --kv-budget-tokens 96 >"$tmp/o4.txt" 2>/dev/null || bad "sinks default"
[ "$(val kv_sinks "$tmp/o4.txt")" = 4 ] && ok || bad "sinks default: $(val kv_sinks "$tmp/o4.txt")"
# --stream-skip: another stream of the same text
ppl --stream 300 --stream-skip 5 --kv-policy window --kv-budget-tokens 96 >"$tmp/o5.txt" 2>/dev/null || bad "stream-skip"
ppl --stream 300 --kv-policy window --kv-budget-tokens 96 >"$tmp/o6.txt" 2>/dev/null || bad "no skip"
[ "$(val stream_skip "$tmp/o5.txt")" = 5 ] && [ "$(val nll "$tmp/o5.txt")" != "$(val nll "$tmp/o6.txt")" ] &&
  [ "$(val stream_tokens "$tmp/o5.txt")" = 300 ] && ok || bad "stream-skip: $(val nll "$tmp/o5.txt") vs $(val nll "$tmp/o6.txt")"

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
ppl --stream 300 --kv-policy h2o --kv-budget-tokens 96 --kv-heavy 1.5 >/dev/null 2>"$tmp/e6.err"
[ $? = 2 ] && grep -q "kv-heavy: '1.5' is not a number in (0, 1)" "$tmp/e6.err" && ok || { bad "bad heavy"; cat "$tmp/e6.err"; }
ppl --stream 300 --kv-policy snapkv --kv-budget-tokens 64 --kv-sinks 4 >/dev/null 2>"$tmp/e7.err"
[ $? != 0 ] && grep -q "budget_tokens 64 not in \[80" "$tmp/e7.err" && ok || { bad "snapkv small budget"; cat "$tmp/e7.err"; }
ppl --stream 300 --kv-policy snapkv --kv-budget-tokens 48 >/dev/null 2>"$tmp/e7.err"
[ $? != 0 ] && grep -q "budget_tokens 48 not in \[64" "$tmp/e7.err" && ok || { bad "snapkv small budget, no sinks"; cat "$tmp/e7.err"; }
ppl --stream 300 --kv-policy h2o --kv-budget-tokens 96 --kv-score max >/dev/null 2>"$tmp/e9.err"
[ $? = 2 ] && grep -q "kv-score: 'max' is not sum or mean" "$tmp/e9.err" && ok || { bad "bad score"; cat "$tmp/e9.err"; }
ppl --stream 300 --kv-policy h2o --kv-budget-tokens 96 --kv-mass-stride 17 >/dev/null 2>"$tmp/e10.err"
[ $? != 0 ] && grep -q "mass_stride 17 not in \[0, block size 16\]" "$tmp/e10.err" && ok || { bad "bad mass stride"; cat "$tmp/e10.err"; }
ppl --stream 300 --kv-policy snapkv --kv-budget-tokens 96 --kv-pool 4 >/dev/null 2>"$tmp/e11.err"
[ $? != 0 ] && grep -q "pool 4 is not 0 (default 1) or an odd number" "$tmp/e11.err" && ok || { bad "bad pool"; cat "$tmp/e11.err"; }
ppl --stream 300 --stream-skip 500 --kv-policy window --kv-budget-tokens 96 >/dev/null 2>"$tmp/e12.err"
[ $? != 0 ] && grep -q "stream-skip 500: .* holds only 201 documents" "$tmp/e12.err" && ok || { bad "skip past the text"; cat "$tmp/e12.err"; }
ppl --stream-skip 3 >/dev/null 2>"$tmp/e13.err"
[ $? = 2 ] && grep -q "stream-skip 3 applies to a stream" "$tmp/e13.err" && ok || { bad "skip without stream"; cat "$tmp/e13.err"; }
ppl --stream 300 --prompt 299 --kv-policy h2o --kv-budget-tokens 96 >/dev/null 2>"$tmp/e8.err"
[ $? = 2 ] && grep -q "prompt + 1" "$tmp/e8.err" && ok || { bad "prompt too long"; cat "$tmp/e8.err"; }
ppl --kv-policy sinks --kv-budget-tokens 64 >/dev/null 2>"$tmp/e3.err"
[ $? = 2 ] && grep -q "give --stream N" "$tmp/e3.err" && ok || { bad "policy without stream"; cat "$tmp/e3.err"; }
ppl --stream 300 --kv-policy sinks --kv-budget-tokens 600 >/dev/null 2>"$tmp/e4.err"
[ $? != 0 ] && grep -q "max_ctx 512" "$tmp/e4.err" && ok || { bad "budget past context"; cat "$tmp/e4.err"; }
"$bin" run -m "$m" --tokenizer "$z" -p "Once" -n 4 --kv-policy sinks >/dev/null 2>"$tmp/e5.err"
[ $? = 2 ] && grep -q "needs --kv-budget-tokens" "$tmp/e5.err" && ok || { bad "run --kv-policy without a budget"; cat "$tmp/e5.err"; }

echo "test_ppl_stream: $pass passed, $fail failed"
[ "$fail" = 0 ]
