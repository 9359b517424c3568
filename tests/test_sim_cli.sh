#!/usr/bin/env bash
# test_sim_cli: `kvllm sim` end to end. Exit codes and messages for bad
# flags and files; a trace workload's exact request count; gamma arrivals;
# byte-identical JSON for one seed; --csv and --svg written; a calibration
# file read back (with a bad one refused); prefix ids in a trace and
# multi-turn sessions through the prefix cache.
set -u
BIN=${KVL_BIN:?KVL_BIN must point at kvllm}
TMP=${KVL_TMP:-/tmp}/test_sim_cli.$$
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
fails=0
checks=0
ok() { checks=$((checks + 1)); }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*" >&2; }

# expect CODE NEEDLE -- ARGS: exit code and a substring of stdout+stderr
expect() {
    local code=$1 needle=$2
    shift 3
    local out rc
    out=$("$BIN" sim "$@" 2>&1)
    rc=$?
    if [ "$rc" != "$code" ]; then
        bad "sim $* exited $rc, wanted $code: $out"
    elif [ -n "$needle" ] && ! grep -qF -- "$needle" <<<"$out"; then
        bad "sim $*: output lacks '$needle': $out"
    else
        ok
    fi
}

A=(--model OPT-13B --device A100-40GB --kv-mem 12GiB)
expect 0 "usage: kvllm sim" -- --help
expect 2 "give one of --model" -- --device A100-40GB
expect 2 "--device is required" -- --model OPT-13B
expect 2 "unknown model" -- --model nope --device A100-40GB
expect 2 "is not one of" -- --model OPT-13B --device B200
expect 2 "--device cpu needs --calib" -- --model OPT-13B --device cpu
expect 2 "--policy 'lru'" -- "${A[@]}" --policy lru
expect 2 "--workload 'zipf'" -- "${A[@]}" --workload zipf
expect 2 "--arrival 'x'" -- "${A[@]}" --arrival x
expect 2 "unknown flag '--bogus'" -- "${A[@]}" --bogus
expect 2 "--tp 3" -- "${A[@]}" --tp 3
expect 1 "cannot open" -- "${A[@]}" --workload trace:"$TMP"/missing
expect 1 "a burst needs a request count" -- "${A[@]}" --arrival burst

# a trace: 5 rows, one too long for the 2048 context (refused, counted)
printf '# arrival prompt output\n0 100 50\n0.5 200 20\n0.5 10 10\n1.25 1500 1000\n2 64 64\n' \
    >"$TMP/trace.txt"
out=$("$BIN" sim "${A[@]}" --workload trace:"$TMP/trace.txt" 2>&1)
if grep -qF "4 requests (1 refused)" <<<"$out"; then ok; else bad "trace: $out"; fi
printf '0 100 50\n1 x 3\n' >"$TMP/bad.txt"
expect 1 "line 2" -- "${A[@]}" --workload trace:"$TMP/bad.txt"
printf '2 100 50\n1 10 3\n' >"$TMP/order.txt"
expect 1 "before the previous row" -- "${A[@]}" --workload trace:"$TMP/order.txt"

# gamma arrivals, a sweep of two policies: a table with both
out=$("$BIN" sim "${A[@]}" --arrival gamma:2 --rates 1,2 --duration 120 --policy paged,max 2>&1)
if grep -q "^paged " <<<"$out" && grep -q "^max " <<<"$out" && grep -q "highest swept rate" <<<"$out"; then
    ok
else
    bad "gamma sweep: $out"
fi

# one seed, byte-identical JSON; another seed differs
for i in 1 2; do
    "$BIN" sim "${A[@]}" --workload alpaca --rate 5 --duration 120 --seed 3 --policy all \
        --json "$TMP/r$i.json" --csv "$TMP/r$i.csv" --svg "$TMP/r$i.svg" >/dev/null 2>&1 || bad "run $i"
done
if cmp -s "$TMP/r1.json" "$TMP/r2.json"; then ok; else bad "same seed, different JSON"; fi
"$BIN" sim "${A[@]}" --workload alpaca --rate 5 --duration 120 --seed 4 --json "$TMP/r3.json" \
    >/dev/null 2>&1
if cmp -s "$TMP/r1.json" "$TMP/r3.json"; then bad "another seed, same JSON"; else ok; fi
if [ "$(wc -l <"$TMP/r1.csv")" = 5 ]; then ok; else bad "csv rows: $(wc -l <"$TMP/r1.csv")"; fi
if grep -q "<polyline" "$TMP/r1.svg" && tail -1 "$TMP/r1.svg" | grep -q "</svg>"; then ok; else bad "svg"; fi
if command -v python3 >/dev/null; then
    if python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert len(d['results']) == 4" \
        "$TMP/r1.json"; then ok; else bad "json does not parse"; fi
fi

# the KV-over-time chart and the step log of one run
"$BIN" sim "${A[@]}" --rate 2 --duration 60 --svg-kv "$TMP/kv.svg" --steps "$TMP/steps.txt" \
    >/dev/null 2>&1 || bad "svg-kv run"
if [ "$(grep -c "<polyline" "$TMP/kv.svg")" = 4 ]; then ok; else bad "kv svg"; fi
if awk 'NF != 11 { exit 1 }' "$TMP/steps.txt" && [ -s "$TMP/steps.txt" ]; then ok; else bad "steps"; fi

# goodput's SLOs and the reservation allocator: flags read, bad values refused
expect 0 "goodput         0.000 req/s (0 requests with TTFT <= 0 s" -- "${A[@]}" --requests 20 \
    --slo-ttft 0
expect 2 "--slo-tpot" -- "${A[@]}" --slo-tpot -1
expect 2 "--alloc 'first': want buddy or blocks" -- "${A[@]}" --alloc first
b=$("$BIN" sim "${A[@]}" --rate 2 --duration 120 --policy oracle --alloc blocks 2>&1 | grep rounding)
u=$("$BIN" sim "${A[@]}" --rate 2 --duration 120 --policy oracle 2>&1 | grep rounding)
if grep -q "rounding 0.000" <<<"$b" && [ "$b" != "$u" ]; then ok; else bad "alloc: $b / $u"; fi

# a shared prefix is served from the prefix cache; a bad length refused
expect 0 "prefix cache    0 of" -- "${A[@]}" --requests 20 --prefix-cache
out=$("$BIN" sim "${A[@]}" --requests 20 --shared-prefix 64 2>&1 | grep -o "prefix cache  *[0-9]*")
if [ -n "$out" ] && [ "${out##* }" -gt 0 ]; then ok; else bad "shared prefix: $out"; fi

# a trace with prefix ids (the cache is on by itself), --prefix-len for
# rows that give an id only; --no-prefix-cache turns it off
printf '0 100 10 7\n5 100 10 7\n10 100 10 8 64\n15 100 10 8 64\n' >"$TMP/ptrace.txt"
expect 0 "prefix cache    160 of 400 prompt positions" -- "${A[@]}" \
    --workload trace:"$TMP/ptrace.txt" --prefix-len 96
expect 0 "prefix cache    0 of 0" -- "${A[@]}" --workload trace:"$TMP/ptrace.txt" \
    --prefix-len 96 --no-prefix-cache
expect 1 "line 1: prefix_id 7 without a prefix_len" -- "${A[@]}" --workload trace:"$TMP/ptrace.txt"
# sessions: counted, JSON and CSV carry the prefix figures, bad values refused
out=$("$BIN" sim "${A[@]}" --requests 30 --rate 0.2 --sessions 3 --think 20 \
    --json "$TMP/s.json" --csv "$TMP/s.csv" 2>&1)
if grep -q "; 30 sessions" <<<"$out" && grep -q '"sessions": 30' "$TMP/s.json" &&
    head -1 "$TMP/s.csv" | grep -q "prefix_hit_rate"; then ok; else bad "sessions: $out"; fi
expect 2 "--sessions" -- "${A[@]}" --sessions 0
expect 2 "--think" -- "${A[@]}" --sessions 2 --think -1
expect 1 "sessions (turns 2) need a synthetic workload" -- "${A[@]}" --sessions 2 \
    --workload trace:"$TMP/ptrace.txt" --prefix-len 96
expect 2 "--shared-prefix: -1 is outside" -- "${A[@]}" --shared-prefix -1

# vLLM's prompt-only steps priced apart: more steps, the running set reported
one=$("$BIN" sim "${A[@]}" --requests 40 --rate 4 2>&1 | grep -o "[0-9]* steps")
two=$("$BIN" sim "${A[@]}" --requests 40 --rate 4 --split-prefill 2>&1 | grep -o "[0-9]* steps")
if [ -n "$one" ] && [ "${two% *}" -gt "${one% *}" ]; then ok; else bad "split: $one / $two"; fi
expect 0 "running (time-weighted)" -- "${A[@]}" --requests 5 --split-prefill --overhead vllm
expect 2 "--overhead" -- "${A[@]}" --overhead fast

# swap preemption: flags read, bad values refused
expect 0 "by swap" -- "${A[@]}" --requests 20 --preempt swap --swap-mem 1GiB
expect 2 "--preempt 'later': want recompute, swap or auto" -- "${A[@]}" --preempt later
expect 2 "--swap-mem" -- "${A[@]}" --swap-mem lots

# a calibration file read back; a bad one refused
printf 'name cpu-test\nbandwidth 3e9\nflops 9e10\nserial 1\n' >"$TMP/calib.txt"
expect 0 "cpu-test" -- --model TinyLlama-1.1B --type q8_0 --device cpu --calib "$TMP/calib.txt" \
    --workload fixed:16,4 --requests 2 --arrival burst
printf 'bandwidth 3e9\n' >"$TMP/calib_bad.txt"
expect 1 "must both be > 0" -- --model TinyLlama-1.1B --device cpu --calib "$TMP/calib_bad.txt"
out=$("$BIN" sim calibrate 2>&1)
if [ $? = 2 ] && grep -qF -- "-o FILE is required" <<<"$out"; then ok; else bad "calibrate: $out"; fi
out=$("$BIN" sim calibrate -o "$TMP/c.txt" -m "$TMP/none.gguf" 2>&1)
if [ $? = 1 ] && grep -qF -- "-m $TMP/none.gguf" <<<"$out"; then ok; else bad "calibrate -m: $out"; fi
# -m: the product points are the model's own (every layer's products), the
# one large matrix's kept as a comment; the sim reads the file back
if "$BIN" sim calibrate -t 2 -m "$KVL_SHARED/models/stories260K.gguf" -o "$TMP/c260.txt" \
    >"$TMP/c260.log" 2>&1; then
  python3 - "$TMP/c260.txt" <<'PY' && ok || bad "calibrate -m: $(cat "$TMP/c260.txt")"
import sys
kv, text = {}, open(sys.argv[1]).read()
for line in text.splitlines():
    f = line.split()
    if f and not f[0].startswith("#"):
        kv[f[0]] = f[1]
assert "every layer's products of the model (-m)" in text
assert "#matrix mm_s_per_byte_1 " in text and "f32 weights, 906240 bytes" in text, text
for k in ("mm_s_per_byte_1", "mm_s_per_byte_4", "mm_s_per_byte_16", "mm_s_per_byte_64",
          "attn_s_per_pos", "tok_s_per_layer", "row_s_per_vocab", "step_overhead_s"):
    assert 0 < float(kv[k]) < 1, (k, kv.get(k))
PY
  expect 0 "cpu-2t" -- -m "$KVL_SHARED/models/stories260K.gguf" --device cpu \
      --calib "$TMP/c260.txt" --workload fixed:16,4 --requests 2 --arrival burst
  # the points come from real forward passes: the sim prices a lone prefill
  # of N tokens at the forward measured for N (#fwd_s) plus the per-row
  # sampling (the engine's, after the forward), to the files' digits
  for n in 1 3 16 64; do
    "$BIN" sim -m "$KVL_SHARED/models/stories260K.gguf" --type f32 --device cpu \
      --calib "$TMP/c260.txt" --workload "fixed:$n,1" --requests 1 --steps "$TMP/st$n.txt" \
      >/dev/null 2>&1 || bad "sim with the -m calibration, $n tokens"
    python3 - "$TMP/c260.txt" "$TMP/st$n.txt" "$n" <<'PY' && ok || bad "lone prefill of $n tokens"
import sys
path, steps, n = sys.argv[1], sys.argv[2], sys.argv[3]
kv, kept, loop = {}, [], {}
for line in open(path):
    f = line.split()
    if f and f[0] == "#fwd_s":
        kv.update(("fwd_" + a.split(":")[0], float(a.split(":")[1])) for a in f[1:])
    elif f and f[0] == "#kept_loop":
        kept = f[1:]
    elif f and f[0] == "#loop":
        loop = dict(zip(f[1::2], f[2::2]))
    elif f and not f[0].startswith("#"):
        kv[f[0]] = f[1]
assert "64" not in kept, kept  # 64 tokens: the products are most of the forward
step = [l.split() for l in open(steps) if not l.startswith("#")][0]
assert int(step[4]) == int(n), step  # the prefill step
if n in kept:  # under load the rest of a tiny forward's price can exceed it
    assert kv["mm_s_per_byte_" + n] == loop["mm_s_per_byte_" + n], (kv, loop)
else:
    want = kv["fwd_" + n] + float(kv["row_s_per_vocab"]) * 512
    assert abs(float(step[1]) - want) < 1e-4 * want + 1e-6, (step, want)  # 6 digits, 1 us
PY
  done
else
  bad "calibrate -m stories260K: $(cat "$TMP/c260.log")"
fi
# the served step's terms: read, and each moves the CPU's step; bad values refused
cat "$TMP/calib.txt" - >"$TMP/calib_t.txt" <<'EOF2'
mm_s_per_byte_1 5e-11
mm_s_per_byte_4 5e-11
mm_s_per_byte_16 1e-10
mm_s_per_byte_64 3e-10
EOF2
step() { "$BIN" sim --model TinyLlama-1.1B --type q8_0 --device cpu --calib "$1" \
    --workload fixed:16,4 --requests 2 --arrival burst | grep -o 'step [0-9.]* s' | head -1; }
base=$(step "$TMP/calib_t.txt")
{ cat "$TMP/calib_t.txt"; echo "row_s_per_vocab 1e-6"; } >"$TMP/calib_r.txt"
more=$(step "$TMP/calib_r.txt")
if [ -n "$base" ] && [ "$base" != "$more" ]; then ok; else bad "row term: '$base' '$more'"; fi
printf 'attn_s_per_pos 1\n' >>"$TMP/calib_r.txt"
expect 1 "attn_s_per_pos '1' is not a number in [0, 0.001]" -- --model TinyLlama-1.1B \
    --device cpu --calib "$TMP/calib_r.txt"

echo "test_sim_cli: $checks checks, $fails failed"
[ "$fails" = 0 ]
