#!/usr/bin/env bash
# Multi-turn creep in `kvllm chat`, with and without the prefix cache: the
# same 8-turn conversation (each user line ~400 bytes, answers of 32 tokens
# at temperature 0) piped through kvllm chat, the two configurations
# alternating for ROUNDS rounds in one run; per turn, the median time to
# the first token (from each turn's stderr line) and its ratio.
# Usage: bench/chat_turns.sh [MODEL] [ROUNDS] [THREADS]
# (default model: a random-weight GGUF, dim 768, 8 layers, Q8_0, written once)
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${KVL_BIN:-$here/build/kvllm}
tmp=${KVL_TMP:-/tmp}/chat_turns
mkdir -p "$tmp"
model=${1:-$tmp/m768.gguf}
rounds=${2:-3}
threads=${3:-2}
if [ ! -f "$model" ]; then
  "$bin" mkmodel -o "$model" --dim 768 --layers 8 --ffn 2048 --heads 12 --kv-heads 12 \
    --vocab-size 512 --ctx 4096 --type q8_0 >/dev/null
fi
line="Tell me more about the old lighthouse keeper, the storm that came in from the sea that night, the ships that waited outside the harbour, and what the children in the village saw from the hill when the lamp went dark for the first time in forty years and the bells began to ring"
: >"$tmp/input"
for t in 1 2 3 4 5 6 7 8; do echo "$t. $line" >>"$tmp/input"; done
for r in $(seq 1 "$rounds"); do
  for cfg in cache nocache; do
    flag=""; [ "$cfg" = nocache ] && flag=--no-prefix-cache
    "$bin" chat -m "$model" --chat-template chatml -t "$threads" --temp 0 -n 32 $flag \
      <"$tmp/input" >/dev/null 2>"$tmp/$cfg.$r.err"
  done
done
python3 - "$tmp" "$rounds" <<'PY'
import re, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
def turns(cfg):
    out = {}
    for r in range(1, rounds + 1):
        for m in re.finditer(r"\[turn (\d+): (\d+) prompt tokens, (\d+) cached;.*after ([\d.]+) s",
                             open(f"{tmp}/{cfg}.{r}.err").read()):
            out.setdefault(int(m[1]), []).append((int(m[2]), int(m[3]), float(m[4])))
    return out
c, n = turns("cache"), turns("nocache")
print("| turn | prompt tokens | cached | TTFT cache (ms) | TTFT no cache (ms) | no cache / cache |")
print("| ---: | ---: | ---: | ---: | ---: | ---: |")
for t in sorted(c):
    tc = statistics.median(x[2] for x in c[t]) * 1e3
    tn = statistics.median(x[2] for x in n[t]) * 1e3
    print(f"| {t} | {c[t][0][0]} | {c[t][0][1]} | {tc:.1f} | {tn:.1f} | {tn / tc:.2f} |")
PY
