#!/usr/bin/env bash
# kvllm tokenize from the command line:
#  1. the shipped stories260K (SentencePiece) gives, byte for byte, what
#     llama.cpp's llama-tokenize (de3ff81) printed for the same text in each
#     output form (the expected text below was produced by llama-tokenize);
#  2. llama.cpp's vocabulary test cases (ggml-vocab-*.gguf with .inp/.out,
#     vocabulary-only files: no tensors) pass THROUGH the command, one
#     invocation per case (SKIPPED when the files are absent: see
#     scripts/fetch_llamacpp_vocab.sh);
#  3. usage errors exit 2 naming the flag; a bad model exits 1.
set -u
BIN=${KVL_BIN:?KVL_BIN must point to kvllm}
SHARED=${KVL_SHARED:?}
TMP=${KVL_TMP:-/tmp}/tokenize_cli.$$
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
M=$SHARED/models/stories260K.gguf
fails=0
checks=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
# same WANT CMD...: stdout equals WANT exactly (exit 0)
same() {
    local want=$1; shift
    checks=$((checks + 1))
    local got
    got=$("$@" 2>"$TMP/err"; echo "rc=$?")
    [ "$got" = "$want"$'\n'"rc=0" ] || fail "$*: got [$got] want [$want]"
}
# refused RC NEEDLE ARGS...: exit RC, stderr has NEEDLE
refused() {
    local rc=$1 needle=$2; shift 2
    checks=$((checks + 1))
    "$BIN" tokenize "$@" >"$TMP/out" 2>"$TMP/err"
    local got=$?
    [ $got -eq "$rc" ] || fail "tokenize $*: exit $got, want $rc"
    grep -qF -- "$needle" "$TMP/err" || fail "tokenize $*: stderr lacks '$needle': $(cat "$TMP/err")"
}

# 1. llama-tokenize's output for the shipped model
same "     1 -> '<s>'
   403 -> ' Once'
   407 -> ' upon'
   261 -> ' a'
   378 -> ' time'
   432 -> ','
   274 -> ' T'
   287 -> 'om'
   439 -> '''
   419 -> 's'
   400 -> ' do'
   428 -> 'g'
   352 -> ' r'
   303 -> 'an'
   426 -> '.'" "$BIN" tokenize -m "$M" -p "Once upon a time, Tom's dog ran."
same "[403, 407, 261, 378]" "$BIN" tokenize -m "$M" -p "Once upon a time" --ids --no-bos
same "[1, 403, 407, 261, 378]" "$BIN" tokenize -m "$M" -p "Once upon a time" --ids
same "[1]" "$BIN" tokenize -m "$M" -p "" --ids
same "[1, 403, 407, 261, 378]
Total number of tokens: 5" "$BIN" tokenize -m "$M" -p "Once upon a time" --ids --show-count
# --pieces: id TAB piece, bytes outside printable ASCII as \xHH
same $'1\t<s>\n403\t Once\n13\t\\x0a\n261\t a' "$BIN" tokenize -m "$M" -p $'Once\n a' --pieces
# -f FILE and -f - read the bytes as they are (the trailing newline counts)
printf 'Once upon\n' >"$TMP/t.txt"
same "[1, 403, 407, 13]" "$BIN" tokenize -m "$M" -f "$TMP/t.txt" --ids
same "[1, 403, 407, 13]" bash -c "'$BIN' tokenize -m '$M' -f - --ids <'$TMP/t.txt'"
# control tokens are text unless --parse-special
a=$("$BIN" tokenize -m "$M" -p "<s>" --ids --no-bos)
b=$("$BIN" tokenize -m "$M" -p "<s>" --ids --no-bos --parse-special)
checks=$((checks + 1))
[ "$b" = "[1]" ] && [ "$a" != "[1]" ] || fail "--parse-special: '$a' / '$b'"

# 3. usage errors name the flag; a bad model names the file
refused 2 "unknown flag '--frobnicate'" -m "$M" -p x --frobnicate
refused 2 "-p needs a value" -m "$M" -p
refused 2 "no text: give -p TEXT or -f FILE" -m "$M"
refused 2 "-p and -f both give the text" -m "$M" -p x -f "$TMP/t.txt"
refused 2 "--ids and --pieces both choose the output" -m "$M" -p x --ids --pieces
refused 2 "unexpected argument 'hello'" -m "$M" hello
refused 1 "-f: cannot open '$TMP/none.txt'" -m "$M" -f "$TMP/none.txt"
refused 1 "$TMP/none.gguf: cannot open" -m "$TMP/none.gguf" -p x
printf 'hello world, not a model at all' >"$TMP/notes.txt"
refused 1 "not a model file" -m "$TMP/notes.txt" -p x
# a llama2.c checkpoint: its tokenizer beside it
same "[1, 403, 407, 261, 378]" "$BIN" tokenize -m "$SHARED/models/stories260K.bin" -p "Once upon a time" --ids

# mkmodel --vocab FILE.gguf copies a GGUF's tokenizer: the new model
# tokenizes exactly as the source does
text=$SHARED/models/TinyStories-valid-reduced.txt
head -c 4000 "$text" >"$TMP/story.txt"
checks=$((checks + 1))
"$BIN" mkmodel -o "$TMP/copy.gguf" --vocab "$M" --layers 1 >/dev/null 2>"$TMP/err" ||
    fail "mkmodel --vocab $M: $(cat "$TMP/err")"
a=$("$BIN" tokenize -m "$M" -f "$TMP/story.txt" --ids)
b=$("$BIN" tokenize -m "$TMP/copy.gguf" -f "$TMP/story.txt" --ids)
checks=$((checks + 1))
[ -n "$a" ] && [ "$a" = "$b" ] || fail "mkmodel --vocab (SentencePiece GGUF): ids differ"

# 2. llama.cpp's vocabulary cases through the command
VOCAB=${KVL_LLAMACPP_VOCAB:-${KVL_BUILD:-build}/llamacpp-vocab}
sep=$'\n__ggml_vocab_test__\n'
found=0
for name in llama-spm llama-bpe qwen2 phi-3 gpt-2 starcoder refact; do
    g=$VOCAB/ggml-vocab-$name.gguf
    [ -f "$g" ] && [ -f "$g.inp" ] && [ -f "$g.out" ] || continue
    found=$((found + 1))
    IFS= read -r -d '' rest <"$g.inp"
    mapfile -t outs <"$g.out"
    n=0 bad=0
    while [ -n "$rest" ]; do
        case_text=${rest%%"$sep"*}
        rest=${rest#*"$sep"}
        printf '%s' "$case_text" >"$TMP/case.txt"
        ids=$(echo ${outs[$n]})
        want="[${ids// /, }]"
        got=$("$BIN" tokenize -m "$g" -f "$TMP/case.txt" --ids --no-bos 2>&1)
        checks=$((checks + 1))
        if [ "$got" != "$want" ]; then
            bad=$((bad + 1))
            fail "$name case $n: got $got want $want"
        fi
        n=$((n + 1))
    done
    [ "$n" -eq "${#outs[@]}" ] || fail "$name: $n cases but ${#outs[@]} expected lines"
    # a model made with this vocabulary (mkmodel --vocab) tokenizes the same
    if [ "$name" = llama-bpe ] || [ "$name" = qwen2 ]; then
        preset=llama-3.2-1b
        [ "$name" = qwen2 ] && preset=qwen2.5-0.5b
        checks=$((checks + 1))
        if "$BIN" mkmodel -o "$TMP/v.gguf" --preset $preset --layers 1 --dim 64 --heads 2 \
            --kv-heads 1 --ffn 128 --type f16 --vocab "$g" >/dev/null 2>"$TMP/err"; then
            a=$("$BIN" tokenize -m "$g" -f "$g.inp" --ids --parse-special)
            b=$("$BIN" tokenize -m "$TMP/v.gguf" -f "$g.inp" --ids --parse-special)
            [ "$a" = "$b" ] || fail "mkmodel --vocab $name: ids differ"
            "$BIN" run -m "$TMP/v.gguf" -p "Hello" -n 2 --temp 0 >/dev/null 2>"$TMP/err" ||
                fail "run on mkmodel --vocab $name: $(tail -2 "$TMP/err")"
        else
            fail "mkmodel --vocab $g: $(cat "$TMP/err")"
        fi
    fi
    echo "llama.cpp ggml-vocab-$name (vocabulary only) through kvllm tokenize: $n cases, $bad differ"
done
[ "$found" -gt 0 ] ||
    echo "SKIPPED llama.cpp cases: no ggml-vocab-*.gguf in $VOCAB (scripts/fetch_llamacpp_vocab.sh)"

echo "test_tokenize_cli: $checks checks, $fails failed"
[ "$fails" -eq 0 ]
