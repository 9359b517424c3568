#!/usr/bin/env bash
# The C benchmarks' scripts (bench/kv_speed.sh, bench/kv_evict_speed.sh,
# bench/sampler_speed.sh, sharing bench/lib_bench.sh) build against this build directory and run
# with their arguments: a row per KV format, and a depth out of range is
# refused with the program's usage. Nothing here is timed.
set -u
build=${KVL_BUILD:?}
src=$(cd "$(dirname "$0")/.." && pwd)
tmp=${KVL_TMP:-/tmp}/bench_scripts
mkdir -p "$tmp"
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
export CC=${KVL_CC:-cc} CFLAGS=${KVL_SAN_FLAGS:-}

for s in "kv_speed 64" "kv_evict_speed 128"; do
  set -- $s
  if (cd "$tmp" && "$src/bench/$1.sh" "$build" "$2" 1) >"$tmp/$1.txt" 2>"$tmp/$1.err"; then
    grep -q '^| f32 ' "$tmp/$1.txt" && grep -q '^| int4 (bs 32) ' "$tmp/$1.txt" && ok || bad "$1: no rows: $(cat "$tmp/$1.txt")"
  else
    bad "$1.sh failed: $(tail -5 "$tmp/$1.err")"
  fi
  [ -x "$build/$1" ] && ok || bad "$1 not built in the build directory"
done
# the sampler's cost per cut: a row per cut (bench/sampler_speed.sh)
if (cd "$tmp" && "$src/bench/sampler_speed.sh" "$build" 1000 3) >"$tmp/samp.txt" 2>"$tmp/samp.err"; then
  for cut in "none (no sort)" "sorted walk" "top-k 40" "top-p 0.95"; do
    grep -qF "| $cut |" "$tmp/samp.txt" && ok || bad "sampler_speed: no row '$cut'"
  done
else
  bad "sampler_speed.sh failed: $(tail -5 "$tmp/samp.err")"
fi
if "$src/bench/kv_evict_speed.sh" "$build" 64 1 >"$tmp/low.txt" 2>&1; then
  bad "kv_evict_speed.sh: depth 64 accepted"
else
  grep -q 'usage: kv_evict_speed' "$tmp/low.txt" && ok || bad "depth 64: $(cat "$tmp/low.txt")"
fi

echo "test_bench_scripts: $pass passed, $fail failed"
[ "$fail" = 0 ]
