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

# mkmodel -o: a path that is not a regular file is refused and left alone; a
# symbolic link planted where the temporary file once went is not followed
rm -f "$tmp/fifo"; mkfifo "$tmp/fifo"
expect_rc 2 "$bin" mkmodel -o "$tmp/fifo" --layers 1
expect_err "'$tmp/fifo' exists and is a FIFO, not a regular file: refusing to replace it"
[ -p "$tmp/fifo" ] && ok || bad "the FIFO was replaced"
if [ "$(id -u)" = 0 ]; then # as root: a copy of /dev/full's node, never the real one
  rm -f "$tmp/full"
  if mknod "$tmp/full" c 1 7 2>/dev/null; then
    expect_rc 2 "$bin" mkmodel -o "$tmp/full" --layers 1
    expect_err "exists and is a character device"
    [ -c "$tmp/full" ] && ok || bad "the device node was replaced"
  fi
fi
printf precious >"$tmp/victim"
rm -f "$tmp/link.gguf"; ln -s "$tmp/victim" "$tmp/link.gguf"
expect_rc 2 "$bin" mkmodel -o "$tmp/link.gguf" --layers 1; expect_err "is a symbolic link"
[ "$(cat "$tmp/victim")" = precious ] && ok || bad "the link's target was written"
# the old temporary names, planted for every pid nearby: none is followed
rm -f "$tmp/m.gguf" "$tmp"/m.gguf.tmp-*
for p in $(seq $(($$ + 1)) $(($$ + 200))); do ln -s "$tmp/victim" "$tmp/m.gguf.tmp-$p"; done
expect_rc 0 "$bin" mkmodel -o "$tmp/m.gguf" --layers 1
[ "$(cat "$tmp/victim")" = precious ] && ok || bad "a planted link's target was written"
[ -f "$tmp/m.gguf" ] && [ ! -L "$tmp/m.gguf" ] && ok || bad "no regular output file"
ls -a "$tmp" | grep -q '^\.m\.gguf\.tmp-' && bad "temporary file left behind" || ok
rm -f "$tmp"/m.gguf.tmp-*

# NaN logits fail the quality gates (they once read "KL 0, top-1 100%"): a copy of
# stories260K.bin whose BOS embedding row (token 1, dim 64) is NaN
python3 - "$shared/models/stories260K.bin" "$tmp/nan.bin" <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
dim = struct.unpack("<i", b[:4])[0]
off = 28 + 1 * dim * 4
b[off:off + dim * 4] = struct.pack("<%df" % dim, *([float("nan")] * dim))
open(sys.argv[2], "wb").write(b)
PY
tok="--tokenizer $shared/models/tok512.bin"
expect_rc 1 "$bin" ppl -m "$tmp/nan.bin" $tok -f "$shared/models/TinyStories-valid-reduced.txt" \
  --max-docs 2 --kl-ref --kv-type int8
grep -qx "kl_mean inf" "$tmp/out" && ok || { bad "ppl --kl-ref: kl_mean not inf"; cat "$tmp/out"; }
grep -qx "top1_agree 0.000000" "$tmp/out" && ok || bad "ppl --kl-ref: top-1 not 0"
expect_err "--kl-ref: 680 of 680 positions have NaN logits (KL inf)"
expect_rc 0 "$bin" run -m "$tmp/nan.bin" $tok -n 2 --kv-check --kv-type int8
expect_err "warning: kv check: the f32-KV reference logits hold NaN at 255 of 255 positions"
no_err "ok (mean KL"

# a text file is "not a model file", not a llama2.c header complaint
printf 'hello world, this is a text file\n' >"$tmp/notes.txt"
for c in run "ppl -f $tmp/notes.txt" bench; do
  expect_rc 1 "$bin" $c -m "$tmp/notes.txt"
  expect_err "$tmp/notes.txt: not a model file: it is not GGUF (it starts with 'hell', not 'GGUF') and not a llama2.c checkpoint"
done
# a llama2.c tokenizer of another size is refused with both numbers, given or found
expect_rc 1 "$bin" run -m "$shared/models/stories260K.bin" --tokenizer "$shared/models/tokenizer.bin" -n 2
expect_err "tokenizer.bin: the tokenizer holds 32000 pieces but the model's vocab_size is 512"
rm -rf "$tmp/l2c" && mkdir -p "$tmp/l2c" && cp "$shared/models/stories260K.bin" "$shared/models/tokenizer.bin" "$tmp/l2c/"
expect_rc 1 "$bin" run -m "$tmp/l2c/stories260K.bin" -n 2
expect_err "the tokenizer holds 32000 pieces but the model's vocab_size is 512"
cp "$shared/models/tok512.bin" "$tmp/l2c/"
expect_rc 0 "$bin" run -m "$tmp/l2c/stories260K.bin" -n 2

# bench records the KV cache it measured, in every output format
expect_rc 0 "$bin" bench -m "$model" -p 8 -n 2 -r 1 -b 1,2 -o json --kv-type int8 --kv-type-v f16
python3 - "$tmp/out" <<'PY' && ok || bad "bench json kv fields"
import json, sys
rows = json.load(open(sys.argv[1]))
assert len(rows) == 3, rows
for r in rows:
    assert r["kv"] == "paged K int8 V f16 block 16", r["kv"]
    assert (r["kv_layout"], r["kv_type_k"], r["kv_type_v"], r["kv_block_size"]) == \
        ("paged", "int8", "f16", 16), r
PY
expect_rc 0 "$bin" bench -m "$model" -p 8 -n 2 -r 1 -o json --kv-layout contiguous
python3 - "$tmp/out" <<'PY' && ok || bad "bench json contiguous kv fields"
import json, sys
for r in json.load(open(sys.argv[1])):
    assert r["kv"] == "contiguous K f32 V f32" and r["kv_layout"] == "contiguous", r
    assert r["kv_block_size"] is None and r["kv_type_k"] == r["kv_type_v"] == "f32", r
PY
expect_rc 0 "$bin" bench -m "$model" -p 8 -n 2 -r 1 --kv-type-k int4
head -1 "$tmp/out" | grep -qF "| threads | kv | test |" && ok || bad "text header lacks kv"
[ "$(grep -cF "| paged K int4 V f32 block 32 |" "$tmp/out")" = 2 ] && ok || { bad "text kv column"; cat "$tmp/out"; }
expect_rc 0 "$bin" bench -m "$model" -p 8 -n 0 -r 1 -o csv --kv-type f32
python3 - "$tmp/out" <<'PY' && ok || bad "csv kv columns"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert len(rows) == 1, rows
r = rows[0]
assert (r["kv_layout"], r["kv_type_k"], r["kv_type_v"], r["kv_block_size"]) == ("paged", "f32", "f32", "16"), r
PY
# bench --help: the model is optional; the KV flags sit under their heading,
# before the columns and the examples
expect_rc 0 "$bin" bench --help
grep -qF "usage: kvllm bench [-m MODEL] [flags]" "$tmp/out" && ok || bad "bench usage line"
awk '/^KV cache/{h=NR} /--kv-layout/{k=NR} /^examples:/{e=NR} END{exit !(h && k == h + 2 && e > k)}' "$tmp/out" \
  && ok || { bad "bench --help layout"; cat "$tmp/out"; }
# bench --kv-check measures the chosen formats once, before the tests
expect_rc 0 "$bin" bench -m "$model" -p 8 -n 2 -r 1 --kv-type int8 --kv-check
expect_err "kv check: K int8 V int8 (block 16), 255 positions"
[ "$(grep -c "^kv check: K int8 V int8 (block" "$tmp/err")" = 1 ] && ok || bad "kv check ran more than once"
# bench -d past the model's context (stories260K.gguf: 2048) is refused up front
expect_rc 2 "$bin" bench -m "$model" -d 100000 -p 512 -n 0
expect_err "pp512@d100000: -d 100000 with 512 tokens needs 100512 positions; the model's context is 2048"
expect_rc 2 "$bin" bench -m "$model" -d 0,2000 -p 0 -n 64
expect_err "tg64@d2000: -d 2000 with 64 tokens needs 2064 positions; the model's context is 2048"
[ -s "$tmp/out" ] && bad "a table was printed before the refusal" || ok
expect_rc 0 "$bin" bench -m "$model" -d 2040 -p 8 -n 0 -r 1

# a file claiming a 16M-token context: a plain run reserves what the request
# needs (prompt 2 + -n 8 = 10 positions: one block of 16 x 640 bytes), not 10 GiB
expect_rc 0 "$bin" mkmodel -o "$tmp/ctx16m.gguf" --ctx 16777216 --type f16
expect_rc 0 "$bin" run -m "$tmp/ctx16m.gguf" -p "Once" -n 8 --temp 0
expect_err "KV budget 10240 bytes: what 1 sequence of 10 positions need (the request; the context is 16777216)"
expect_err "kv cache: budget 10240 bytes -> 1 blocks"
expect_rc 0 "$bin" run -m "$tmp/ctx16m.gguf" -p "Once" -n 8 --temp 0 --parallel 3
expect_err "KV budget 30720 bytes: what 3 sequences of 10 positions need"
# --kv-mem still sets the budget (and no note claims otherwise)
expect_rc 0 "$bin" run -m "$model" -p "Once" -n 8 --temp 0 --kv-mem 4MiB
expect_err "kv cache: budget 4194304 bytes"; no_err "KV budget"
# the budget follows the request; the text does not change
"$bin" run -m "$model" -p "Once upon a time" -n 40 --temp 0 --parallel 2 --kv-mem 64MiB >"$tmp/big.txt" 2>/dev/null
expect_rc 0 "$bin" run -m "$model" -p "Once upon a time" -n 40 --temp 0 --parallel 2
cmp -s "$tmp/out" "$tmp/big.txt" && ok || bad "text differs with the request-sized budget"

# -n past the context: a notice at start, with the numbers
expect_rc 0 "$bin" run -m "$model" -p "Once upon a time" -n 100 -c 16 --temp 0
expect_err "-n 100: the 5-token prompt leaves 11 of the context's 16 positions; generating at most 11 tokens"
expect_err "generated 11 tokens"
expect_rc 0 "$bin" run -m "$model" -p "Once upon a time" -n 11 -c 16 --temp 0; no_err "generating at most"

# progress: quiet when stderr is not a terminal ...
cr=$(printf '\r')
expect_rc 0 "$bin" run -m "$model" -n 4 --kv-check --kv-type int8
grep -q "$cr" "$tmp/err" && bad "run --kv-check: progress on a pipe" || ok
expect_rc 0 "$bin" ppl -m "$model" -f "$shared/models/TinyStories-valid-reduced.txt" --max-docs 3
grep -q "$cr" "$tmp/err" && bad "ppl: progress on a pipe" || ok
expect_rc 0 "$bin" bench -m "$model" -p 16 -n 4 -d 0,64 -r 2
grep -q "$cr" "$tmp/err" && bad "bench: progress on a pipe" || ok
# ... and a line that counts up, then is erased, on a terminal (script(1) gives one)
if command -v script >/dev/null && script -qec true /dev/null >/dev/null 2>&1; then
  script -qec "$bin run -m $model -n 4 --kv-check --kv-type int8" /dev/null >"$tmp/tty" 2>&1
  grep -aq "${cr}kv check: 100%${cr}" "$tmp/tty" && ok || bad "kv check progress on a terminal"
  script -qec "$bin ppl -m $model -f $shared/models/TinyStories-valid-reduced.txt --max-docs 3" \
    /dev/null >"$tmp/tty" 2>&1
  grep -aq "${cr}ppl:  33%${cr}ppl:  66%${cr}ppl: 100%${cr}" "$tmp/tty" && ok || bad "ppl progress on a terminal"
  script -qec "$bin bench -m $model -p 16 -n 4 -d 0,64 -r 2" /dev/null >"$tmp/tty" 2>&1
  grep -aq "${cr}bench pp16@d64 (3 of 4):  66%" "$tmp/tty" && ok || bad "bench progress on a terminal"
  grep -aq "${cr}bench tg4@d64 (4 of 4): 100%" "$tmp/tty" && ok || bad "bench progress on a terminal"
  # each table row starts on an erased line
  [ "$(grep -ac "$(printf '\033')\[K| llama " "$tmp/tty")" = 4 ] && ok || bad "table rows after erased progress"
else
  echo "test_cli_newuser: no script(1): terminal progress not checked"
fi

echo "test_cli_newuser: $pass passed, $fail failed"
[ "$fail" = 0 ]
