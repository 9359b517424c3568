#!/bin/sh
# KL divergence to full KV at a budget of 25% (the protocol of
# bench/eviction_quality.sh's h2o / snapkv tables) over several samples of
# text, so that a difference between policies is not one lucky stream:
# sample k starts the stream after k * SKIP documents (kvllm ppl
# --stream-skip). For each configuration: the mean over the samples of the
# per-sample mean KL, its median and range, and in how many samples it was
# below window's KL on the same sample. Usage:
#
#   bench/eviction_kl_samples.sh [BUILD=build] [SAMPLES=16] [SKIP=12] [PROTO=both]
#
# PROTO: stream (the stream decoded from its start, budget 25% of it),
# prompt (a long prompt prefilled whole and cut to 25% of its cache; KL
# after the cut) or both. CONFIGS (environment): one configuration per
# line, "label|flags"; default: the policies and their variants below.
# TEXT=alice: ../shared/models/alice29.txt in paragraphs (--split blank),
# SKIP paragraphs apart, instead of TinyStories.
set -eu
B=${1:-build}
NS=${2:-16}
SKIP=${3:-12}
PROTO=${4:-both}
M=${KVL_SHARED:-../shared}/models
if [ "${TEXT:-}" = alice ]; then
    T="$M/alice29.txt"
    SPLIT="--split blank"
else
    T="$M/TinyStories-valid-reduced.txt"
    SPLIT=""
fi
DEFAULT_CONFIGS='window|--kv-policy window
sinks|--kv-policy sinks
h2o sum (H2O)|--kv-policy h2o --kv-score sum
h2o sum, sinks 0|--kv-policy h2o --kv-score sum --kv-sinks 0
h2o mean|--kv-policy h2o --kv-score mean
h2o mean, sinks 0|--kv-policy h2o --kv-score mean --kv-sinks 0
h2o mean, sinks 0, stride 4|--kv-policy h2o --kv-score mean --kv-sinks 0 --kv-mass-stride 4
snapkv|--kv-policy snapkv
snapkv, sinks 0|--kv-policy snapkv --kv-sinks 0
snapkv, sinks 0, pool 3|--kv-policy snapkv --kv-sinks 0 --kv-pool 3'
CONFIGS=${CONFIGS:-$DEFAULT_CONFIGS}

# one MODEL TOK N SKIPDOCS ARGS...: prints "kl n_pred" of one run, or
# "refused: MESSAGE" when kvllm refuses it (e.g. a budget below the
# policy's minimum)
one() {
    model=$1 tok=$2 n=$3 sk=$4
    shift 4
    # shellcheck disable=SC2086
    if out=$("$B/kvllm" ppl -m "$M/$model" --tokenizer "$M/$tok" -f "$T" $SPLIT --stream "$n" \
        -c "$n" --kl-ref -t 1 --stream-skip "$sk" "$@" 2>&1); then
        echo "$out" | awk '$1=="kl_mean"{k=$2} $1=="predicted_tokens"{p=$2} END{print k, p}'
    else
        echo "refused: $(echo "$out" | grep 'kvllm ppl' | head -n 1)"
    fi
}

# table MODEL TOK N BUDGET PROTOCOL-LABEL ARGS...: one row per configuration
table() {
    model=$1 tok=$2 n=$3 bud=$4 proto=$5
    shift 5
    base="$*"
    win=""
    echo "$CONFIGS" | while IFS='|' read -r label flags; do
        [ -n "$label" ] || continue
        kls="" preds=""
        s=0
        while [ "$s" -lt "$NS" ]; do
            # shellcheck disable=SC2086
            r=$(one "$model" "$tok" "$n" $((s * SKIP)) --kv-budget-tokens "$bud" $base $flags)
            case $r in refused:*)
                echo "| $model | $proto | $label | - | - | - | - | - | - | \`$base $flags\`: $r |"
                continue 2 ;;
            esac
            kls="$kls ${r% *}"
            preds="$preds ${r#* }"
            s=$((s + 1))
        done
        [ "$label" = window ] && win=$kls
        echo "$kls|$win|$preds" | awk -F'|' -v model="$model" -v proto="$proto" \
            -v label="$label" -v flags="$base $flags" '{
            n = split($1, k, " "); split($2, w, " "); np = split($3, p, " ")
            s = 0; wins = 0; tp = 0
            for (i = 1; i <= n; i++) { s += k[i]; v[i] = k[i] + 0; if (k[i] + 0 < w[i] + 0) wins++ }
            for (i = 1; i <= np; i++) tp += p[i]
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
            med = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
            printf "| %s | %s | %s | %d | %d | %.4f | %.4f | %.4f - %.4f | %s | `%s` |\n", model,
                proto, label, n, tp, s / n, med, v[1], v[n], label == "window" ? "-" : wins "/" n, flags
        }'
    done
}

echo "| model | protocol | policy | samples | predictions (all samples) | KL mean of samples | median | range | below window | flags |"
echo "|---|---|---|---:|---:|---:|---:|---|---:|---|"
S=stories260K.bin K=tok512.bin Y=babyllama105.bin Z=tok105.bin
if [ "$PROTO" != prompt ]; then
    table $S $K 512 128 "stream 512, budget 128"
    table $Y $Z 256 64 "stream 256, budget 64"
fi
if [ "$PROTO" != stream ]; then
    table $S $K 512 112 "prompt 448 -> 112" --prompt 448
    table $S $K 512 96 "prompt 384 -> 96" --prompt 384
    table $Y $Z 256 56 "prompt 224 -> 56 (bs 8)" --prompt 224 --block-size 8
fi
