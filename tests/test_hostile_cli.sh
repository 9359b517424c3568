#!/usr/bin/env bash
# Hostile model files from the command line (issue 14's loader hardening):
# NaN weights are found by --check-tensors (naming the tensor) and make ppl
# fail instead of printing "ppl nan" with exit 0; a FIFO is refused at once;
# a llama2.c checkpoint longer than its header is refused with both sizes.
set -u
BIN=${KVL_BIN:?KVL_BIN must point to kvllm}
SHARED=${KVL_SHARED:?}
TMP=${KVL_TMP:-/tmp}/hostile_cli.$$
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
fails=0
checks=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
# expect RC NEEDLE CMD...: exit RC and NEEDLE in stderr
expect() {
    local rc=$1 needle=$2; shift 2
    checks=$((checks + 1))
    timeout 60 "$@" >"$TMP/out" 2>"$TMP/err"
    local got=$?
    [ $got -eq "$rc" ] || fail "$*: exit $got, want $rc: $(tail -3 "$TMP/err")"
    [ -z "$needle" ] || grep -qF -- "$needle" "$TMP/err" ||
        fail "$*: stderr lacks '$needle': $(tail -3 "$TMP/err")"
}

# NaN in the last 16 floats of an F32 file (the last rows of output.weight)
"$BIN" mkmodel -o "$TMP/m.gguf" --type f32 >/dev/null || fail "mkmodel"
cp "$TMP/m.gguf" "$TMP/nan.gguf"
sz=$(stat -c %s "$TMP/nan.gguf")
printf '\xff\xff\xff\xff%.0s' {1..16} | dd of="$TMP/nan.gguf" bs=1 seek=$((sz - 64)) conv=notrunc 2>/dev/null
head -c 3000 "$SHARED/models/TinyStories-valid-reduced.txt" >"$TMP/t.txt"
expect 0 "" "$BIN" run -m "$TMP/m.gguf" -p Once -n 2 --check-tensors
expect 1 "check tensors: 'output.weight' row 511 column 48 is NaN" \
    "$BIN" run -m "$TMP/nan.gguf" -p Once -n 2 --check-tensors
expect 1 "check tensors: 'output.weight'" "$BIN" ppl -m "$TMP/nan.gguf" -f "$TMP/t.txt" --check-tensors
expect 1 "check tensors: 'output.weight'" "$BIN" bench -m "$TMP/nan.gguf" -p 4 -n 2 -r 1 --check-tensors
expect 1 "the loss is NaN or Inf at 1342 of 1342 positions" "$BIN" ppl -m "$TMP/nan.gguf" -f "$TMP/t.txt"
expect 0 "" "$BIN" ppl -m "$TMP/m.gguf" -f "$TMP/t.txt"
for c in run ppl bench serve; do
    checks=$((checks + 1))
    "$BIN" $c --help | grep -qF -- "--check-tensors" || fail "$c --help lacks --check-tensors"
done

# a FIFO is refused without waiting for a writer
mkfifo "$TMP/fifo.gguf"
expect 1 "fifo.gguf: not a regular file" "$BIN" run -m "$TMP/fifo.gguf" -p x -n 1
expect 1 "fifo.gguf: not a regular file" "$BIN" tokenize -m "$TMP/fifo.gguf" -p x

# an empty file and a GGUF with another magic are named for what they are
: >"$TMP/empty.gguf"
expect 1 "empty.gguf: not a model file: it is empty (0 bytes)" "$BIN" run -m "$TMP/empty.gguf" -p x
printf 'GGUX' >"$TMP/ggux.gguf"
expect 1 "not a model file: it is not GGUF (it starts with 'GGUX', not 'GGUF')" \
    "$BIN" run -m "$TMP/ggux.gguf" -p x

# a llama2.c checkpoint with bytes past what its header describes
cp "$SHARED/models/stories260K.bin" "$TMP/long.bin"
cp "$SHARED/models/tok512.bin" "$TMP/tok512.bin"
printf '\0\0\0\0' >>"$TMP/long.bin"
expect 1 "needs a file of 1056540 bytes but the file has 1056544 (longer" \
    "$BIN" run -m "$TMP/long.bin" -p x -n 1

echo "test_hostile_cli: $checks checks, $fails failed"
[ "$fails" -eq 0 ]
