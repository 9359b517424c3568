#!/usr/bin/env python3
"""bench/serve_load: a load generator for OpenAI-compatible completion servers
(`kvllm serve`, llama.cpp's `llama-server`), reporting in the vocabulary of
`vllm bench serve`.

The workload is not defined here: `kvllm bench serve ... --dump-workload FILE`
writes it (the engine benchmark's own definitions: random lengths,
--dataset length pairs such as a ShareGPT-like file, --shared-prefix, the
arrival times of its Poisson or gamma process), one JSON object per request:
{"arrival_s", "max_tokens", "prompt": [ids, BOS first], "text"}. This script
replays it against a server:

  open loop     (default) request i is sent at its arrival_s, whatever is
                still running (`--request-rate` of the dump: Poisson)
  --max-concurrency N   closed loop: N clients, each sends its next request
                when its previous one ended (arrival times ignored)
  --turns K     multi-turn: requests kK..kK+K-1 form conversation k; turn j
                is sent as text, the conversation so far (every earlier
                turn's text and the answer the server gave to it) followed
                by turn j's text; the next turn goes once the answer is in.
                The scheduling unit is then the conversation.

Prompts go as token ids (`--prompt ids`, default: exact lengths) or as the
dump's text (`--prompt text`). Every request streams (`stream: true`), with
`temperature` 0 and `ignore_eos` so that each runs to its max_tokens;
`--extra JSON` adds fields (llama-server: '{"cache_prompt": true}').

Measured per request, from the client side: TTFT (send to first text
chunk), ITL (gaps between text chunks), TPOT ((E2EL - TTFT) / (output
tokens - 1)), E2EL (send to the end of the stream); output tokens are the
server's usage.completion_tokens when it sends one, else the text chunks.

  bench/serve_load.py --url http://127.0.0.1:8080 --workload w.jsonl \
      [--max-concurrency 16] [--turns K] [--prompt ids|text] [--extra JSON] \
      [--model NAME] [--label NAME] [--json OUT]
"""
import argparse
import asyncio
import json
import sys
import time
import urllib.parse


def percentile(xs, p):
    """Linear interpolation between closest ranks (numpy's default)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


async def read_chunked_events(reader):
    """Yield the SSE `data:` payloads of a chunked (or close-delimited) body."""
    buf = b""
    while True:
        line = await reader.readline()
        if not line:
            return
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            await reader.readline()
            return
        buf += await reader.readexactly(size)
        await reader.readexactly(2)
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            for ln in ev.split(b"\n"):
                if ln.startswith(b"data:"):
                    yield ln[5:].strip()


class Result:
    __slots__ = ("ok", "error", "ttft", "e2el", "itl", "n_out", "n_in", "text", "t_send")

    def __init__(self):
        self.ok, self.error, self.ttft, self.e2el = False, "", 0.0, 0.0
        self.itl, self.n_out, self.n_in, self.text, self.t_send = [], 0, 0, "", 0.0


async def one_request(url, body, n_in):
    """POST body (streamed completion); returns a Result."""
    u = urllib.parse.urlsplit(url)
    res = Result()
    res.n_in = n_in
    data = json.dumps(body).encode()
    req = (
        "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        "Accept: text/event-stream\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
        % (u.path.rstrip("/") + "/v1/completions", u.netloc, len(data))
    ).encode() + data
    writer = None
    try:
        reader, writer = await asyncio.open_connection(u.hostname, u.port or 80)
        res.t_send = t0 = time.perf_counter()
        writer.write(req)
        await writer.drain()
        status = await reader.readline()
        headers = {}
        while True:
            h = await reader.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        code = int(status.split()[1]) if len(status.split()) > 1 else 0
        if code != 200:
            body_txt = await reader.read(4096)
            res.error = "HTTP %d %s" % (code, body_txt[:200].decode(errors="replace"))
            return res
        last, chunks, usage_out, text = None, 0, None, []
        if headers.get("transfer-encoding", "").lower() == "chunked":
            events = read_chunked_events(reader)
        else:
            events = read_plain_events(reader)
        async for payload in events:
            if payload == b"[DONE]":
                break
            j = json.loads(payload)
            if "error" in j:
                res.error = str(j["error"])[:200]
                return res
            if j.get("usage"):
                usage_out = j["usage"].get("completion_tokens")
            for ch in j.get("choices") or []:
                t = ch.get("text") or ""
                if not t:
                    continue
                now = time.perf_counter()
                if last is None:
                    res.ttft = now - t0
                else:
                    res.itl.append(now - last)
                last = now
                chunks += 1
                text.append(t)
        res.e2el = time.perf_counter() - t0
        res.n_out = usage_out if usage_out else chunks
        res.text = "".join(text)
        res.ok = chunks > 0
        if not res.ok:
            res.error = "no text in the stream"
    except Exception as e:  # a failed request is counted, not fatal
        res.error = "%s: %s" % (type(e).__name__, e)
    finally:
        if writer:
            writer.close()
    return res


async def read_plain_events(reader):
    buf = b""
    while True:
        d = await reader.read(65536)
        if not d:
            return
        buf += d
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            for ln in ev.split(b"\n"):
                if ln.startswith(b"data:"):
                    yield ln[5:].strip()


def request_body(args, w, prompt):
    b = {"prompt": prompt, "max_tokens": w["max_tokens"], "temperature": 0, "stream": True,
         "stream_options": {"include_usage": True}, "ignore_eos": True}
    if args.model:
        b["model"] = args.model
    b.update(args.extra)
    return b


async def run_unit(args, unit, results):
    """A unit: one request, or one conversation of several turns."""
    if len(unit) == 1 and args.prompt == "ids":
        w = unit[0]
        results.append(await one_request(args.url, request_body(args, w, w["prompt"]),
                                         len(w["prompt"])))
        return
    history = ""
    for w in unit:
        prompt = (history + " " + w["text"]).strip() if history else w["text"]
        r = await one_request(args.url, request_body(args, w, prompt), len(w["prompt"]))
        results.append(r)
        if not r.ok:
            return
        history = prompt + r.text


async def drive(args, units):
    results = []
    t0 = time.perf_counter()
    if args.max_concurrency:
        it = iter(units)

        async def client():
            for u in it:
                await run_unit(args, u, results)
        await asyncio.gather(*(client() for _ in range(args.max_concurrency)))
    else:
        async def at(u):
            delay = u[0]["arrival_s"] - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            await run_unit(args, u, results)
        await asyncio.gather(*(at(u) for u in units))
    return results, time.perf_counter() - t0


def summarize(results, dur):
    ok = [r for r in results if r.ok]
    ms = 1000.0
    tpot = [(r.e2el - r.ttft) / (r.n_out - 1) for r in ok if r.n_out > 1]
    itl = [x for r in ok for x in r.itl]
    out = sum(r.n_out for r in ok)
    s = {"completed": len(ok), "failed": len(results) - len(ok), "duration_s": dur,
         "total_input_tokens": sum(r.n_in for r in ok), "total_output_tokens": out,
         "request_throughput": len(ok) / dur, "output_throughput": out / dur,
         "total_token_throughput": (out + sum(r.n_in for r in ok)) / dur,
         "errors": sorted({r.error for r in results if not r.ok})[:5]}
    for name, xs in (("ttft", [r.ttft for r in ok]), ("tpot", tpot), ("itl", itl),
                     ("e2el", [r.e2el for r in ok])):
        s["mean_%s_ms" % name] = sum(xs) / len(xs) * ms if xs else float("nan")
        for p in (50, 90, 99):
            s["p%d_%s_ms" % (p, name)] = percentile(xs, p) * ms
        s["median_%s_ms" % name] = s["p50_%s_ms" % name]
    return s


def print_text(s, label):
    print("{s:{c}^50}".format(s=" Serving Benchmark Result %s" % label, c="="))
    rows = [("Successful requests:", s["completed"]), ("Failed requests:", s["failed"]),
            ("Benchmark duration (s):", "%.2f" % s["duration_s"]),
            ("Total input tokens:", s["total_input_tokens"]),
            ("Total generated tokens:", s["total_output_tokens"]),
            ("Request throughput (req/s):", "%.2f" % s["request_throughput"]),
            ("Output token throughput (tok/s):", "%.2f" % s["output_throughput"]),
            ("Total Token throughput (tok/s):", "%.2f" % s["total_token_throughput"])]
    for k, v in rows:
        print("{:<40} {:<10}".format(k, v))
    for name, title in (("ttft", "Time to First Token"), ("tpot", "Time per Output Token (excl. 1st token)"),
                        ("itl", "Inter-token Latency"), ("e2el", "End-to-end Latency")):
        print("{s:{c}^50}".format(s=title, c="-"))
        up = name.upper()
        print("{:<40} {:<10.2f}".format("Mean %s (ms):" % up, s["mean_%s_ms" % name]))
        print("{:<40} {:<10.2f}".format("Median %s (ms):" % up, s["median_%s_ms" % name]))
        for p in (90, 99):
            print("{:<40} {:<10.2f}".format("P%d %s (ms):" % (p, up), s["p%d_%s_ms" % (p, name)]))
    for e in s["errors"]:
        print("error:", e)
    print("=" * 50)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--workload", required=True, help="JSONL from kvllm bench serve --dump-workload")
    ap.add_argument("--max-concurrency", type=int, default=0)
    ap.add_argument("--turns", type=int, default=1)
    ap.add_argument("--prompt", choices=("ids", "text"), default="ids")
    ap.add_argument("--extra", type=json.loads, default={})
    ap.add_argument("--model", default="")
    ap.add_argument("--label", default="")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if args.turns < 1 or args.max_concurrency < 0:
        ap.error("--turns must be >= 1 and --max-concurrency >= 0")
    with open(args.workload) as f:
        ws = [json.loads(line) for line in f if line.strip()]
    if not ws:
        ap.error("--workload: no request in %s" % args.workload)
    units = [ws[i:i + args.turns] for i in range(0, len(ws), args.turns)]
    results, dur = asyncio.run(drive(args, units))
    s = summarize(results, dur)
    s["label"] = args.label
    print_text(s, args.label)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(s, f, indent=1)
    return 0 if s["completed"] else 1


if __name__ == "__main__":
    sys.exit(main())
