#!/bin/sh
# Perplexity of a concatenated TinyStories stream 10x the trained context
# under each KV policy (docs/eviction.md), with the full-KV references:
# fresh context windows one after the other, and a recomputed sliding
# window; then KL divergence to full KV at a budget of 25% for window,
# sinks, h2o and snapkv. Prints markdown tables. Usage:
# bench/eviction_quality.sh [BUILD] [PART]
# PART: all (default) or kl (only the KL tables of h2o and snapkv at the
# end; bench/eviction_kl_samples.sh repeats them over several streams).
set -eu
B=${1:-build}
PART=${2:-all}
M=${KVL_SHARED:-../shared}/models
T=$M/TinyStories-valid-reduced.txt
row() { # label model tok stream args...
    label=$1 model=$2 tok=$3 n=$4
    shift 4
    out=$("$B/kvllm" ppl -m "$M/$model" --tokenizer "$M/$tok" -f "$T" --stream "$n" -t 1 "$@" 2>/dev/null)
    ppl=$(echo "$out" | awk '$1=="ppl"{print $2}')
    late=$(echo "$out" | awk '$1=="ppl_past_ctx"{print $2}')
    ev=$(echo "$out" | awk '$1=="evicted_tokens"{print $2}')
    mx=$(echo "$out" | awk '$1=="max_cache_len"{print $2}')
    echo "| $model | $label | $ppl | $late | ${mx:--} | ${ev:--} | \`$*\` |"
}
S=stories260K.bin K=tok512.bin Y=babyllama105.bin Z=tok105.bin
if [ "$PART" = all ]; then
echo "| model | policy | ppl (whole stream) | ppl (tokens past the context) | most positions held | evicted | flags |"
echo "|---|---|---:|---:|---:|---:|---|"
for bos in each first; do
    row "full: fresh 512 windows, bos $bos" $S $K 5120 --stream-bos $bos --kv-policy full
    row "recompute 512 (stride 16), bos $bos" $S $K 5120 --stream-bos $bos --recompute 512 --recompute-stride 16
    row "window 512, bos $bos" $S $K 5120 --stream-bos $bos --kv-policy window --kv-budget-tokens 512
    row "sinks 4+512, bos $bos" $S $K 5120 --stream-bos $bos --kv-policy sinks --kv-budget-tokens 512
done
for b in 256 128 64; do
    row "recompute $b (stride 16)" $S $K 5120 --recompute $b --recompute-stride 16
    row "window $b" $S $K 5120 --kv-policy window --kv-budget-tokens $b
    row "sinks 4+$b" $S $K 5120 --kv-policy sinks --kv-budget-tokens $b
    row "h2o $b (defaults)" $S $K 5120 --kv-policy h2o --kv-budget-tokens $b
done
row "h2o 512 (defaults)" $S $K 5120 --kv-policy h2o --kv-budget-tokens 512
for f in f16 fp8_e4m3 int8 int4; do
    row "full windows, KV $f" $S $K 5120 --kv-type $f --kv-policy full
    row "sinks 4+512, KV $f" $S $K 5120 --kv-type $f --kv-policy sinks --kv-budget-tokens 512
done
row "full: fresh 256 windows" $Y $Z 2560 --kv-policy full
row "recompute 256 (stride 16)" $Y $Z 2560 --recompute 256 --recompute-stride 16
row "window 256" $Y $Z 2560 --kv-policy window --kv-budget-tokens 256
row "sinks 4+256" $Y $Z 2560 --kv-policy sinks --kv-budget-tokens 256
row "window 64" $Y $Z 2560 --kv-policy window --kv-budget-tokens 64
row "sinks 4+64" $Y $Z 2560 --kv-policy sinks --kv-budget-tokens 64
fi

# KL divergence of next-token distributions to full KV (f32, the whole
# stream in context) at a budget of 25% of the stream (docs/eviction.md)
kl() { # model tok n args...
    model=$1 tok=$2 n=$3
    shift 3
    out=$("$B/kvllm" ppl -m "$M/$model" --tokenizer "$M/$tok" -f "$T" --stream "$n" -c "$n" --kl-ref -t 1 "$@" 2>/dev/null)
    echo "| $model | $n | $(echo "$out" | awk '$1=="kv_policy"{print $2}') | $(echo "$out" | awk '$1=="kv_budget_tokens"{print $2}') | $(echo "$out" | awk '$1=="kl_mean"{print $2}') | $(echo "$out" | awk '$1=="top1_agree"{print $2}') | $(echo "$out" | awk '$1=="ppl"{print $2}') |"
}
if [ "$PART" = all ]; then
echo
echo "| model | stream = context | policy | budget | KL(full f32 || policy) mean | top-1 agreement | ppl |"
echo "|---|---:|---|---:|---:|---:|---:|"
for pol in window sinks; do
    kl $S $K 512 --kv-policy $pol --kv-budget-tokens 512
    kl $S $K 512 --kv-policy $pol --kv-budget-tokens 128
    kl $Y $Z 256 --kv-policy $pol --kv-budget-tokens 64
done
fi

# h2o and snapkv against window and sinks (docs/eviction.md).
# 1. The stream decoded from its start, a budget of 25% of it (as above):
#    snapkv never sees a prompt past its budget here, so it decodes as
#    its sinks (default none) + its observation window. h2o and snapkv
#    with their defaults (mean score, mass stride 4, no sink block), then
#    H2O's own rule (summed mass, every query, a sink block).
echo
echo "| model | stream = context | policy | budget | KL(full f32 || policy) mean | top-1 agreement | ppl | flags |"
echo "|---|---:|---|---:|---:|---:|---:|---|"
for m in "$S $K 512 128" "$Y $Z 256 64"; do
    set -- $m
    for f in "--kv-policy window" "--kv-policy sinks" "--kv-policy h2o" \
        "--kv-policy h2o --kv-score sum --kv-mass-stride 1 --kv-sinks 4" "--kv-policy snapkv"; do
        # shellcheck disable=SC2086
        echo "$(kl "$1" "$2" "$3" --kv-budget-tokens "$4" $f) \`$f\` |"
    done
done

# 2. A long prompt prefilled whole (full attention), cut to 25% of its
#    cache by each policy's rule, then the rest of the stream decoded under
#    the budget; KL over the predictions made after the cut only.
klp() { # model tok n prompt budget args...
    model=$1 tok=$2 n=$3 pr=$4 bud=$5
    shift 5
    out=$("$B/kvllm" ppl -m "$M/$model" --tokenizer "$M/$tok" -f "$T" --stream "$n" -c "$n" --kl-ref -t 1 --prompt "$pr" --kv-budget-tokens "$bud" "$@" 2>/dev/null)
    echo "| $model | $n | $pr | $bud | $(echo "$out" | awk '$1=="kv_policy"{print $2}') | $(echo "$out" | awk '$1=="kl_mean"{print $2}') | $(echo "$out" | awk '$1=="top1_agree"{print $2}') | $(echo "$out" | awk '$1=="ppl"{print $2}') | \`$*\` |"
}
echo
echo "| model | stream = context | prompt | budget (25% of the prompt) | policy | KL(full f32 || policy) mean, after the cut | top-1 agreement | ppl | flags |"
echo "|---|---:|---:|---:|---|---:|---:|---:|---|"
for m in "$S $K 512 448 112" "$S $K 512 384 96" "$Y $Z 256 224 56 --block-size 8"; do
    # shellcheck disable=SC2086
    set -- $m
    for f in "--kv-policy window" "--kv-policy sinks" "--kv-policy h2o" \
        "--kv-policy h2o --kv-score sum --kv-mass-stride 1 --kv-sinks 4" "--kv-policy snapkv" \
        "--kv-policy snapkv --kv-sinks 4"; do
        # shellcheck disable=SC2086
        klp "$@" $f
    done
done
