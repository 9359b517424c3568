#!/usr/bin/env python3
"""kvllm bench against llama.cpp's own llama-bench, one process pair at a time.

  bench/llamabench_pairs.py --kvllm PATH --llama-bench PATH -m MODEL
                            [--pairs N] [--threads N] [--out FILE.jsonl]
                            -- TEST FLAGS

TEST FLAGS are the flags both tools share with the same meaning: -p N
(prompt tokens in one batch), -n N (tokens generated one at a time), -d D
(untimed depth first), each with one value. Every pair runs both tools once
with -r 1, in the order A B for odd pairs and B A for even ones, so a drift
in the machine's memory bandwidth during the run hits both sides alike; each
process loads the model from the page cache and does its own untimed
warm-up, so only the tools' own timed figures are compared.

llama-bench is not installed by anything here. node-llama-cpp carries the
llama.cpp source it was built from as a git bundle; bench/RESULTS.md section
2 says how to build llama-bench from it.

Prints one markdown row per test: median t/s of each tool, the median and
range of the pair-by-pair ratios kvllm/llama-bench, and the pairs.
"""
import argparse
import json
import statistics
import subprocess
import sys


def die(msg):
    sys.stderr.write(f"llamabench_pairs: {msg}\n")
    sys.exit(2)


def run_json(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        die(f"{cmd[0]} exited {p.returncode}: {p.stderr.strip()[-400:]}")
    return p.stdout


def kvllm_ts(out):
    rows = json.loads(out)
    if len(rows) != 1:
        die(f"kvllm bench gave {len(rows)} results, expected 1")
    return rows[0]["test"], rows[0]["avg_ts"]


def llama_ts(out):
    rows = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]
    if len(rows) != 1:
        die(f"llama-bench gave {len(rows)} results, expected 1")
    return rows[0]["avg_ts"]


def main():
    ap = argparse.ArgumentParser(usage=__doc__)
    ap.add_argument("--kvllm", required=True)
    ap.add_argument("--llama-bench", required=True, dest="lb")
    ap.add_argument("-m", required=True, dest="model")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--kvllm-flags", default="", help="extra kvllm bench flags, one string")
    ap.add_argument("--lb-flags", default="", help="extra llama-bench flags, one string")
    args, rest = ap.parse_known_args()
    if rest[:1] == ["--"]:
        rest = rest[1:]
    if not 1 <= args.pairs <= 100:
        die(f"--pairs: {args.pairs} is outside [1, 100]")
    if not 1 <= args.threads <= 1024:
        die(f"--threads: {args.threads} is outside [1, 1024]")
    allowed = {"-p", "-n", "-d"}
    if len(rest) % 2 or any(rest[i] not in allowed for i in range(0, len(rest), 2)):
        die(f"test flags must be pairs of -p/-n/-d N, got {rest}")
    for i in range(1, len(rest), 2):
        if not rest[i].isdigit():
            die(f"{rest[i - 1]}: '{rest[i]}' is not one non-negative integer")
    t = str(args.threads)
    flags = {"-p": "0", "-n": "0"}  # both tools default -p to 512: be explicit
    flags.update(zip(rest[0::2], rest[1::2]))
    test = [x for kv_pair in flags.items() for x in kv_pair]
    kv_cmd = [args.kvllm, "bench", "-m", args.model, *test, "-r", "1", "-t", t, "-o", "json",
              *args.kvllm_flags.split()]
    lb_cmd = [args.lb, "-m", args.model, *test, "-r", "1", "-t", t, "-o", "jsonl",
              *args.lb_flags.split()]
    out = open(args.out, "w") if args.out else None
    kv, lb, ratios, name = [], [], [], None
    for i in range(args.pairs):
        order = ("kvllm", "llama") if i % 2 == 0 else ("llama", "kvllm")
        got = {}
        for who in order:
            if who == "kvllm":
                name, got["kvllm"] = kvllm_ts(run_json(kv_cmd))
            else:
                got["llama"] = llama_ts(run_json(lb_cmd))
        kv.append(got["kvllm"])
        lb.append(got["llama"])
        ratios.append(got["kvllm"] / got["llama"])
        rec = {"pair": i + 1, "test": name, "order": "-".join(order), "kvllm_ts": got["kvllm"],
               "llama_bench_ts": got["llama"], "ratio": ratios[-1]}
        sys.stderr.write(json.dumps(rec) + "\n")
        if out:
            out.write(json.dumps(rec) + "\n")
            out.flush()
    print("| test | kvllm t/s | llama-bench t/s | kvllm/llama-bench (median, min-max) | pairs |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| {name} | {statistics.median(kv):.2f} | {statistics.median(lb):.2f} | "
          f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) | {args.pairs} |")


if __name__ == "__main__":
    main()
