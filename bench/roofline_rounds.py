#!/usr/bin/env python3
"""Decode against the memory roofline, measured round by round.

    roofline_rounds.py STREAM -- KVLLM bench -m MODEL -p 0 -n N -r R -o json --gate [...]

Memory bandwidth on the shared machines moves between ~30 and ~55 GB/s from
minute to minute, so a roofline taken from a stream run minutes apart from
the decode means little. Here every timed repetition of `kvllm bench` (held
at its --gate) is preceded by a stream read run (STREAM: bench/out/stream,
2 threads) while kvllm waits idle, and the repetition's bytes read per
second (t/s x the bytes one token reads, from kvllm's JSON) is divided by
the bandwidth of its own round. Each round measures the read twice: over
2 MiB transparent huge pages (how kvllm holds its weights with --load auto,
the machine's best) and over 4 KiB pages (a file mapping, as llama.cpp's
default mmap); the percentage against each is printed. The 2 MiB read is
taken again right after the repetition: the bandwidth switches between
levels (~30-35 and ~50-60 GB/s on the 2-vCPU VMs) within seconds, and a
round whose before and after reads differ by more than 10% straddled a
switch, so it is not known which level the decode ran at. Prints one row
per round, the medians over all rounds (against the read before), and the
medians over the steady rounds (against the mean of the reads before and
after). With `kvllm bench --roofline` the last two columns compare each
repetition with kvllm's own read of its weights' memory, taken right after
the gate (so after this script's reads).
Not a test: timing decides nothing here.
"""
import json
import statistics
import subprocess
import sys


def read_bw(stream, pages):
    out = subprocess.run([stream, "--threads", "2", "--mib", "512", "--reps", "3", "--json",
                          "--pages", pages], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["read_best_gbs"]


def next_event(p):
    for line in p.stderr:
        f = line.split()
        if f and f[0] in ("ready", "done"):
            return f
        sys.stderr.write(line)
    return None


def main(argv):
    if len(argv) < 4 or argv[2] != "--":
        sys.exit(__doc__)
    stream, cmd = argv[1], argv[3:]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, bufsize=1)
    rounds = []
    ev = next_event(p)
    while ev and ev[0] == "ready":
        order = ("huge", "4k") if len(rounds) % 2 == 0 else ("4k", "huge")
        bw = {pg: read_bw(stream, pg) for pg in order}
        p.stdin.write("go\n")
        p.stdin.flush()
        ev = next_event(p)
        if not ev or ev[0] != "done":
            break
        ts = float(ev[3])
        ev = next_event(p)  # kvllm idles at its next gate (or is exiting) meanwhile
        bw["after"] = read_bw(stream, "huge")
        rounds.append((bw, ts))
    out, _ = p.communicate()
    if p.returncode != 0 or not rounds:
        sys.exit(f"roofline_rounds: kvllm bench failed (exit {p.returncode})")
    rec = json.loads(out)[-1]
    bpt = rec["weight_bytes_per_token"] + rec["kv_bytes_per_token"]
    own = rec.get("weights_read_gbs")  # kvllm bench --roofline: its weights' own read per rep
    print(f"model {rec['model']} {rec['model_type']}, test {rec['test']}, "
          f"{bpt / 1e6:.1f} MB read per token, {rec['threads']} threads")
    print("| round | read GB/s, 2 MiB pages | read after | read GB/s, 4 KiB pages | decode t/s "
          "| decode GB/s | % of 2 MiB read | % of 4 KiB read | steady | % of 2 MiB read, before/after mean "
          "| weights' own read GB/s | % of own read |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    fh, f4, fs, steady = [], [], [], []
    for i, (bw, ts) in enumerate(rounds, 1):
        gbs = ts * bpt / 1e9
        fh.append(gbs / bw["huge"])
        f4.append(gbs / bw["4k"])
        st = abs(bw["after"] / bw["huge"] - 1) <= 0.10
        mean = (bw["huge"] + bw["after"]) / 2
        if st:
            fs.append(gbs / mean)
            steady.append((bw, ts))
        print(f"| {i} | {bw['huge']:.1f} | {bw['after']:.1f} | {bw['4k']:.1f} | {ts:.2f} | {gbs:.1f} | "
              f"{100 * fh[-1]:.0f}% | {100 * f4[-1]:.0f}% | {'yes' if st else 'no'} | "
              f"{100 * gbs / mean:.0f}% | " +
              (f"{own[i - 1]:.1f} | {100 * gbs / own[i - 1]:.0f}% |" if own else "- | - |"))
    med = statistics.median
    print(f"| median, all {len(rounds)} | {med(b['huge'] for b, _ in rounds):.1f} | "
          f"{med(b['after'] for b, _ in rounds):.1f} | {med(b['4k'] for b, _ in rounds):.1f} | "
          f"{med(t for _, t in rounds):.2f} | {med(t for _, t in rounds) * bpt / 1e9:.1f} | "
          f"{100 * med(fh):.0f}% | {100 * med(f4):.0f}% | | | " +
          (f"{med(own):.1f} | {100 * med(t * bpt / 1e9 / o for (_, t), o in zip(rounds, own)):.0f}% |"
           if own else "- | - |"))
    if steady:
        print(f"| median, {len(steady)} steady | {med(b['huge'] for b, _ in steady):.1f} | "
              f"{med(b['after'] for b, _ in steady):.1f} | {med(b['4k'] for b, _ in steady):.1f} | "
              f"{med(t for _, t in steady):.2f} | {med(t for _, t in steady) * bpt / 1e9:.1f} | | | | "
              f"{100 * med(fs):.0f}% | | |")
    else:
        print("no steady round (every round's reads before and after differ by more than 10%)")


if __name__ == "__main__":
    main(sys.argv)
