#!/bin/sh
# The prefix cache's second tier under kvllm bench serve (issue 17,
# workloads b and c): multi-turn chat with the cache and tier, without the
# cache, and with the cache but no tier; random prompts with the cache and
# tier and without the cache, pairs interleaved. One JSON per run into OUT;
# bench/RESULTS.md has the tables.
# Usage: bench/prefix_tier.sh MODEL OUT [PAIRS_C] [PARTS]   (PARTS: "b c", "b1", "c")
set -eu
M=$1 OUT=$2 PAIRS=${3:-3} PARTS=${4:-"b c"}
K=build/kvllm
mkdir -p "$OUT"
# (b): 8 sessions x 8 turns, 32 new user tokens and 4 answer tokens a turn,
# one request at a time; a pool of 320 positions, far below the 8
# sessions' histories (8 x 289 at turn 8), so a session's blocks leave the
# pool between its turns.
B="bench serve -m $M -t 2 --chat-sessions 8 --chat-turns 8 --input-len 32 --output-len 4 \
   --ignore-eos --temp 0 --max-concurrency 1 -c 320 --kv-mem 7MiB --swap-mem 64MiB -o json"
case " $PARTS " in *" b "* | *" b1 "*) $K $B --prefix-tier host >"$OUT/b_tier.json" ;; esac
case " $PARTS " in *" b "*)
    $K $B --no-prefix-cache >"$OUT/b_nocache.json"
    $K $B >"$OUT/b_notier.json" ;;
esac
# (c): no sharing: 16 random prompts of 64 tokens, 16 outputs, two at a
# time, in the same 320-position pool: finished requests' blocks are
# evicted for new ones (demoted with the tier: its whole cost, no hit).
C="bench serve -m $M -t 2 --num-prompts 16 --input-len 64 --output-len 16 --ignore-eos --temp 0 \
   --max-concurrency 2 -c 320 --kv-mem 7MiB --swap-mem 64MiB -o json"
case " $PARTS " in *" c "*)
    for i in $(seq 1 "$PAIRS"); do
        $K $C --seed "$i" --prefix-tier host >"$OUT/c_cache_$i.json"
        $K $C --seed "$i" --no-prefix-cache >"$OUT/c_nocache_$i.json"
    done ;;
esac
