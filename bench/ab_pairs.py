#!/usr/bin/env python3
"""Pair-by-pair ratios of two interleaved runs: ab_pairs.py A.json B.json [NAME_A NAME_B]

A.json and B.json are the outputs of bench/interleave.py (kvllm bench -o
json, or bench/llama_gate, run with --gate): the k-th samples of a test in
both were timed back to back. Prints one markdown row per test: the median
t/s of each, and the median (min-max) of the ratios A/B of the pairs.
"""
import json
import statistics
import sys

a, b = (json.load(open(p)) for p in sys.argv[1:3])
na, nb = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else ("A", "B")
bt = {r["test"]: r for r in b}
print(f"| test | {na} t/s | {nb} t/s | {na}/{nb}, median of pairs (min-max) | pairs |")
print("|---|---:|---:|---:|---:|")
for r in a:
    s = bt.get(r["test"])
    if not s:
        continue
    ra = [x / y for x, y in zip(r["samples_ts"], s["samples_ts"]) if y > 0]
    print(f"| {r['test']} | {statistics.median(r['samples_ts']):.2f} | "
          f"{statistics.median(s['samples_ts']):.2f} | {statistics.median(ra):.3f} "
          f"({min(ra):.2f}-{max(ra):.2f}) | {len(ra)} |")
