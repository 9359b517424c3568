#!/usr/bin/env python3
"""The cost model against the served engine step by step, by batch composition: the engine's
`kvllm bench serve --steps` log and the sim's `kvllm sim --steps` logs (one per calibration) of
the same requests (bench/sim_serve_validate.sh writes all three).

    sim_steps_compare.py MEASURED_STEPS SIM_STEPS [SIM_STEPS...]

Both logs start with: end_s step_s n tokens prefill decode. Steps are grouped by what they ran:
prefill tokens (0 for pure decode) and decode tokens. Per group: steps and mean seconds,
measured and per sim log, and sim / measured. Groups need not hold the same number of steps
on both sides (the sim's schedule drifts from the engine's when their step times differ); the
means still compare like with like. Groups with fewer than 2 measured steps are merged into
'other'.
"""
import collections
import sys


def load(path):
    g = collections.defaultdict(list)
    for line in open(path):
        f = line.split()
        if not f or f[0].startswith("#"):
            continue
        g[(int(f[4]), int(f[5]))].append(float(f[1]))
    return g


meas = load(sys.argv[1])
sims = [load(p) for p in sys.argv[2:]]
hdr = "| prefill | decode | meas: steps, mean s |" + "".join(
    " sim%d: steps, mean s (ratio) |" % (i + 1) for i in range(len(sims)))
print(hdr)
print("|---:|---:|---|" + "---|" * len(sims))


def mean(v):
    return sum(v) / len(v) if v else float("nan")


for key in sorted(meas, key=lambda k: (k[0] > 0, k[0], k[1])):
    m = meas[key]
    if len(m) < 2:
        continue
    cells = []
    for s in sims:
        v = s.get(key, [])
        cells.append("%d, %.4f (%.2f)" % (len(v), mean(v), mean(v) / mean(m)) if v else "0, -")
    print("| %d | %d | %d, %.4f |" % (key[0], key[1], len(m), mean(m)) + "".join(
        " %s |" % c for c in cells))
rest = [x for k, v in meas.items() if len(v) < 2 for x in v]
if rest:
    print("| other | | %d, %.4f |" % (len(rest), mean(rest)) + " |" * len(sims))
