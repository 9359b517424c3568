#!/usr/bin/env bash
# End-to-end checks of kvllm bench serve on the shipped stories260K: every
# request completes, the JSON report is complete and self-consistent, the
# text report carries vllm bench serve's names, a KV pool far too small
# for the batch forces preemptions (recompute and swap) and still completes
# everything, and bad flags are usage errors (exit 2) that name the flag.
# Structure only: no assertion depends on timing.
set -u
bin=${KVL_BIN:?}
shared=${KVL_SHARED:?}
tmp=${KVL_TMP:-/tmp}/bench_serve
mkdir -p "$tmp"
m="$shared/models/stories260K.gguf"
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
expect_rc() { # rc cmd... ; stdout in $tmp/out, stderr in $tmp/err
  local want=$1
  shift
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  [ "$rc" = "$want" ] && ok || { bad "rc $rc != $want: $*"; cat "$tmp/err"; }
}
expect_err() { # needle
  grep -qF -- "$1" "$tmp/err" && ok || { bad "stderr lacks '$1'"; cat "$tmp/err"; }
}
# check_json FILE N MAX_SEQS MAX_CONC: the fields every report has, and
# their consistency
check_json() {
  python3 - "$@" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
n, max_seqs, max_conc = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
assert d["num_prompts"] == n and d["completed"] == n and d["failed"] == 0, d
assert d["errors"] == [], d["errors"]
ins, outs = d["input_lens"], d["output_lens"]
assert len(ins) == n and len(outs) == n
assert sum(ins) == d["total_input_tokens"] and sum(outs) == d["total_output_tokens"]
assert all(o >= 1 for o in outs)
assert d["total_output_tokens"] <= d["requested_output_tokens"]
assert d["finish_stop"] + d["finish_length"] == n
# a sampled EOS counts as an output token but streams no token event
assert d["total_output_tokens"] - d["finish_stop"] <= d["token_events"] <= d["total_output_tokens"]
for k in ("request_throughput", "output_throughput", "total_token_throughput", "duration"):
    assert d[k] > 0, k
for m in ("ttft", "tpot", "itl", "e2el"):
    for s in ("mean", "median", "std", "p50", "p90", "p99"):
        assert f"{s}_{m}_ms" in d, (s, m)
    assert d[f"median_{m}_ms"] == d[f"p50_{m}_ms"]
    assert 0 <= d[f"p50_{m}_ms"] <= d[f"p90_{m}_ms"] <= d[f"p99_{m}_ms"], m
assert d["n_ttft"] == n and d["n_e2el"] == n
# the percentiles interpolate linearly between order statistics (numpy's default)
def pct(v, p):
    v = sorted(v)
    x = p / 100 * (len(v) - 1)
    lo = int(x)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (x - lo)
ttfts = [t * 1e3 for t in d["ttfts"]]
assert len(ttfts) == n
for p in (50, 90, 99):
    assert abs(pct(ttfts, p) - d[f"p{p}_ttft_ms"]) < 2e-3, (p, pct(ttfts, p), d[f"p{p}_ttft_ms"])
assert abs(sum(ttfts) / n - d["mean_ttft_ms"]) < 2e-3
assert d["n_tpot"] == sum(1 for o in outs if o > 1)
assert d["n_itl"] == sum(outs) - n   # every gap between one request's tokens
assert d["max_concurrent_requests"] <= max_conc
for k in ("preemptions", "preemptions_recompute", "preemptions_swap", "tokens_recomputed",
          "swap_out_blocks", "swap_out_bytes", "swap_in_blocks", "swap_in_bytes"):
    assert d[k] >= 0, k
assert d["preemptions"] == d["preemptions_recompute"] + d["preemptions_swap"]
assert d["engine"]["max_seqs"] == max_seqs
steps = 0
for b in d["batch_tpot"]:
    assert 1 <= b["batch_size"] <= max_seqs and b["steps"] > 0 and b["mean_tpot_ms"] >= 0, b
    steps += b["steps"]
assert steps + d["mixed_steps"] == d["engine_steps"], (steps, d["mixed_steps"], d["engine_steps"])
assert d["batch_tpot"], "no decode-only step"
PY
}

# all at t = 0, uniform lengths, JSON and SVG
expect_rc 0 "$bin" bench serve -m "$m" --num-prompts 8 --input-len 16:48 --output-len 8:24 \
  --max-seqs 4 -o json --svg "$tmp/c.svg"
cp "$tmp/out" "$tmp/a.json"
check_json "$tmp/a.json" 8 4 8 && ok || bad "uniform lengths: json"
python3 - "$tmp/a.json" "$tmp/c.svg" <<'PY' && ok || bad "uniform lengths: ranges, svg"
import json, sys
d = json.load(open(sys.argv[1]))
assert all(16 <= i <= 48 for i in d["input_lens"]) and len(set(d["input_lens"])) > 1
assert all(o <= 24 for o in d["output_lens"])
assert d["request_rate"] == "inf" and d["max_concurrency"] == 0
svg = open(sys.argv[2]).read()
assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
assert svg.count("<circle") == len(d["batch_tpot"])
PY
# the same seed gives the same workload and, all at t = 0, the same outputs
expect_rc 0 "$bin" bench serve -m "$m" --num-prompts 8 --input-len 16:48 --output-len 8:24 \
  --max-seqs 4 -o json
python3 - "$tmp/a.json" "$tmp/out" <<'PY' && ok || bad "same seed, same workload"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert a["input_lens"] == b["input_lens"] and a["output_lens"] == b["output_lens"]
PY

# --steps: one line per step that ran tokens; prefill tokens add up to the
# prompts, decode tokens to the outputs after each request's first, and the
# lines to the report's steps
expect_rc 0 "$bin" bench serve -m "$m" --num-prompts 6 --input-len 8:40 --output-len 4:12 \
  --max-seqs 3 --max-batch-tokens 32 -o json --steps "$tmp/steps.txt"
python3 - "$tmp/out" "$tmp/steps.txt" <<'PY' && ok || bad "--steps: sums"
import json, sys
d = json.load(open(sys.argv[1]))
rows = [l.split() for l in open(sys.argv[2])]
assert rows and all(len(r) == 6 for r in rows), rows[:3]
pre = sum(int(r[4]) for r in rows)
dec = sum(int(r[5]) for r in rows)
assert all(int(r[3]) == int(r[4]) + int(r[5]) and int(r[3]) <= 32 for r in rows)
assert pre == d["total_input_tokens"] + d["tokens_recomputed"], (pre, d["total_input_tokens"])
assert dec == d["total_output_tokens"] - d["num_prompts"], (dec, d["total_output_tokens"])
assert len(rows) == d["engine_steps"], (len(rows), d["engine_steps"])
ends = [float(r[0]) for r in rows]
assert ends == sorted(ends) and all(float(r[1]) >= 0 for r in rows)
PY
# the warm-up request is not reported: the same workload without it counts
# the same steps, tokens and prefix lookups
cp "$tmp/out" "$tmp/warm.json"
expect_rc 0 "$bin" bench serve -m "$m" --num-prompts 6 --input-len 8:40 --output-len 4:12 \
  --max-seqs 3 --max-batch-tokens 32 -o json --no-warmup --ignore-eos
cp "$tmp/out" "$tmp/cold.json"
expect_rc 0 "$bin" bench serve -m "$m" --num-prompts 6 --input-len 8:40 --output-len 4:12 \
  --max-seqs 3 --max-batch-tokens 32 -o json --ignore-eos
python3 - "$tmp/cold.json" "$tmp/out" <<'PY' && ok || bad "warm-up counted in the report"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for k in ("engine_steps", "total_input_tokens", "total_output_tokens", "prefix_lookup_tokens",
          "prefix_hit_tokens", "prefix_evicted_blocks", "prefix_evicted_unused", "mixed_steps"):
    assert a[k] == b[k], (k, a[k], b[k])
PY
expect_rc 1 "$bin" bench serve -m "$m" --num-prompts 2 --steps "$tmp/no/such/dir/s.txt"
expect_err "--steps: cannot write"

# text report: vllm bench serve's names
expect_rc 0 "$bin" bench serve -m "$m" --num-prompts 4 --input-len 8 --output-len 8
for needle in "Serving Benchmark Result" "Successful requests:                     4" \
  "Request throughput (req/s):" "Output token throughput (tok/s):" \
  "Total Token throughput (tok/s):" "Mean TTFT (ms):" "P90 TTFT (ms):" "P99 TPOT (ms):" \
  "Median ITL (ms):" "P50 E2EL (ms):" "Preemptions (recompute / swap):" "Tokens recomputed:" \
  "Swapped out (blocks / bytes):" "Batch size vs TPOT"; do
  grep -qF -- "$needle" "$tmp/out" && ok || bad "text report lacks '$needle'"
done

# Poisson and gamma arrivals, a concurrency cap
expect_rc 0 "$bin" bench serve -m "$m" --num-prompts 6 --input-len 8 --output-len 8 \
  --request-rate 500 -o json
check_json "$tmp/out" 6 16 6 && ok || bad "poisson: json"
expect_rc 0 "$bin" bench serve -m "$m" --num-prompts 6 --input-len 8 --output-len 8 \
  --request-rate 500 --burstiness 0.3 --max-concurrency 2 -o json
check_json "$tmp/out" 6 16 2 && ok || bad "gamma, max concurrency 2: json"

# a dataset file, cycled
printf '10 5\n# a comment\n\n20 3\n' >"$tmp/ds.txt"
expect_rc 0 "$bin" bench serve -m "$m" --dataset "$tmp/ds.txt" --num-prompts 5 -o json
check_json "$tmp/out" 5 16 5 && ok || bad "dataset: json"
python3 - "$tmp/out" <<'PY' && ok || bad "dataset: lengths"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["input_lens"] == [10, 20, 10, 20, 10], d["input_lens"]
assert all(o <= w for o, w in zip(d["output_lens"], [5, 3, 5, 3, 5]))
PY
expect_rc 0 "$bin" bench serve -m "$m" --dataset "$tmp/ds.txt" -o json
python3 -c "import json,sys; assert json.load(open(sys.argv[1]))['completed'] == 2" "$tmp/out" \
  && ok || bad "dataset: one request per line by default"

# forced preemption: 12 blocks of 16 positions (f32 KV, 1280 bytes a
# position) for 8 sequences of up to 96 positions; every request completes
for mode in recompute swap; do
  expect_rc 0 "$bin" bench serve -m "$m" --num-prompts 16 --input-len 32 --output-len 64 \
    --kv-mem 256KiB -c 128 --max-seqs 8 --preempt $mode --swap-mem 1MiB -o json
  check_json "$tmp/out" 16 8 16 && ok || bad "preempt $mode: json"
  python3 - "$tmp/out" $mode <<'PY' && ok || bad "preempt $mode: counters"
import json, sys
d, mode = json.load(open(sys.argv[1])), sys.argv[2]
assert d["engine"]["kv_blocks"] == 12, d["engine"]
assert d["preemptions"] > 0, d["preemptions"]
if mode == "recompute":
    assert d["preemptions_recompute"] == d["preemptions"] and d["tokens_recomputed"] > 0
    assert d["swap_out_blocks"] == 0 and d["swap_in_blocks"] == 0
else:
    assert d["preemptions_swap"] > 0 and d["swap_out_blocks"] > 0
    # every block came back: copied, or found still cached in the pool
    assert d["swap_in_blocks"] + d["prefix_swapin_hit_blocks"] == d["swap_out_blocks"], d
    assert d["swap_out_bytes"] % d["swap_out_blocks"] == 0
    bb = d["swap_out_bytes"] // d["swap_out_blocks"]
    assert d["swap_in_bytes"] == d["swap_in_blocks"] * bb
PY
done

# bad flags: exit 2, the flag and its range named
expect_rc 2 "$bin" bench serve -m "$m" --num-prompts 0
expect_err "--num-prompts: 0 is outside [1, 1000000]"
expect_rc 2 "$bin" bench serve -m "$m" --input-len 50:10
expect_err "--input-len: '50:10': 50 > 10"
expect_rc 2 "$bin" bench serve -m "$m" --output-len 4:x
expect_err "--output-len: 'x' is not an integer"
expect_rc 2 "$bin" bench serve -m "$m" --request-rate -3
expect_err "--request-rate: -3 is outside"
expect_rc 2 "$bin" bench serve -m "$m" --burstiness 0
expect_err "--burstiness: 0 is outside [0.01, 100]"
expect_rc 2 "$bin" bench serve -m "$m" --max-seqs 0
expect_err "--max-seqs: 0 is outside [1, 65536]"
expect_rc 2 "$bin" bench serve -m "$m" --preempt fast
expect_err "--preempt: 'fast' is not auto, recompute or swap"
expect_rc 2 "$bin" bench serve -m "$m" -o xml
expect_err "-o: 'xml' is not text or json"
expect_rc 2 "$bin" bench serve -m "$m" --kv-mem 0
expect_err "--kv-mem: 0 bytes"
expect_rc 2 "$bin" bench serve -m "$m" --frob 1
expect_err "unknown flag '--frob'"
expect_rc 2 "$bin" bench serve -m "$m" --num-prompts
expect_err "--num-prompts needs a value"
expect_rc 2 "$bin" bench serve -m "$m" --input-len 2000 --output-len 100
expect_err "input 2000 + output 100 = 2100 tokens > the context"
expect_rc 2 "$bin" bench serve -m "$m" --dataset "$tmp/none.txt"
expect_err "--dataset: cannot open"
printf '10 5\n10 x\n' >"$tmp/bad.txt"
expect_rc 2 "$bin" bench serve -m "$m" --dataset "$tmp/bad.txt"
expect_err "bad.txt:2: not \"prompt_len output_len\""
printf '0 5\n' >"$tmp/bad.txt"
expect_rc 2 "$bin" bench serve -m "$m" --dataset "$tmp/bad.txt"
expect_err "bad.txt:1: lengths 0 5 outside"
expect_rc 2 "$bin" bench serve -m "$m" --dataset "$tmp/ds.txt" --input-len 8
expect_err "--dataset gives the lengths"
expect_rc 0 "$bin" bench serve --help
grep -qF -- "--request-rate" "$tmp/out" && ok || bad "help lists --request-rate"

# no swap thrash: a swapped request comes back only when its next chunk
# fits too (it used to swap out and in again every step: 93 swaps here)
expect_rc 0 "$bin" bench serve -m "$m" --num-prompts 4 --input-len 480 --output-len 32 --max-seqs 4 \
  -c 512 --kv-mem 819200 --swap-mem 64MiB --preempt swap -o json
python3 - "$tmp/out" <<'PY' && ok || bad "swap thrash"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["completed"] == 4, d
assert 1 <= d["preemptions_swap"] <= 4, d["preemptions_swap"]
assert d["swap_in_blocks"] + d["prefix_swapin_hit_blocks"] == d["swap_out_blocks"], d
PY

# multi-turn chat (bench_workload.c): every turn resends the history; with
# the prefix tier the evicted sessions come back from it, without it the
# small pool (40 blocks of 4) has evicted them: no hits.
for tier in host off; do
  expect_rc 0 "$bin" bench serve -m "$m" -t 1 --chat-sessions 4 --chat-turns 5 --input-len 16 \
    --output-len 8 --ignore-eos --temp 0 --block-size 4 --kv-mem 200KiB --swap-mem 2MiB \
    --prefix-tier $tier --max-concurrency 1 -c 160 -o json
  python3 - "$tmp/out" $tier <<'PY' && ok || bad "chat workload, tier $tier"
import json, sys
d, tier = json.load(open(sys.argv[1])), sys.argv[2]
assert d["completed"] == 20 and d["prefix_tier"] == tier, d
t = d["chat_turns"]
assert [x["prompt_tokens"] for x in t] == [17, 41, 65, 89, 113], t  # + 8 answer + 16 user a turn
assert t[0]["cached_tokens"] == 0
if tier == "host":
    assert all(t[k]["cached_tokens"] == t[k - 1]["prompt_tokens"] + 7 for k in range(1, 5)), t
    assert d["prefix_hit_tokens_tier"] > 0 and d["prefix_promoted_blocks"] > 0, d
else:
    assert d["prefix_hit_tokens_tier"] == 0 and d["prefix_demoted_blocks"] == 0, d
PY
done
expect_rc 2 "$bin" bench serve -m "$m" --chat-sessions 4
expect_err "--chat-sessions and --chat-turns go together"
expect_rc 2 "$bin" bench serve -m "$m" --prefix-tier disk
expect_err "--prefix-tier: 'disk' is not off, host or file"
expect_rc 2 "$bin" bench serve -m "$m" --prefix-tier host
expect_err "prefix_tier host lives in the swap area in memory: it needs swap_mem > 0"

echo "test_bench_serve: $pass passed, $fail failed"
[ "$fail" = 0 ]
