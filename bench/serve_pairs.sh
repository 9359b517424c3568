#!/usr/bin/env bash
# kvllm bench serve, two configurations run alternately (A B A B ...) so
# that a shared machine's noise falls on both alike; prints each run's
# figures and the per-pair ratio of output tokens/s (B / A).
#
#   bench/serve_pairs.sh PAIRS OUTDIR "A flags" "B flags" [common flags...]
#
# e.g. one request vs 16 concurrent on a TinyLlama-shape Q8_0 model:
#   bench/serve_pairs.sh 3 /tmp/sp "--num-prompts 1" "--num-prompts 16 --max-seqs 16" \
#       -m /tmp/tl.gguf -t 2 --input-len 32 --output-len 64
set -eu
bin=${KVL_BIN:-build/kvllm}
pairs=$1 out=$2 a=$3 b=$4
shift 4
mkdir -p "$out"
for i in $(seq 1 "$pairs"); do
  for arm in A B; do
    flags=$a
    [ $arm = B ] && flags=$b
    # shellcheck disable=SC2086
    "$bin" bench serve "$@" $flags -o json --svg "$out/$arm$i.svg" >"$out/$arm$i.json" \
      2>"$out/$arm$i.err" || { cat "$out/$arm$i.err"; exit 1; }
  done
done
python3 - "$out" "$pairs" <<'PY'
import json, sys
out, pairs = sys.argv[1], int(sys.argv[2])
print("run  completed  out_tok  dur_s  req/s  out_tok/s  p50_tpot  p99_tpot  p99_ttft  "
      "preempt(rc/sw)  recomputed  swap_out_MiB  batch:mean_tpot_ms")
for i in range(1, pairs + 1):
    r = {}
    for arm in "AB":
        d = json.load(open(f"{out}/{arm}{i}.json"))
        r[arm] = d
        curve = " ".join(f'{b["batch_size"]}:{b["mean_tpot_ms"]:.0f}' for b in d["batch_tpot"])
        print(f'{arm}{i:<3} {d["completed"]:>9} {d["total_output_tokens"]:>8} {d["duration"]:>6.1f} '
              f'{d["request_throughput"]:>6.3f} {d["output_throughput"]:>10.2f} '
              f'{d["p50_tpot_ms"]:>9.1f} {d["p99_tpot_ms"]:>9.1f} {d["p99_ttft_ms"]:>9.0f} '
              f'{d["preemptions"]:>6}({d["preemptions_recompute"]}/{d["preemptions_swap"]}) '
              f'{d["tokens_recomputed"]:>10} {d["swap_out_bytes"] / 2**20:>13.1f}  {curve}')
    print(f'pair {i}: output tok/s B/A = {r["B"]["output_throughput"] / r["A"]["output_throughput"]:.2f}, '
          f'req/s B/A = {r["B"]["request_throughput"] / r["A"]["request_throughput"]:.2f}')
PY
