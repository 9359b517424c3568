#!/usr/bin/env bash
# Paged and contiguous KV give bit-identical logits and tokens, end to end
# through kvllm run: on stories260K (3 parallel samples, blocks of 16 and 5,
# a prompt spanning several blocks) and on a TinyLlama-1.1B-shaped model
# (1 layer, Q8_0, random weights from kvllm mkmodel). Also: --parallel
# stores a shared prompt once, and a budget too small for the request is
# refused with the numbers.
set -u
bin=${KVL_BIN:?}
shared=${KVL_SHARED:?}
tmp=${KVL_TMP:-/tmp}/kv_layouts
mkdir -p "$tmp"
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

prompt="Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball."
m260=$shared/models/stories260K.gguf
for bs in 16 5; do
  "$bin" run -m "$m260" -p "$prompt" -n 60 --parallel 3 --temp 0.9 --seed 3 --block-size $bs \
    --kv-layout paged --dump-logits "$tmp/p.f32" >"$tmp/p.txt" 2>"$tmp/p.err" || bad "paged run (block $bs)"
  "$bin" run -m "$m260" -p "$prompt" -n 60 --parallel 3 --temp 0.9 --seed 3 \
    --kv-layout contiguous --dump-logits "$tmp/c.f32" >"$tmp/c.txt" 2>"$tmp/c.err" || bad "contiguous run"
  [ -s "$tmp/p.f32" ] && cmp -s "$tmp/p.f32" "$tmp/c.f32" && ok || bad "stories260K logits differ (block $bs)"
  cmp -s "$tmp/p.txt" "$tmp/c.txt" && ok || bad "stories260K text differs (block $bs)"
done

# the prompt's KV is stored once for --parallel 8 (paged), 8 times (contiguous)
"$bin" run -m "$m260" -p "$prompt" -n 4 --parallel 8 --temp 0 >/dev/null 2>"$tmp/par.err" || bad "parallel 8"
grep -q "shared blocks" "$tmp/par.err" && grep -q "(8.00x)" "$tmp/par.err" && ok || { bad "parallel 8 sharing"; cat "$tmp/par.err"; }

# a budget that cannot hold one full-context sequence is refused with numbers
"$bin" run -m "$m260" -p "$prompt" -n 100 --kv-mem 4KiB >/dev/null 2>"$tmp/small.err"
[ $? = 2 ] && grep -q "4096" "$tmp/small.err" && ok || { bad "small budget refusal"; cat "$tmp/small.err"; }

# TinyLlama-1.1B shape, one layer, Q8_0
tl=$tmp/tl1.gguf
[ -f "$tl" ] || "$bin" mkmodel --preset tinyllama-1.1b --layers 1 --type q8_0 --seed 11 -o "$tl" >/dev/null 2>&1 || bad "mkmodel"
if [ -f "$tl" ]; then
  "$bin" run -m "$tl" -p "$prompt" -n 12 --parallel 2 --temp 0.7 --ctx 256 --kv-layout paged --kv-type f32 \
    --dump-logits "$tmp/tp.f32" >"$tmp/tp.txt" 2>"$tmp/tp.err" || { bad "tl paged"; cat "$tmp/tp.err"; }
  "$bin" run -m "$tl" -p "$prompt" -n 12 --parallel 2 --temp 0.7 --ctx 256 --kv-layout contiguous \
    --dump-logits "$tmp/tc.f32" >"$tmp/tc.txt" 2>"$tmp/tc.err" || bad "tl contiguous"
  [ -s "$tmp/tp.f32" ] && cmp -s "$tmp/tp.f32" "$tmp/tc.f32" && ok || bad "1.1B-shape logits differ"
  cmp -s "$tmp/tp.txt" "$tmp/tc.txt" && ok || bad "1.1B-shape text differs"
fi
echo "test_kv_layouts: $pass passed, $fail failed"
[ "$fail" = 0 ]
