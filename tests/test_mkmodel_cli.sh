# kvllm mkmodel from the command line: good flags write a file, the same seed
# gives the same bytes and another seed other bytes, and every bad flag exits
# with code 2 and a message naming the flag, leaving no file behind.
set -u
BIN=${KVL_BIN:?KVL_BIN must point to kvllm}
TMP=${KVL_TMP:-/tmp}/mkmodel_cli.$$
[ -x "$BIN" ] || { echo "test_mkmodel_cli: $BIN is not an executable" >&2; exit 1; }
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
fails=0
checks=0

fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

# ok NAME ARGS...: must exit 0 and write $TMP/NAME.gguf
ok() {
    local name=$1; shift
    checks=$((checks + 1))
    "$BIN" mkmodel -o "$TMP/$name.gguf" "$@" >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    if [ $rc -ne 0 ]; then
        fail "mkmodel $* exited $rc: $(cat "$TMP/err")"
        return
    fi
    [ -s "$TMP/$name.gguf" ] || fail "mkmodel $*: no file"
    grep -q "wrote $TMP/$name.gguf" "$TMP/out" || fail "mkmodel $*: no summary: $(cat "$TMP/out")"
    [ -s "$TMP/err" ] && fail "mkmodel $*: stderr not quiet when not a terminal: $(cat "$TMP/err")"
    [ "$(head -c 4 "$TMP/$name.gguf")" = GGUF ] || fail "mkmodel $*: no GGUF magic"
}

# bad PATTERN ARGS...: must exit 2, say PATTERN on stderr, write nothing
bad() {
    local pat=$1; shift
    checks=$((checks + 1))
    rm -f "$TMP/bad.gguf"
    "$BIN" mkmodel "$@" >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    [ $rc -eq 2 ] || fail "mkmodel $*: exit $rc, expected 2"
    grep -qF -- "$pat" "$TMP/err" || fail "mkmodel $*: stderr lacks '$pat': $(cat "$TMP/err")"
    ls "$TMP"/bad.gguf* >/dev/null 2>&1 && fail "mkmodel $*: left a file behind"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# --- good flags
for t in f32 f16 bf16 q8_0 q4_0 Q8_0; do
    ok "s_$t" --preset stories260K --type "$t" --seed 5
done
# K-quants need rows of 256 values
for t in q2_k q4_k q5_k q6_k q4_k_m q5_k_m; do
    ok "k_$t" --preset stories260K --dim 256 --heads 4 --kv-heads 2 --ffn 512 --layers 2 \
        --type "$t" --seed 3
    grep -q "$t, dim 256" "$TMP/out" || fail "--type $t: summary does not name the type"
done
ok a --seed 1 --type q8_0
ok b --seed 1 --type q8_0
ok c --seed 2 --type q8_0
[ "$(sha "$TMP/a.gguf")" = "$(sha "$TMP/b.gguf")" ] || fail "same seed gave different files"
[ "$(sha "$TMP/a.gguf")" != "$(sha "$TMP/c.gguf")" ] || fail "different seeds gave the same file"
ok tiny --dim 32 --heads 4 --kv-heads 1 --ffn 96 --layers 2 --vocab-size 300 --ctx 64 \
    --type q4_0 --tied --alignment 64 --name tiny --rope-base 500000 --eps 1e-6
ok synth --synth-vocab --vocab-size 512
ok tl2 --preset tinyllama-1.1b --layers 1 --dim 64 --heads 4 --kv-heads 2 --ffn 128 --type q4_0
ok l3 --preset llama-3-8b --layers 1 --dim 64 --heads 4 --kv-heads 1 --ffn 64 --vocab-size 1000
if [ -n "${KVL_SHARED:-}" ] && [ -f "$KVL_SHARED/models/tok512.bin" ]; then
    ok v512 --vocab "$KVL_SHARED/models/tok512.bin"
    grep -q "tok512.bin" "$TMP/out" || fail "--vocab: summary does not name the vocabulary"
    bad "holds 512 pieces but the vocab size is 1000" -o "$TMP/bad.gguf" \
        --vocab "$KVL_SHARED/models/tok512.bin" --vocab-size 1000
fi
checks=$((checks + 1))
"$BIN" mkmodel --help >"$TMP/out" 2>&1 || fail "--help exited $?"
grep -q -- "--preset" "$TMP/out" || fail "--help lacks --preset"

# --- kvllm itself loads and generates from what mkmodel wrote
for m in s_q8_0 s_q4_0 tiny k_q2_k k_q4_k k_q5_k k_q6_k k_q4_k_m k_q5_k_m; do
    checks=$((checks + 1))
    "$BIN" run -m "$TMP/$m.gguf" -n 8 --temp 0 -p "Once upon a time" >"$TMP/out" 2>"$TMP/err" ||
        fail "run -m $m.gguf exited $?: $(cat "$TMP/err")"
done

# --- bad flags
bad "unknown flag '--bogus'" -o "$TMP/bad.gguf" --bogus
bad "-o FILE is required" --type f16
bad "--type: 'q7_k' is not one of" -o "$TMP/bad.gguf" --type q7_k
bad "--preset: 'llama-9' is not one of" -o "$TMP/bad.gguf" --preset llama-9
bad "--heads 7 does not divide --dim 64" -o "$TMP/bad.gguf" --heads 7
bad "--kv-heads 3 does not divide --heads 8" -o "$TMP/bad.gguf" --kv-heads 3
bad "is odd" -o "$TMP/bad.gguf" --dim 72 --heads 24 --kv-heads 24
bad "--layers: 0 is outside [1, 1024]" -o "$TMP/bad.gguf" --layers 0
bad "--layers: 'x' is not an integer" -o "$TMP/bad.gguf" --layers x
bad "--seed: -1 is outside" -o "$TMP/bad.gguf" --seed -1
bad "--dim needs a value" -o "$TMP/bad.gguf" --dim
bad "--vocab-size 100 is outside [259," -o "$TMP/bad.gguf" --vocab-size 100 --synth-vocab
bad "--alignment 24 is not a power of two" -o "$TMP/bad.gguf" --alignment 24
bad "--eps: 0 is outside" -o "$TMP/bad.gguf" --eps 0
bad "--vocab:" -o "$TMP/bad.gguf" --vocab "$TMP/no-such-file.bin"
bad "exclude each other" -o "$TMP/bad.gguf" --vocab x --synth-vocab

# --- an unwritable output is a runtime error (1), not a usage error
checks=$((checks + 1))
"$BIN" mkmodel -o "$TMP/no/such/dir/x.gguf" >/dev/null 2>"$TMP/err"
rc=$?
[ $rc -eq 1 ] || fail "unwritable output: exit $rc, expected 1"
grep -q "cannot create" "$TMP/err" || fail "unwritable output: $(cat "$TMP/err")"

echo "test_mkmodel_cli: $((checks - fails)) passed, $fails failed"
[ $fails -eq 0 ]
