#!/usr/bin/env bash
# Byte-identity of `kvllm run` between two binaries: greedy and sampled text
# and every --dump-logits file, single and --parallel, paged and contiguous,
# every KV format, on stories260K and a one-layer TinyLlama-shape Q8_0 model.
#   bench/run_identity.sh OLD_KVLLM NEW_KVLLM [SHARED]
# Prints one line per case and a summary; exit status 1 when any differs.
set -u
old=$1 new=$2 shared=${3:-$(dirname "$0")/../../shared}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
m260=$shared/models/stories260K.gguf
tl=$tmp/tl1.gguf
"$new" mkmodel --preset tinyllama-1.1b --layers 1 --type q8_0 --seed 11 -o "$tl" >/dev/null 2>&1
prompt="Once upon a time, there was a little girl named Lily. She loved to play outside in the park."
same=0 diff=0
check() { # name args...
  local name=$1; shift
  "$old" run "$@" --dump-logits "$tmp/o.f32" >"$tmp/o.txt" 2>/dev/null; local ro=$?
  "$new" run "$@" --dump-logits "$tmp/n.f32" >"$tmp/n.txt" 2>/dev/null; local rn=$?
  if [ $ro = $rn ] && cmp -s "$tmp/o.txt" "$tmp/n.txt" && cmp -s "$tmp/o.f32" "$tmp/n.f32"; then
    same=$((same + 1)); echo "same  $name"
  else
    diff=$((diff + 1)); echo "DIFF  $name (rc $ro/$rn)"
  fi
}
for m in "$m260" "$shared/models/stories260K.bin"; do
  check "$(basename "$m") greedy" -m "$m" -p "$prompt" -n 200 --temp 0
done
for lay in paged contiguous; do
  check "260K $lay greedy" -m "$m260" -p "$prompt" -n 120 --temp 0 --kv-layout $lay
  check "260K $lay parallel 4" -m "$m260" -p "$prompt" -n 80 --temp 0.9 --seed 5 --parallel 4 --kv-layout $lay
  check "260K $lay stop" -m "$m260" -p "$prompt" -n 120 --temp 0 --stop "ball" --kv-layout $lay
done
for f in f32 f16 bf16 fp8_e4m3 fp8_e5m2 int8 int4; do
  check "260K paged $f parallel 3" -m "$m260" -p "$prompt" -n 60 --temp 0.8 --seed 2 --parallel 3 --kv-type $f
done
check "260K block 5 parallel 3" -m "$m260" -p "$prompt" -n 60 --temp 0.8 --parallel 3 --block-size 5
if [ -f "$tl" ]; then
  for lay in paged contiguous; do
    check "tl1 q8_0 $lay greedy" -m "$tl" -p "$prompt" -n 16 --temp 0 --ctx 256 --kv-layout $lay
    check "tl1 q8_0 $lay parallel 2" -m "$tl" -p "$prompt" -n 12 --temp 0.7 --parallel 2 --ctx 256 --kv-layout $lay
  done
  check "tl1 q8_0 int8 parallel 2" -m "$tl" -p "$prompt" -n 12 --temp 0.7 --parallel 2 --ctx 256 --kv-type int8
fi
echo "run identity: $same same, $diff differ"
[ $diff = 0 ]
