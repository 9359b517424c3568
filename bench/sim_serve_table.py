#!/usr/bin/env python3
"""One table row of the cost model against the served engine (bench/sim_serve_validate.sh):
the engine's `kvllm bench serve -o json` and the sim's `--json` for
two calibrations on the same requests.

    sim_serve_table.py SERVE.json SIM_A.json SIM_B.json RATE LOAD

Cells: measured / A / B (A / measured, B / measured). Mean step: the mean wall time of the engine's steps
that ran tokens (its per-step buckets: decode steps by batch size and mixed steps), not
duration / steps (that counts the idle time between arrivals). TTFT and TPOT p50 from the
scheduled arrival, as both define them. bench/sim_serve_rounds.py imports measured() and
METRICS.
"""
import json
import sys

# (name, the sim's key): the three, then a diagnostic (the mean TTFT moves smoothly
# where the p50 sits between the lone and the batched prefills and jumps with one request)
METRICS = (("mean step", "mean_step_s"), ("TTFT p50", "ttft_p50"), ("TPOT p50", "tpot_p50"))
DIAGNOSTIC = (("TTFT mean", "ttft_mean"),)


def measured(m):
    """The engine's figures under the sim's keys, and its steps that ran tokens."""
    steps = sum(k["steps"] for k in m["batch_tpot"]) + m["mixed_steps"]
    busy = sum(k["steps"] * k["mean_tpot_ms"] for k in m["batch_tpot"]) / 1e3
    busy += m["mixed_steps"] * m["mixed_step_mean_ms"] / 1e3
    return {"mean_step_s": busy / steps, "ttft_p50": m["p50_ttft_ms"] / 1e3,
            "tpot_p50": m["p50_tpot_ms"] / 1e3, "ttft_mean": m["mean_ttft_ms"] / 1e3}, steps


def main():
    m, steps = measured(json.load(open(sys.argv[1])))
    a, b = (json.load(open(f))["results"][0] for f in sys.argv[2:4])

    def cell(k):
        x = m[k]
        r = (lambda y: y / x if x else float("nan"))
        return "%.3f / %.3f / %.3f (%.2f, %.2f)" % (x, a[k], b[k], r(a[k]), r(b[k]))

    print("| %s | %s | %d / %d / %d | %s |" % (sys.argv[4], sys.argv[5], steps, a["steps"],
          b["steps"], " | ".join(cell(k) for _, k in METRICS)))


if __name__ == "__main__":
    main()
