#!/usr/bin/env python3
"""The cost model against the served engine over several rounds of bench/sim_serve_validate.sh
(bench/sim_serve_rounds.sh runs them): per rate and metric, the ratio predicted / measured of
each round, their median and range, and in how many rounds it is within 15%.

    sim_serve_rounds.py RATES ROUND_DIR [ROUND_DIR...]

Two predictions per round, as sim_serve_validate.sh makes them: A, from the calibration taken
right before the round's measured run, and A2, from the mean of the calibrations before and
after it. A round's files: serve_RATE.json, sim_calib_RATE.json (A), sim_calibB_RATE.json (A2).
"""
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sim_serve_table import DIAGNOSTIC, METRICS, measured  # noqa: E402


def main():
    rates, dirs = sys.argv[1].split(), sys.argv[2:]
    print("| rate | metric | measured: median (range) | A / measured: median (range), "
          "rounds within 15% | A2 / measured: median (range), rounds within 15% |")
    print("|---|---|---|---|---|")
    tot = {"A": 0, "A2": 0}
    cells = 0
    for r in rates:
        rows = []
        for d in dirs:
            m, _ = measured(json.load(open(os.path.join(d, "serve_%s.json" % r))))
            a = json.load(open(os.path.join(d, "sim_calib_%s.json" % r)))["results"][0]
            a2 = json.load(open(os.path.join(d, "sim_calibB_%s.json" % r)))["results"][0]
            rows.append((m, a, a2))
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
            cells += (name, k) in METRICS
            print(line.replace("| %s |" % name, "| %s (diagnostic) |" % name, 1)
                  if (name, k) in DIAGNOSTIC else line)
    print()
    print("Cells whose median ratio is within 15%%: A %d of %d, A2 %d of %d (%d rounds)."
          % (tot["A"], cells, tot["A2"], cells, len(dirs)))


if __name__ == "__main__":
    main()
