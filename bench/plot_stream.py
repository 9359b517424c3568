#!/usr/bin/env python3
"""Plot a `kvllm ppl --stream-log` file: decode rate (tokens/s over the last
256 tokens) and KV bytes held against the stream position, as one SVG with
two panels. No plotting library: the SVG is written by hand.

    bench/plot_stream.py LOG OUT.svg "title"
"""
import sys


def panel(xs, ys, x0, y0, w, h, label, fmt):
    """Polyline of (xs, ys) in the box (x0, y0, w, h), axis labels."""
    xmax = max(xs) or 1
    ymax = max(ys) * 1.1 or 1
    pts = " ".join(
        "%.1f,%.1f" % (x0 + w * x / xmax, y0 + h - h * y / ymax) for x, y in zip(xs, ys)
    )
    out = [
        '<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#888"/>' % (x0, y0, w, h),
        '<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="%s"/>' % pts,
        '<text x="%d" y="%d" font-size="12">%s</text>' % (x0, y0 - 6, label),
    ]
    for k in range(5):
        v = ymax * k / 4
        yy = y0 + h - h * k / 4
        out.append('<text x="%d" y="%.1f" font-size="10" text-anchor="end">%s</text>'
                   % (x0 - 4, yy + 3, fmt(v)))
    for k in range(5):
        v = xmax * k / 4
        out.append('<text x="%.1f" y="%d" font-size="10" text-anchor="middle">%d</text>'
                   % (x0 + w * k / 4, y0 + h + 14, v))
    return out


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: plot_stream.py LOG OUT.svg TITLE")
    rows = [list(map(float, ln.split())) for ln in open(sys.argv[1]) if ln.strip()]
    if not rows:
        sys.exit("plot_stream.py: %s has no lines" % sys.argv[1])
    pos = [r[0] for r in rows]
    rate = [r[1] for r in rows]
    kvb = [r[2] for r in rows]
    W, H = 720, 520
    svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="sans-serif">' % (W, H),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="20" font-size="14" text-anchor="middle">%s</text>'
           % (W // 2, sys.argv[3])]
    svg += panel(pos, rate, 80, 50, 600, 170, "decode tokens/s (last 256 tokens)",
                 lambda v: "%.0f" % v)
    svg += panel(pos, kvb, 80, 290, 600, 170, "KV bytes held (pool blocks in use)",
                 lambda v: "%.2f MiB" % (v / 1048576))
    svg.append('<text x="%d" y="%d" font-size="12" text-anchor="middle">stream position '
               '(tokens)</text>' % (W // 2, H - 20))
    svg.append("</svg>")
    open(sys.argv[2], "w").write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
