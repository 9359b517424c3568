#!/usr/bin/env python3
"""Two kvllm binaries side by side: ab_binaries.py N BIN_A BIN_B MODEL [bench args...]

Runs `BIN bench -m MODEL -o json ARGS` N times for each binary, alternating
(A B, B A, ...), each under flock /tmp/kvl-bench.lock, and prints per test
the median of the pairwise t/s ratios A/B and, with --roofline in ARGS, each
binary's median fraction of its own weights' read (kvllm bench --roofline)
and the median pairwise ratio of those. The fraction is the fairer figure
across processes: on the shared VMs a process's memory can read at ~33 or
~50 GB/s depending on where it landed, for the life of the process.
Not a test: timing decides nothing here.
"""
import subprocess, json, sys, statistics, os
n = int(sys.argv[1]); A, B, model = sys.argv[2], sys.argv[3], sys.argv[4]; args = sys.argv[5:]
def run(b):
    out = subprocess.run(["flock", "/tmp/kvl-bench.lock", b, "bench", "-m", model, "-o", "json"] + args, capture_output=True, text=True).stdout
    return json.loads(out)
rows = []
for i in range(n):
    res = {}
    for k in ([0, 1] if i % 2 == 0 else [1, 0]):
        res[k] = run([A, B][k])
    rows.append(res)
    print(i, " ".join("%s: %.2f/%.2f t/s roof %s/%s" % (a["test"], a["median_ts"], b["median_ts"], a.get("roofline_frac"), b.get("roofline_frac")) for a, b in zip(res[0], res[1])), flush=True)
for j in range(len(rows[0][0])):
    r = sorted(x[0][j]["median_ts"] / x[1][j]["median_ts"] for x in rows)
    line = "%s: t/s A/B median %.3f [%.3f..%.3f] wins %d/%d" % (rows[0][0][j]["test"], statistics.median(r), r[0], r[-1], sum(v > 1 for v in r), n)
    if "roofline_frac" in rows[0][0][j]:
        fa = [x[0][j]["roofline_frac"] for x in rows]; fb = [x[1][j]["roofline_frac"] for x in rows]
        fr = sorted(a / b for a, b in zip(fa, fb))
        line += "; roofline frac A %.3f B %.3f (medians), A/B median %.3f, wins %d/%d" % (statistics.median(fa), statistics.median(fb), statistics.median(fr), sum(v > 1 for v in fr), n)
    print(line)
