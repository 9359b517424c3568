#!/usr/bin/env bash
# End-to-end checks of kvllm run and kvllm ppl: the shipped model generates
# the golden text, perplexity matches the reference protocol, flags are
# validated, and bad input gets an error (exit 2) naming the flag.
set -u
bin=${KVL_BIN:?}
shared=${KVL_SHARED:?}
tmp=${KVL_TMP:-/tmp}
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
expect_rc() { # rc cmd... ; stderr kept in $tmp/err
  local want=$1
  shift
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  [ "$rc" = "$want" ] && ok || { bad "rc $rc != $want: $*"; cat "$tmp/err"; }
}
expect_err() { # needle
  grep -qF -- "$1" "$tmp/err" && ok || { bad "stderr lacks '$1'"; cat "$tmp/err"; }
}

# greedy text from the shipped model, both containers
want="Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high."
for m in stories260K.gguf stories260K.bin; do
  expect_rc 0 "$bin" run -m "$shared/models/$m" -p "Once upon a time" -n 200 --temp 0
  head -1 "$tmp/out" | grep -qF -- "$want" && ok || { bad "$m greedy text"; head -2 "$tmp/out"; }
  grep -q "tokens/s" "$tmp/err" && ok || bad "$m stats line"
done
# --load: the weights copied into huge pages and the file mapping give the
# same greedy text (both containers); a bad mode is a usage error naming it
for m in stories260K.gguf stories260K.bin; do
  for mode in huge mmap; do
    expect_rc 0 "$bin" run -m "$shared/models/$m" -p "Once upon a time" -n 200 --temp 0 --load $mode
    head -1 "$tmp/out" | grep -qF -- "$want" && ok || { bad "$m --load $mode greedy text"; head -2 "$tmp/out"; }
  done
done
expect_rc 2 "$bin" run -m "$shared/models/stories260K.gguf" --load big
expect_err "--load: 'big' is not auto, mmap or huge"
expect_rc 2 "$bin" bench -m "$shared/models/stories260K.gguf" --load
expect_err "--load"
# bench --roofline: one read of the weights' memory per timed tg repetition
# (positive GB/s) and decode's fraction of it; pp tests get none
expect_rc 0 "$bin" bench -m "$shared/models/stories260K.gguf" -p 8 -n 4 -r 3 --roofline -o json
python3 - "$tmp/out" <<'PY' && ok || bad "bench --roofline json"
import json, sys
rows = json.load(open(sys.argv[1]))
pp = [r for r in rows if r["kind"] == "pp"]
tg = [r for r in rows if r["kind"] == "tg"]
assert len(pp) == 1 and len(tg) == 1, rows
assert "weights_read_gbs" not in pp[0]
assert len(tg[0]["weights_read_gbs"]) == 3 and all(g > 0 for g in tg[0]["weights_read_gbs"])
assert tg[0]["roofline_frac"] > 0
PY
expect_rc 0 "$bin" bench -m "$shared/models/stories260K.gguf" -p 0 -n 4 -r 2 --roofline
expect_err "tg4: the weights' memory read at"
# default model (no -m) is found via KVL_SHARED
KVL_SHARED=$shared expect_rc 0 "$bin" run -n 20 --temp 0 -p "Once upon a time"
grep -qF "Once upon a time, there was" "$tmp/out" && ok || bad "default model"
# stop string: output ends before it and never contains it
expect_rc 0 "$bin" run -m "$shared/models/stories260K.gguf" -p "Once upon a time" -n 200 --temp 0 --stop "Lily"
grep -q "Lily" "$tmp/out" && bad "stop string printed" || ok
grep -qF "a little girl named" "$tmp/out" && ok || bad "text before stop string"
# sampling is deterministic for a seed and differs across seeds
"$bin" run -m "$shared/models/stories260K.gguf" -n 40 --temp 1 --seed 7 >"$tmp/s1" 2>/dev/null
"$bin" run -m "$shared/models/stories260K.gguf" -n 40 --temp 1 --seed 7 >"$tmp/s2" 2>/dev/null
"$bin" run -m "$shared/models/stories260K.gguf" -n 40 --temp 1 --seed 8 >"$tmp/s3" 2>/dev/null
cmp -s "$tmp/s1" "$tmp/s2" && ok || bad "same seed, different text"
cmp -s "$tmp/s1" "$tmp/s3" && bad "different seeds, same text" || ok
# parallel samples
expect_rc 0 "$bin" run -m "$shared/models/stories260K.gguf" -p "Tom and his dog" -n 30 --parallel 3 --temp 0.9
[ "$(grep -c '^--- sample' "$tmp/out")" = 3 ] && ok || bad "3 samples"

# bad flags and values
expect_rc 2 "$bin" run --bogus 1;                    expect_err "unknown flag '--bogus'"
expect_rc 2 "$bin" run -n -5;                        expect_err "-n: -5 is outside [0, 1000000]"
expect_rc 2 "$bin" run --temp abc;                   expect_err "--temp: 'abc' is not a number"
expect_rc 2 "$bin" run --top-p 2;                    expect_err "--top-p: 2 is outside"
expect_rc 2 "$bin" run -n;                           expect_err "-n needs a value"
expect_rc 2 "$bin" run -m "$shared/models/stories260K.gguf" -c 999999; expect_err "larger than the model's context"
expect_rc 1 "$bin" run -m /nonexistent.gguf;         expect_err "/nonexistent.gguf"
printf 'GGUF\x03\x00\x00\x00' >"$tmp/trunc.gguf"
expect_rc 1 "$bin" run -m "$tmp/trunc.gguf";         expect_err "gguf"
expect_rc 2 "$bin" nosuchcommand;                    expect_err "unknown command"
for c in run ppl mkmodel plan; do
  expect_rc 0 "$bin" "$c" --help
  grep -q "usage" "$tmp/out" && ok || bad "$c --help"
done

# perplexity with the reference protocol: 3.4208 within 0.0005
expect_rc 0 "$bin" ppl -m "$shared/models/stories260K.bin" -f "$shared/models/TinyStories-valid-reduced.txt"
ppl=$(awk '/^ppl /{print $2}' "$tmp/out")
toks=$(awk '/^predicted_tokens /{print $2}' "$tmp/out")
echo "ppl $ppl over $toks tokens"
[ "$toks" = 68541 ] && ok || bad "predicted tokens $toks != 68541"
awk -v p="$ppl" 'BEGIN{exit !(p > 3.4203 && p < 3.4213)}' && ok || bad "ppl $ppl not 3.4208"
expect_rc 0 "$bin" ppl -m "$shared/models/stories260K.gguf" -c 512 -f "$shared/models/TinyStories-valid-reduced.txt" --max-docs 20
awk '/^ppl /{p=$2} /^predicted_tokens /{t=$2} END{exit !(t == 6453 && p > 3.2945 && p < 3.2955)}' "$tmp/out" && ok || { bad "first 20 stories"; cat "$tmp/out"; }
# --long windows scores every token: 74,121 predictions (no story is cut)
expect_rc 0 "$bin" ppl -m "$shared/models/stories260K.bin" -f "$shared/models/TinyStories-valid-reduced.txt" --long windows --max-docs 20
awk '/^predicted_tokens /{t=$2} /^truncated /{c=$2} END{exit !(t == 6561 && c == 0)}' "$tmp/out" && ok || { bad "windows mode"; cat "$tmp/out"; }
expect_rc 2 "$bin" ppl -m "$shared/models/stories260K.gguf";  expect_err "-f TEXT is required"
expect_rc 2 "$bin" ppl -f x --split weird;  expect_err "--split: 'weird'"

# --prefix-tier belongs to the engine commands with a swap area: ppl, bench
# and chat refuse it naming the flag (they would ignore it); run takes it
for c in ppl bench chat; do
  expect_rc 2 "$bin" $c -m "$shared/models/stories260K.gguf" --prefix-tier host
  expect_err "kvllm $c: --prefix-tier: this subcommand has no prefix cache tier"
done
expect_rc 0 "$bin" run -m "$shared/models/stories260K.gguf" -p "Once upon a time" -n 8 --temp 0 \
  --prefix-tier host --swap-mem 1MiB
expect_rc 2 "$bin" run -m "$shared/models/stories260K.gguf" -p "x" --prefix-tier disk
expect_err "--prefix-tier: 'disk' is not off, host or file"

echo "test_cli: $pass passed, $fail failed"
[ "$fail" = 0 ]
