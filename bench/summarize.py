#!/usr/bin/env python3
"""Summarize one bench/run_bench.sh run directory as a markdown table.

Reads <run>/<type>-<group>-<engine>-<pair>.json (kvllm: a JSON array from
`kvllm bench -o json`; llama.cpp: JSON lines from bench/llamacpp_bench.mjs)
and <run>/stream-*.json. For every model type and test it prints the median
tokens/s of each engine, the median of the pairwise ratios kvllm/llama.cpp
(pair i = the i-th kvllm run and the llama.cpp run right after it), and for
generation tests the decode roofline: bandwidth / bytes read per token, with
the bandwidth the median over the stream runs of the best of read, copy and
triad (the highest figure, so the roofline is never flattering).

The llama.cpp side is either bench/llama_gate.c (llama-bench's own loop:
its records carry "loop": "llama_decode (llama-bench)") or node-llama-cpp's
generation loop, which is slower than llama-bench (issue 5 measured 18.7 vs
21.3 tokens/s, a factor 1.14). The column "vs llama-bench" is then the
measured ratio itself, or for node-llama-cpp the tg ratio divided by that
factor, marked "est.".
"""
import glob
import json
import os
import re
import statistics
import sys

NLC_TG_FACTOR = 21.3 / 18.7


def load(path):
    with open(path) as f:
        text = f.read().strip()
    if not text:
        return []
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def vs_lb(r, is_tg, measured):
    if r is None:
        return "-"
    if measured:
        return f"{r:.3f}"
    return f"{r / NLC_TG_FACTOR:.3f} (est.)" if is_tg else "n/a (pp)"


def main():
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        print("usage: summarize.py RUN_DIR", file=sys.stderr)
        return 2
    run = sys.argv[1]
    # <type>-<group>-<engine>.json (interleaved: pair i = repetition i) or
    # <type>-<group>-<engine>-<pair>.json (one repetition per process)
    pat = re.compile(r"^(?P<type>[a-z0-9_]+)-(?P<group>[a-z]+)-(?P<engine>kvllm|llamacpp)"
                     r"(-(?P<pair>\d+))?\.json$")
    samples = {}  # (type, test) -> engine -> {pair: t/s}
    info = {}     # (type, test) -> kvllm record (bytes per token, isa)
    lb_loop = {}  # (type, test) -> True when the llama.cpp side is llama-bench's loop
    order = []
    for path in sorted(glob.glob(os.path.join(run, "*.json"))):
        m = pat.match(os.path.basename(path))
        if not m:
            continue
        for rec in load(path):
            key = (m["type"], rec["test"])
            if key not in samples:
                samples[key] = {"kvllm": {}, "llamacpp": {}}
                order.append(key)
            if m["pair"]:
                samples[key][m["engine"]][int(m["pair"])] = rec["median_ts"]
            else:
                for i, v in enumerate(rec["samples_ts"]):
                    samples[key][m["engine"]][i + 1] = v
            if m["engine"] == "kvllm":
                info[key] = rec
            else:
                lb_loop[key] = rec.get("loop", "").endswith("(llama-bench)")
    bws = []
    for path in sorted(glob.glob(os.path.join(run, "stream-*.json"))):
        s = load(path)[0]
        bws.append(s)
    bw = statistics.median(max(s["read_best_gbs"], s["copy_best_gbs"], s["triad_best_gbs"])
                           for s in bws) if bws else None

    def sort_key(k):
        t, test = k
        kind = 0 if test.startswith("pp") else 1 if test.startswith("tg") else 2
        b = re.match(r"b(\d+) ", test)
        return (t, kind, int(b[1]) if b else 1, "@" in test, test)

    print("| model | test | kvllm t/s | llama.cpp t/s | kvllm/llama.cpp (min-max) "
          "| vs llama-bench | MB read/token | roofline t/s | kvllm % of roofline |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key in sorted(order, key=sort_key):
        t, test = key
        kv, ll = samples[key]["kvllm"], samples[key]["llamacpp"]
        med_k = statistics.median(kv.values()) if kv else None
        med_l = statistics.median(ll.values()) if ll else None
        ratios = [kv[p] / ll[p] for p in kv if p in ll and ll[p] > 0]
        r = statistics.median(ratios) if ratios else None
        rec = info.get(key)
        is_tg = "tg" in test
        row = [f"TinyLlama-1.1B {t.upper()}", test,
               f"{med_k:.2f} (n={len(kv)})" if med_k else "-",
               f"{med_l:.2f} (n={len(ll)})" if med_l else "absent",
               f"{r:.3f} ({min(ratios):.2f}-{max(ratios):.2f})" if r else "-",
               vs_lb(r, is_tg, lb_loop.get(key, False))]
        if rec and is_tg and bw:
            bpt = rec["weight_bytes_per_token"] + rec["kv_bytes_per_token"]
            roof = bw * 1e9 / bpt
            row += [f"{bpt / 1e6:.1f}", f"{roof:.2f}", f"{100 * med_k / roof:.0f}%"]
        else:
            row += ["-", "-", "-"]
        print("| " + " | ".join(row) + " |")
    print()
    if bws:
        runs = ", ".join(f"read {s['read_best_gbs']:.1f} / copy {s['copy_best_gbs']:.1f} / "
                         f"triad {s['triad_best_gbs']:.1f}" for s in bws)
        print(f"Bandwidth (GB/s, best of each stream run, in order): {runs}; "
              f"roofline uses the median of the per-run maxima: {bw:.1f} GB/s.")
    isa = next((rec.get("isa") for rec in info.values()), "?")
    thr = next((rec.get("threads") for rec in info.values()), "?")
    print(f"kvllm: ISA {isa}, {thr} threads, KV paged, f16 (the auto format for 16-bit and 8-bit weights, as llama.cpp's default F16 cache). "
          f"t/s: median over the pairs; ratio: median of pairwise ratios.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
