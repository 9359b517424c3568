#!/usr/bin/env bash
# test_plan_cli: `kvllm plan` end to end. Exit codes and messages for bad
# flags; the published numbers in the text output; --json parses and agrees
# with the text; --svg is well-formed XML and its labels carry the same
# numbers as the text tables; -m reads a GGUF's shape.
set -u
BIN=${KVL_BIN:?KVL_BIN must point at kvllm}
SHARED=${KVL_SHARED:-$(dirname "$0")/../../shared}
TMP=${KVL_TMP:-/tmp}/test_plan_cli.$$
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
fails=0
checks=0
ok() { checks=$((checks + 1)); }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*" >&2; }

# expect CODE NEEDLE -- ARGS: exit code and a substring of stdout+stderr
expect() {
    local code=$1 needle=$2
    shift 3
    local out rc
    out=$("$BIN" plan "$@" 2>&1)
    rc=$?
    if [ "$rc" != "$code" ]; then
        bad "plan $* exited $rc, wanted $code: $out"
    elif [ -n "$needle" ] && ! grep -qF -- "$needle" <<<"$out"; then
        bad "plan $*: output lacks '$needle': $out"
    else
        ok
    fi
}

expect 0 "usage: kvllm plan" -- --help
expect 0 "Llama-3.1-405B" -- --list-models
expect 0 "85,520,809,984" -- --list-devices
expect 2 "--frobnicate" -- --model Llama-3-8B --device H100-80GB --frobnicate
expect 2 "exactly one of --model" -- --device H100-80GB
expect 2 "no memory given" -- --model Llama-3-8B
expect 2 "unknown model 'Llama-9'" -- --model Llama-9 --device H100-80GB
expect 2 "unknown device 'TPU'" -- --model Llama-3-8B --device TPU
expect 2 "--block-size: 0 is outside [1, 4096]" -- --model Llama-3-8B --device H100-80GB --block-size 0
expect 2 "--block-size: 'x' is not an integer" -- --model Llama-3-8B --device H100-80GB --block-size x
expect 2 "--kv-type: unknown KV format 'int3'" -- --model Llama-3-8B --device H100-80GB --kv-type int3
expect 2 "--kv-type-v: unknown KV format" -- --model Llama-3-8B --device H100-80GB --kv-type-v q5
expect 2 "--weights: unknown weight type 'q4_1'" -- --model Llama-3-8B --device H100-80GB --weights q4_1
expect 2 "q4_k, q5_k, q6_k, q4_k_m, q5_k_m)" -- --model Llama-3-8B --device H100-80GB --weights q4_1
# K-quant weights and llama.cpp's mixes (test_plan derives the numbers)
expect 0 "weights    q4_k_m: 8,030,261,248 params -> 4,912,898,048 B (4.58 GiB)" -- --model Llama-3-8B --device L4 --weights q4_k_m
expect 0 "weights    q6_k: 8,030,261,248 params -> 6,588,170,240 B" -- --model Llama-3-8B --device L4 --weights Q6_K
expect 2 "--reserve: 150 is outside [0, 99]" -- --model Llama-3-8B --device H100-80GB --reserve 150%
expect 2 "reserve" -- --model Llama-3-8B --device L4-24GB --reserve 30GiB
expect 2 "--mem" -- --model Llama-3-8B --mem 0
expect 2 "--mem: unknown unit" -- --model Llama-3-8B --mem 24parsecs
expect 2 "--devices: 0 is outside" -- --model Llama-3-8B --device H100-80GB --devices 0
expect 2 "--devices 3" -- --model Llama-3-8B --device H100-80GB,A100-80GB --devices 3
expect 2 "--users needs a value" -- --model Llama-3-8B --device H100-80GB --users
expect 2 "--context: -5 is outside" -- --model Llama-3-8B --device H100-80GB --context -5
expect 2 "--context: 100000000 is outside [1, 16777216]" -- --model Llama-3-8B --device H100-80GB --context 100000000
expect 1 "-m: $TMP/none.gguf" -- -m "$TMP/none.gguf" --device H100-80GB

# published facts in the text output
expect 0 "2,097,152 B / 16 = 131072.00 B  (= 2 x 32 x 8 x 128 x 2 B)" -- --model Llama-3-8B --device H100-80GB
expect 0 "= 524288.00 B" -- --model Llama-2-7B --mem 80GiB
expect 0 "KV capacity 29,043 blocks x 16 = 464,688 tokens" -- --model Llama-3-8B --device H100-80GB
# Llama-3-70B, one sequence of 131,072 tokens: 40.00 GiB of KV
expect 0 "KV 1 x 8,192 blocks x 5,242,880 B = 42,949,672,960 B (40.00 GiB)" -- \
    --model Llama-3-70B --mem 1TiB --users 1 --context 131072
expect 0 "2 x A100-80GB" -- --model Llama-3-8B --device A100-80GB --devices 2
expect 0 "2 devices" -- --model Llama-3-8B --device A100-80GB,H100-80GB
expect 0 "16 tok x 128 dims x 1 B + 16 tok x 2 B scale/zero = 2080 B" -- \
    --model Llama-3-8B --device H100-80GB --kv-type int8
expect 0 "32 tok x 128 dims x 4/8 B + 128 dims x 3 B scale/zero = 2432 B" -- --model Llama-3-8B --device H100-80GB --kv-type-k int4

# the reverse question
out=$("$BIN" plan --model Llama-3-8B --device H100-80GB --users 64 --context 8192 2>&1)
for needle in "does NOT fit (short by 7.28 GiB)" "--kv-type-k int8 --kv-type-v int8" \
    "fewer users:  56 users" "shorter:      7,248 tokens for 64 users" "more devices: 2 x"; do
    if grep -qF -- "$needle" <<<"$out"; then ok; else bad "reverse: lacks '$needle': $out"; fi
done
expect 0 ": fits" -- --model Llama-3-8B --device H100-80GB --users 16 --context 8192
# "does NOT fit" has its own exit status (3), in text and JSON, and when the
# weights alone exceed the memory
expect 3 "does NOT fit (short by 7.28 GiB)" -- --model Llama-3-8B --device H100-80GB --users 64 --context 8192
expect 3 '"fits": false' -- --model Llama-3-8B --device H100-80GB --users 64 --context 8192 --json
expect 0 '"fits": true' -- --model Llama-3-8B --device H100-80GB --users 16 --context 8192 --json
expect 3 "KV budget  0: weights" -- --model Llama-3-70B --device L4
expect 0 "KV capacity" -- --model Llama-3-8B --device H100-SXM-80GB
expect 0 "memory     1 x L40S-48GB" -- --model Llama-3-8B --device l40s
expect 0 "OPT-13B" -- --list-models
expect 0 "3350" -- --list-devices

# contexts past the model's own (8,192 for Llama-3-8B) are marked in the
# table, the summary line and the JSON; those within it are not
out=$("$BIN" plan --model Llama-3-8B --device H100-80GB --context 16384 2>&1)
if grep -qE "^ +16,384 .*\(over the model's context\)$" <<<"$out" &&
    grep -qE "^ +8,192 +[0-9,]+ +[0-9.]+ +[0-9,]+$" <<<"$out" &&
    grep -qF "at context 16,384: 28 concurrent sequences (1,024 blocks each)  (over the model's context)" <<<"$out"; then
    ok
else
    bad "--context 16384: rows past 8,192 not marked (or 8,192 marked): $out"
fi
expect 0 '"context": 16384, "over_model_context": true' -- --model Llama-3-8B --device H100-80GB --context 16384 --json

# the largest accepted values keep every table's columns aligned
"$BIN" plan --model Llama-3.1-405B --mem 1024TiB --kv-type f32 --block-size 1 \
    --context 16777216 --users 1000 >"$TMP/big.txt" 2>&1
rc=$?
if [ "$rc" = 3 ]; then ok; else bad "big plan exited $rc, wanted 3"; fi
if command -v python3 >/dev/null; then
    if python3 - "$TMP/big.txt" <<'PY'; then ok; else bad "big plan: columns misaligned: $(cat "$TMP/big.txt")"; fi
import sys
txt = open(sys.argv[1]).read()
# each table: its header, then rows up to a blank line. Every row, its
# "(over the model's context)" note removed, is as long as the header, and
# each right-aligned cell ends in the column where its header cell ends
tables = [["context", "blocks/seq", "KV/seq MiB", "max seqs"],
          ["users", "longest context"],
          ["B/token", "KV needed", "total", "fits", "max users", "longest ctx"]]
fails = 0
for cells in tables:
    lines = txt.splitlines()
    hi = [i for i, l in enumerate(lines)
          if all(c in l for c in cells) and l.index(cells[0]) < l.index(cells[-1])][0]
    block = []
    for l in lines[hi:]:
        if not l:
            break
        block.append(l)
    rows = [r.replace("  (over the model's context)", "") for r in block if not r.startswith("(*")]
    h = rows[0]
    ends, pos = [], 0
    for c in cells:
        pos = h.index(c, pos) + len(c)
        ends.append(pos)
    for r in rows[1:]:
        if len(r) != len(h):
            print("length", len(r), "vs header", len(h), repr(r), repr(h), file=sys.stderr)
            fails += 1
        for e in ends:
            if e > len(r) or r[e - 1] == " " or (e < len(r) and r[e] != " "):
                print("cell ending at", e, "misaligned:", repr(r), "header", repr(h), file=sys.stderr)
                fails += 1
    if len(rows) < 3:
        print("table", cells, "has", len(rows) - 1, "rows", file=sys.stderr)
        fails += 1
sys.exit(1 if fails else 0)
PY
fi

# GGUF input
GGUF=$SHARED/models/stories260K.gguf
if [ -f "$GGUF" ]; then
    expect 0 "10,240 B / 16 = 640.00 B" -- -m "$GGUF" --mem 1GiB
    expect 0 "as stored in the file: 1,171,200 B" -- -m "$GGUF" --mem 1GiB
else
    bad "missing $GGUF"
fi

# --json agrees with the text; --svg is well-formed and agrees too
args=(--model Llama-3-8B --device H100-80GB --users 64 --context 8192)
# (64 x 8,192 does not fit: exit status 3)
"$BIN" plan "${args[@]}" >"$TMP/plan.txt" 2>&1
[ $? = 3 ] || bad "text run failed"
"$BIN" plan "${args[@]}" --json >"$TMP/plan.json" 2>&1
[ $? = 3 ] || bad "json run failed"
"$BIN" plan "${args[@]}" --svg "$TMP/plan.svg" >/dev/null 2>&1
[ $? = 3 ] || bad "svg run failed"
if command -v xmllint >/dev/null; then
    if xmllint --noout "$TMP/plan.svg"; then ok; else bad "xmllint rejects the SVG"; fi
fi
if command -v python3 >/dev/null; then
    if python3 - "$TMP/plan.txt" "$TMP/plan.json" "$TMP/plan.svg" <<'EOF'; then ok; else bad "json/svg vs text"; fi
import json, re, sys, xml.etree.ElementTree as ET
txt = open(sys.argv[1]).read()
js = json.load(open(sys.argv[2]))
svg = ET.parse(sys.argv[3]).getroot()   # raises on malformed XML
labels = [t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text")]
fails = []
def want(c, msg):
    if not c: fails.append(msg)
num = lambda s: int(s.replace(",", ""))
# JSON numbers
want(js["kv"]["bytes_per_token"] == 131072, "json bytes_per_token")
want(js["kv"]["block_bytes"] == 2097152, "json block_bytes")
cap = num(re.search(r"KV capacity [\d,]+ blocks x 16 = ([\d,]+) tokens", txt).group(1))
want(js["capacity"]["tokens"] == cap, "json capacity vs text")
want(js["need"]["fits"] is False, "json need.fits")
want(js["need"]["suggested_format"] == {"k": "int8", "v": "int8"}, "json suggestion")
want(js["need"]["kv_bytes"] == 64 << 30, "json need.kv_bytes")
# text table: users -> longest context
table = dict((num(u), num(c)) for u, c in re.findall(r"^\s+([\d,]+)\s+([\d,]+)(?:  \(over.*)?$",
                                                     txt.split("longest context", 1)[1].split("need", 1)[0], re.M))
want(table and table == {d["users"]: d["tokens"] for d in js["longest_context"]}, "json vs text users table")
# SVG legend carries the same numbers
legend = {int(m.group(1)): num(m.group(2)) for l in labels
          for m in [re.match(r"batch (\d+): longest context ([\d,]+) tokens", l)] if m}
want(legend == table, "svg legend %s vs text %s" % (legend, table))
# SVG subtitle and bar labels
want(any(("KV capacity %s tokens" % format(cap, ",")) in l for l in labels), "svg capacity")
bar = re.search(r"stacked bar: weights ([\d.]+ GiB), (.*) ([\d.]+ GiB), reserve ([\d.]+ GiB)", txt)
for v in (bar.group(1), bar.group(3), bar.group(4)):
    want(v in labels, "svg bar label %s" % v)
want(bar.group(2) in labels, "svg bar KV label")
mem = re.search(r"memory .* \(([\d.]+ GiB)\)", txt).group(1)
want(("device memory " + mem) in labels, "svg device line")
for f in fails: print("FAIL:", f, file=sys.stderr)
sys.exit(1 if fails else 0)
EOF
else
    echo "test_plan_cli: python3 not found; JSON and SVG label checks skipped" >&2
fi

# SVG geometry: the legend box is crossed by no line of the chart (curves,
# device / usable / weights lines, the bar), whatever the device and batch
# sizes (a small device puts its memory line near the top, where the legend
# used to be; five batches and steep curves fill the top left); contexts
# past the model's are shaded exactly when the x axis goes past it.
svg_geom() { # NAME SHADED(0/1) ARGS...
    local name=$1 shaded=$2
    shift 2
    "$BIN" plan "$@" --svg "$TMP/$name.svg" >/dev/null 2>&1
    local rc=$?
    if [ "$rc" != 0 ] && [ "$rc" != 3 ]; then
        bad "svg $name: plan exited $rc"
        return
    fi
    command -v python3 >/dev/null || return
    if python3 - "$TMP/$name.svg" "$shaded" <<'PY'; then ok; else bad "svg geometry $name"; fi
import sys, xml.etree.ElementTree as ET
NS = "{http://www.w3.org/2000/svg}"
root = ET.parse(sys.argv[1]).getroot()
legend = [g for g in root.iter(NS + "g") if g.get("id") == "legend"]
if len(legend) != 1:
    sys.exit("no legend group")
box = legend[0].find(NS + "rect")
bx0, by0 = float(box.get("x")), float(box.get("y"))
bx1, by1 = bx0 + float(box.get("width")), by0 + float(box.get("height"))
inside = set(legend[0].iter())
segs = []
for el in root.iter():
    if el in inside:
        continue
    if el.tag == NS + "line":
        segs.append(((float(el.get("x1")), float(el.get("y1"))),
                     (float(el.get("x2")), float(el.get("y2")))))
    elif el.tag == NS + "polyline":
        pts = [tuple(map(float, p.split(","))) for p in el.get("points").split()]
        segs += list(zip(pts, pts[1:]))
    elif el.tag == NS + "rect" and el.get("fill") != "white":
        x, y, w, h = (float(el.get(k)) for k in ("x", "y", "width", "height"))
        segs += [((x, y), (x + w, y)), ((x, y + h), (x + w, y + h)),
                 ((x, y), (x, y + h)), ((x + w, y), (x + w, y + h))]
def hits(a, b):
    # a segment meets the box when its bounding box overlaps it (all chart
    # lines are axis-parallel or sampled polylines of short segments)
    return not (max(a[0], b[0]) < bx0 or min(a[0], b[0]) > bx1 or
                max(a[1], b[1]) < by0 or min(a[1], b[1]) > by1)
bad = [s for s in segs if hits(*s)]
for s in bad[:5]:
    print("segment", s, "crosses the legend box", (bx0, by0, bx1, by1), file=sys.stderr)
shade = [r for r in root.iter(NS + "rect") if r.get("id") == "over-context"]
if len(shade) != int(sys.argv[2]):
    print("over-context shading: %d, wanted %s" % (len(shade), sys.argv[2]), file=sys.stderr)
    bad.append(None)
sys.exit(1 if bad or len(segs) < 10 else 0)
PY
}
svg_geom l4 1 --model Llama-3-8B --device L4 --weights q4_0 --users 24 --context 16000
svg_geom h100 0 --model Llama-3-8B --device H100-80GB --users 64 --context 8192
svg_geom a100 0 --model Llama-2-13B --device A100-40GB
svg_geom many 1 --model Llama-3-8B --mem 24GiB --users 3 --context 65536 --kv-type int4
if grep -qF "shaded: beyond the model's context of 8,192 tokens" "$TMP/l4.svg"; then ok; else bad "svg l4: no shading label"; fi

echo "test_plan_cli: $((checks - fails)) passed, $fails failed"
[ "$fails" = 0 ]
