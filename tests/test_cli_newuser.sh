#!/usr/bin/env bash
# What a new user hit (issue 13), tried as one would: each case gets an exit
# status and a message that names the argument, the value and the limit.
set -u
bin=${KVL_BIN:?}
shared=${KVL_SHARED:?}
tmp=${KVL_TMP:-/tmp}/newuser
mkdir -p "$tmp"
model=$shared/models/stories260K.gguf
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
expect_rc() { # rc cmd... ; stdout in $tmp/out, stderr in $tmp/err
  local want=$1
  shift
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  [ "$rc" = "$want" ] && ok || { bad "rc $rc != $want: $*"; cat "$tmp/err"; }
}
expect_err() { # needle
  grep -qF -- "$1" "$tmp/err" && ok || { bad "stderr lacks '$1'"; cat "$tmp/err"; }
}
no_err() { # needle
  grep -qF -- "$1" "$tmp/err" && { bad "stderr has '$1'"; cat "$tmp/err"; } || ok
}

# a stray word or an unknown flag is named as such, never as "needs a value"
expect_rc 2 "$bin" run "Once upon a time"
expect_err "unexpected argument 'Once upon a time'"; expect_err "the prompt goes after -p"
no_err "needs a value"
expect_rc 2 "$bin" run -m "$model" "Once upon a time" -n 5
expect_err "unexpected argument 'Once upon a time'"
expect_rc 2 "$bin" run --frobnicate;       expect_err "unknown flag '--frobnicate'"; no_err "needs a value"
expect_rc 2 "$bin" ppl --frobnicate;       expect_err "unknown flag '--frobnicate'"
expect_rc 2 "$bin" ppl story.txt;          expect_err "unexpected argument 'story.txt'"
expect_rc 2 "$bin" bench --frobnicate;     expect_err "unknown flag '--frobnicate'"
expect_rc 2 "$bin" bench 512;              expect_err "unexpected argument '512'"
expect_rc 2 "$bin" mkmodel out.gguf;       expect_err "unexpected argument 'out.gguf'"
expect_rc 2 "$bin" run -n;                 expect_err "-n needs a value"
# every value flag in run's help is still taken
expect_rc 0 "$bin" run -m "$model" --model "$model" -p "Tom" --prompt "Tom" -n 3 --n-predict 3 \
  -c 64 --ctx 64 --temp 0 --top-k 5 --top-p 0.9 --min-p 0.1 --repeat-penalty 1.1 \
  --repeat-last-n 8 -s 1 --seed 1 --stop zzz --parallel 1 -t 1 --threads 1 \
  --dump-logits "$tmp/logits" --load mmap --kv-type f32
expect_rc 0 "$bin" bench -m "$model" --model "$model" -p 4 --n-prompt 4 -n 2 --n-gen 2 -d 0 \
  --depth 0 -b 1 --batch 1 -r 1 --reps 1 -t 1 --threads 1 -o csv --output csv

# -t: the documented range is the pool's limit
expect_rc 2 "$bin" run -m "$model" -t 1000; expect_err "-t: 1000 is outside [1, 512]"
expect_rc 2 "$bin" bench -m "$model" -t 513; expect_err "-t: 513 is outside [1, 512]"
expect_rc 2 "$bin" ppl -f x -t 600;          expect_err "-t: 600 is outside [1, 512]"
for c in run ppl bench; do
  "$bin" $c --help | grep -qF -- "1..512" && ok || bad "$c --help: -t range"
done

# --kv-mem past 2^63 is refused, not wrapped
expect_rc 2 "$bin" run -m "$model" --kv-mem 1e19;  expect_err "--kv-mem: '1e19' is 1e+19 bytes; the limit is 2^63 - 1"
expect_rc 2 "$bin" run -m "$model" --kv-mem 8EiB;  expect_err "--kv-mem: unknown unit"
expect_rc 2 "$bin" run -m "$model" --kv-mem 9000000T; expect_err "the limit is 2^63 - 1"

echo "test_cli_newuser: $pass passed, $fail failed"
[ "$fail" = 0 ]
