#!/usr/bin/env bash
# kvllm run over the serving engine: what a new user hit, fixed. Every
# --parallel sample completes even when the pool holds fewer full contexts
# (queued or preempted, never cut short); the prompt from a file or
# standard input; -o json; -n past the context cut with a notice; a bare
# prompt or an unknown flag named as such; scheduling flags validated.
set -u
bin=${KVL_BIN:?}
shared=${KVL_SHARED:?}
tmp=${KVL_TMP:-/tmp}/run_engine
mkdir -p "$tmp"
m=$shared/models/stories260K.gguf
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# 16 samples, a pool of 12 full contexts: all 16 run to their length
"$bin" run -m "$m" --parallel 16 -c 64 --kv-mem 1MiB -p "Once upon a time" -n 64 >"$tmp/p16.out" 2>"$tmp/p16.err"
[ $? = 0 ] && ok || { bad "parallel 16 rc"; cat "$tmp/p16.err"; }
[ "$(grep -c '^--- sample [0-9]* (length) ---' "$tmp/p16.out")" = 16 ] && ok || { bad "16 samples to length"; head -40 "$tmp/p16.out"; }
grep -q "generated 944 tokens" "$tmp/p16.err" && ok || { bad "16 x 59 tokens"; cat "$tmp/p16.err"; }
grep -q "running the 16 samples as separate requests" "$tmp/p16.err" && ok || bad "split notice"
# the same with swap: every sample still completes
"$bin" run -m "$m" --parallel 16 -c 64 --kv-mem 1MiB --swap-mem 1MiB --preempt swap -p "Once upon a time" -n 64 >"$tmp/p16s.out" 2>"$tmp/p16s.err"
[ $? = 0 ] && [ "$(grep -c '(length) ---' "$tmp/p16s.out")" = 16 ] && ok || { bad "parallel 16 swap"; cat "$tmp/p16s.err"; }

# prompt from a file and from standard input equal -p
printf 'Tom and his dog' >"$tmp/prompt.txt"
"$bin" run -m "$m" -p "Tom and his dog" -n 30 --temp 0 >"$tmp/a.out" 2>/dev/null
"$bin" run -m "$m" -f "$tmp/prompt.txt" -n 30 --temp 0 >"$tmp/b.out" 2>/dev/null
"$bin" run -m "$m" -f - -n 30 --temp 0 <"$tmp/prompt.txt" >"$tmp/c.out" 2>/dev/null
cmp -s "$tmp/a.out" "$tmp/b.out" && cmp -s "$tmp/a.out" "$tmp/c.out" && ok || bad "-f FILE / -f - differ from -p"
"$bin" run -m "$m" -f "$tmp/missing.txt" >/dev/null 2>"$tmp/e"; [ $? = 2 ] && grep -q "cannot open" "$tmp/e" && ok || bad "-f missing"
"$bin" run -m "$m" -f "$tmp/prompt.txt" -p x >/dev/null 2>"$tmp/e"; [ $? = 2 ] && grep -q "use one" "$tmp/e" && ok || bad "-f and -p"

# -o json: text, tokens, usage, timings
"$bin" run -m "$m" -p "Once upon a time" -n 20 --temp 0 -o json >"$tmp/j.out" 2>/dev/null
python3 - "$tmp/j.out" "$tmp/a.out" <<'PY' && ok || bad "json output"
import json, sys
d = json.load(open(sys.argv[1]))
s = d["samples"][0]
assert d["usage"]["prompt_tokens"] == 5 and d["usage"]["completion_tokens"] == 20, d["usage"]
assert len(s["tokens"]) == 20 and s["finish_reason"] == "length"
assert s["text"].startswith(", there was a little girl"), s["text"]
assert d["timings"]["e2e_s"] >= d["timings"]["ttft_s"] >= 0
PY

# -n past the context: cut, with a notice naming the numbers
"$bin" run -m "$m" -c 32 -p "Once upon a time" -n 100 --temp 0 >/dev/null 2>"$tmp/e"
[ $? = 0 ] && grep -q "leaves 27 of the context's 32 positions; generating at most 27" "$tmp/e" && ok || { bad "-n past context"; cat "$tmp/e"; }

# a bare prompt and unknown flags are named as what they are
"$bin" run "Once upon a time" >/dev/null 2>"$tmp/e"; [ $? = 2 ] && grep -q "unexpected argument 'Once upon a time'" "$tmp/e" && ok || { bad "bare prompt"; cat "$tmp/e"; }
"$bin" run --frobnicate >/dev/null 2>"$tmp/e"; [ $? = 2 ] && grep -q "unknown flag '--frobnicate'" "$tmp/e" && ok || { bad "unknown flag"; cat "$tmp/e"; }
"$bin" run --preempt sometimes >/dev/null 2>"$tmp/e"; [ $? = 2 ] && grep -q "not auto, recompute or swap" "$tmp/e" && ok || bad "--preempt"
"$bin" run --max-batch-tokens 0 >/dev/null 2>"$tmp/e"; [ $? = 2 ] && grep -q "outside \[1, 65536\]" "$tmp/e" && ok || bad "--max-batch-tokens"

# a long prompt prefilled in chunks gives the text of one pass
long=$(printf 'Once upon a time, there was a little girl named Lily. %.0s' 1 2 3 4 5 6)
"$bin" run -m "$m" -p "$long" -n 40 --temp 0 >"$tmp/l1.out" 2>/dev/null
"$bin" run -m "$m" -p "$long" -n 40 --temp 0 --max-batch-tokens 7 >"$tmp/l2.out" 2>/dev/null
cmp -s "$tmp/l1.out" "$tmp/l2.out" && ok || bad "chunked prefill text differs"
echo "test_run_engine: $pass passed, $fail failed"
[ "$fail" = 0 ]
