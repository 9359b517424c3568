#!/usr/bin/env python3
"""The cost model against the served engine over several rounds of bench/sim_serve_validate.sh
(bench/sim_serve_rounds.sh runs them): per rate and metric, the ratio predicted / measured of
each round, their median and range, and in how many rounds it is within 15%.

    sim_serve_rounds.py RATES ROUND_DIR [ROUND_DIR...]

Two predictions per round, as sim_serve_validate.sh makes them: A, from the calibration taken
right before the round's measured run, and A2, from the mean of the calibrations before and
after it. A round's files: serve_RATE.json, sim_calib_RATE.json (A), sim_calibB_RATE.json (A2),
calib_RATE.txt and calibpost_RATE.txt (the calibrations).

The machine is shared: its speed can move by 2x within minutes (another tenant). A (round, rate)
is "steady" when the calibrations before and after its measured run agree: each of their forward
passes (the #fwd_s line; the product points in files without it) within STEADY (10%). The last
column takes A2 over the steady rounds only: when the machine changed during a run, neither
calibration describes it, and no prediction made from them can be judged.
"""
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sim_serve_table import DIAGNOSTIC, METRICS, measured  # noqa: E402


STEADY = 0.10


def calib_points(path):
    """The file's forward passes (#fwd_s), or its product points in files without them."""
    fwd, pts = None, []
    for line in open(path):
        f = line.split()
        if f and f[0] == "#fwd_s":
            fwd = [float(a.split(":")[1]) for a in f[1:]]
        elif f and f[0].startswith("mm_s_per_byte_"):
            pts.append(float(f[1]))
    return fwd or pts


def drift(d, r):
    """How far the calibrations before and after the measured run disagree: the largest
    ratio over the points, less 1 (0 = same speed). Decode (1 token) is bound by memory,
    prefill (64) by compute; on this machine either can move alone."""
    a = calib_points(os.path.join(d, "calib_%s.txt" % r))
    b = calib_points(os.path.join(d, "calibpost_%s.txt" % r))
    return max(max(x / y, y / x) for x, y in zip(a, b)) - 1


def main():
    rates, dirs = sys.argv[1].split(), sys.argv[2:]
    print("| rate | metric | measured: median (range) | A / measured: median (range), "
          "rounds within 15% | A2 / measured: median (range), rounds within 15% | "
          "A2 / measured, steady rounds: median (range), n |")
    print("|---|---|---|---|---|---|")
    tot = {"A": 0, "A2": 0, "steady": 0}
    steady_cells = 0
    drifts = []
    cells = 0
    for r in rates:
        rows = []
        for d in dirs:
            m, _ = measured(json.load(open(os.path.join(d, "serve_%s.json" % r))))
            a = json.load(open(os.path.join(d, "sim_calib_%s.json" % r)))["results"][0]
            a2 = json.load(open(os.path.join(d, "sim_calibB_%s.json" % r)))["results"][0]
            dr = drift(d, r)
            drifts.append("%s/%s %.0f%%" % ("/".join(d.rstrip("/").split("/")[-2:]), r, 100 * dr))
            rows.append((m, a, a2, dr <= STEADY))
        for name, k in METRICS + DIAGNOSTIC:
            if any(k not in x[1] or k not in x[2] for x in rows):
                continue  # a sim from before the key
            meas = [x[0][k] for x in rows]
            line = "| %s | %s | %.3f (%.3f-%.3f) |" % (r, name, statistics.median(meas),
                                                      min(meas), max(meas))
            for col, j in (("A", 1), ("A2", 2)):
                q = [x[j][k] / x[0][k] for x in rows]
                within = sum(abs(v - 1) <= 0.15 for v in q)
                med = statistics.median(q)
                if (name, k) in METRICS:
                    tot[col] += abs(med - 1) <= 0.15
                line += " %.2f (%.2f-%.2f), %d of %d |" % (med, min(q), max(q), within, len(q))
            q = [x[2][k] / x[0][k] for x in rows if x[3]]
            if q:
                med = statistics.median(q)
                line += " %.2f (%.2f-%.2f), %d |" % (med, min(q), max(q), len(q))
                if (name, k) in METRICS:
                    tot["steady"] += abs(med - 1) <= 0.15
                    steady_cells += 1
            else:
                line += " no steady round |"
            cells += (name, k) in METRICS
            print(line.replace("| %s |" % name, "| %s (diagnostic) |" % name, 1)
                  if (name, k) in DIAGNOSTIC else line)
    print()
    print("Cells whose median ratio is within 15%%: A %d of %d, A2 %d of %d (%d rounds); "
          "A2 over the steady rounds %d of %d (cells with one)."
          % (tot["A"], cells, tot["A2"], cells, len(dirs), tot["steady"], steady_cells))
    print()
    print("Drift between the calibrations before and after each run (steady: <= %.0f%%): %s."
          % (100 * STEADY, ", ".join(drifts)))


if __name__ == "__main__":
    main()
