#!/usr/bin/env bash
# KV cache format quality on stories260K: perplexity, its relative change
# against f32 KV, and the mean KL divergence of next-token distributions
# against an f32-KV run of the same invocation (kvllm ppl --kl-ref).
#
#   bench/kv_quality.sh [KVLLM_BIN] > table.md
#
# Texts: TinyStories-valid-reduced.txt (documents split on <|endoftext|>)
# and alice29.txt (--split blank), both at -c 512 (the model's context).
# int4 K runs at --block-size 32, its default (the per-channel key group is
# one block; docs/kv_formats.md), and at 64 and 16 to show the trade; the
# others at 16. Needs the kv cache facade to pass
# --kv-type-k/-v into the paged store.
set -euo pipefail
BIN=${1:-${KVL_BIN:-build/kvllm}}
SHARED=${KVL_SHARED:-$(cd "$(dirname "$0")/../.." && pwd)/shared}
M=$SHARED/models
MODEL=$M/stories260K.gguf
THREADS=${THREADS:-2}

# K V block-size
PAIRS="f32:f32:16 f16:f16:16 bf16:bf16:16 fp8_e4m3:fp8_e4m3:16 fp8_e5m2:fp8_e5m2:16
int8:int8:16 int4:int4:32 int4:int4:64 int4:int4:16 int4:int8:32 int8:int4:16 f16:int8:16"

run() { # text-args... -> "ppl kl top1"
    "$BIN" ppl -m "$MODEL" -c 512 -t "$THREADS" --kl-ref "$@" 2>/dev/null |
        awk '$1=="ppl"{p=$2} $1=="kl_mean"{k=$2} $1=="top1_agree"{t=$2} END{print p, k, t}'
}

for text in tinystories alice; do
    if [ $text = tinystories ]; then args=(-f "$M/TinyStories-valid-reduced.txt")
    else args=(-f "$M/alice29.txt" --split blank); fi
    echo
    echo "### $text"
    echo
    echo "| K | V | block | ppl | vs f32 KV | mean KL vs f32 KV (nats) | top-1 agreement |"
    echo "|---|---|------:|----:|----------:|-------------------------:|----------------:|"
    base=""
    for p in $PAIRS; do
        IFS=: read -r k v bs <<<"$p"
        read -r ppl kl t1 < <(run "${args[@]}" --kv-type-k "$k" --kv-type-v "$v" --block-size "$bs")
        [ -z "$base" ] && base=$ppl
        rel=$(awk -v a="$ppl" -v b="$base" 'BEGIN{printf "%+.3f%%", (a/b-1)*100}')
        printf "| %s | %s | %s | %.4f | %s | %.6f | %.2f%% |\n" "$k" "$v" "$bs" "$ppl" "$rel" "$kl" \
            "$(awk -v x="$t1" 'BEGIN{print x*100}')"
    done
done
