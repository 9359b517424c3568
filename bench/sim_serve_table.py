#!/usr/bin/env python3
"""One table row of the cost model against the served engine (bench/sim_serve_validate.sh,
bench/sim_serve_refit.sh): the engine's `kvllm bench serve -o json` and the sim's `--json` for
calibrations A and B on the same requests.

    sim_serve_table.py SERVE.json SIM_A.json SIM_B.json RATE LOAD

Cells: measured / A / B (A / measured, B / measured). Mean step: the mean wall time of the engine's steps
that ran tokens (its per-step buckets: decode steps by batch size and mixed steps), not
duration / steps (that counts the idle time between arrivals). TTFT and TPOT p50 from the
scheduled arrival, as both define them.
"""
import json
import sys

m = json.load(open(sys.argv[1]))
a, b = (json.load(open(f))["results"][0] for f in sys.argv[2:4])
steps = sum(k["steps"] for k in m["batch_tpot"]) + m["mixed_steps"]
busy = sum(k["steps"] * k["mean_tpot_ms"] for k in m["batch_tpot"]) / 1e3
busy += m["mixed_steps"] * m["mixed_step_mean_ms"] / 1e3
ms = busy / steps
tt, tp = m["p50_ttft_ms"] / 1e3, m["p50_tpot_ms"] / 1e3


def cell(x, k):
    r = (lambda y: y / x if x else float("nan"))
    return "%.3f / %.3f / %.3f (%.2f, %.2f)" % (x, a[k], b[k], r(a[k]), r(b[k]))


print("| %s | %s | %d / %d / %d | %s | %s | %s |" % (sys.argv[4], sys.argv[5], steps, a["steps"],
      b["steps"], cell(ms, "mean_step_s"), cell(tt, "ttft_p50"), cell(tp, "tpot_p50")))
