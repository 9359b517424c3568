#!/usr/bin/env bash
# kvllm tokenize against llama.cpp's llama-tokenize, byte for byte, on
# llama.cpp's vocabulary-only files (not in CI: needs llama.cpp built, see
# bench/build_llamacpp.sh, and the vocab files, scripts/fetch_llamacpp_vocab.sh).
#
#   bench/tokenize_vs_llamacpp.sh [LLAMA_TOKENIZE] [VOCAB_DIR]
#
# Per vocabulary: the whole .inp file as one text in the default output
# (llama-tokenize --no-escape --no-parse-special), and a text full of special
# tokens with kvllm --parse-special against llama-tokenize's default (which
# parses them) as --ids, --ids --no-bos and the default output.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
lt=${1:-/work/llama.cpp-src/build/bin/llama-tokenize}
dir=${2:-$root/build/llamacpp-vocab}
kv=$root/build/kvllm
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '<|im_start|>user\nHi <s> </s> <|endoftext|><|eot_id|> <|begin_of_text|>x<|im_end|>\n' >"$tmp/sp.txt"
echo "| vocabulary | .inp, default output | specials --ids | specials --ids --no-bos | specials, default output |"
echo "|---|---|---|---|---|"
for n in llama-spm llama-bpe qwen2 phi-3 gpt-2 starcoder refact; do
    g=$dir/ggml-vocab-$n.gguf
    [ -f "$g" ] || continue
    row="| $n"
    "$kv" tokenize -m "$g" -f "$g.inp" >"$tmp/k" 2>/dev/null
    "$lt" -m "$g" -f "$g.inp" --no-escape --no-parse-special --log-disable >"$tmp/l" 2>/dev/null
    cmp -s "$tmp/k" "$tmp/l" && row="$row | identical" || row="$row | differs"
    for fl in "--ids" "--ids --no-bos" ""; do
        "$kv" tokenize -m "$g" -f "$tmp/sp.txt" --parse-special $fl >"$tmp/k" 2>/dev/null
        "$lt" -m "$g" -f "$tmp/sp.txt" --no-escape $fl --log-disable >"$tmp/l" 2>/dev/null
        cmp -s "$tmp/k" "$tmp/l" && row="$row | identical" || row="$row | differs"
    done
    echo "$row |"
done
