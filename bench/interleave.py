#!/usr/bin/env python3
"""Run two gated benchmark processes so that their timed repetitions alternate.

    interleave.py OUT_A OUT_B -- CMD_A... -- CMD_B...

Both commands must speak the --gate protocol of `kvllm bench` and
bench/llamacpp_bench.mjs: before each timed repetition they print
"ready TEST REP" on stderr and wait for a line on stdin; after it they print
"done TEST REP T/S". Each process loads its model and fills its KV to the
test's depth only once; from then on only one of them runs at a time:

    A: load, prefill -> ready        (B not started yet)
    B: load, prefill -> ready        (A waits)
    A: rep 1 -> done, next prefill -> ready    (B waits)
    B: rep 1 -> done, ...            (A waits)
    ...

so the k-th repetitions of A and B are measured back to back (a pair). Both
must run the same tests with the same -r. stdout of each goes to OUT_A /
OUT_B; other stderr lines pass through. Exit status: 0 when both exit 0,
else 1.
"""
import subprocess
import sys


def start(cmd, out_path):
    out = open(out_path, "w")
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE,
                         text=True, bufsize=1)
    p.out_file = out
    return p


def next_event(p, tag):
    """Read stderr until a protocol line; return ("ready"|"done", fields) or ("exit", None)."""
    for line in p.stderr:
        parts = line.rstrip("\n").split(" ")
        if parts[0] in ("ready", "done"):
            if parts[0] == "done":
                sys.stderr.write(f"  {tag}: {' '.join(parts[1:])} t/s\n")
            return parts[0], parts[1:]
        sys.stderr.write(f"  {tag}: {line}")
    return "exit", None


def main(argv):
    if len(argv) < 6 or argv[3] != "--" or "--" not in argv[4:]:
        print(__doc__, file=sys.stderr)
        return 2
    out_a, out_b = argv[1], argv[2]
    rest = argv[4:]
    k = rest.index("--")
    cmd_a, cmd_b = rest[:k], rest[k + 1:]
    if not cmd_a or not cmd_b:
        print("interleave.py: both commands are required", file=sys.stderr)
        return 2
    procs = []
    state = {}
    for tag, cmd, out in (("A", cmd_a, out_a), ("B", cmd_b, out_b)):
        p = start(cmd, out)
        procs.append((tag, p))
        state[tag] = next_event(p, tag)[0]  # wait until it is ready (or gone)
    while any(state[t] == "ready" for t, _ in procs):
        for tag, p in procs:
            if state[tag] != "ready":
                continue
            p.stdin.write("go\n")
            p.stdin.flush()
            ev = next_event(p, tag)[0]
            if ev == "done":
                ev = next_event(p, tag)[0]  # next ready, or exit after the last test
            state[tag] = ev
    rc = 0
    for tag, p in procs:
        try:
            p.stdin.close()
        except BrokenPipeError:
            pass
        for line in p.stderr:
            sys.stderr.write(f"  {tag}: {line}")
        if p.wait() != 0:
            sys.stderr.write(f"interleave.py: {tag} exited with {p.returncode}\n")
            rc = 1
        p.out_file.close()
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
