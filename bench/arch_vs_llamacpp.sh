#!/usr/bin/env bash
# Logits of kvllm against llama.cpp's on the same random-weight files, one
# per architecture (llama with Llama 3.1 rope_freqs, qwen2, qwen3), F32 and
# Q8_0 weights, the same 256 tokens at positions 0..255, every position
# compared.
#
#   bench/arch_vs_llamacpp.sh [--llama-dir DIR]   (default /tmp/llama.cpp-src)
#
# Needs llama.cpp built there as bench/build_llamacpp.sh does (libllama) and
# kvllm built in build/. Prints, per file: the largest |logit|, the RMS and
# the largest difference between the engines, how often their top-1 tokens
# agree; for Q8_0 also each engine's RMS distance to llama.cpp's F32 logits
# of the same weights (the issue's "at least as close to the F32 model");
# for llama F32 also kvllm with rope_freqs dropped ("nofreqs"), the size of
# the error the comparison would catch. Not part of CI.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
llama=/tmp/llama.cpp-src
while (($#)); do
    case $1 in
    --llama-dir) llama=${2:?}; shift 2 ;;
    *) echo "arch_vs_llamacpp.sh: unknown flag '$1'" >&2; exit 2 ;;
    esac
done
out=$root/bench/out/arch
mkdir -p "$out"
cc -std=gnu11 -O2 -o "$out/llama_logits" "$root/bench/llama_logits.c" \
    -I"$llama/include" -I"$llama/ggml/include" -L"$llama/build/bin" \
    -lllama -lggml -lggml-base -lggml-cpu -Wl,-rpath,"$llama/build/bin" -lm
b=$root/build
cc -std=gnu11 -O2 -o "$out/kvl_logits" "$root/bench/kvl_logits.c" -I"$root/include" -I"$root/src" \
    "$b/libkvl_kv.a" "$b/libkvl_plan.a" "$b/libkvl_model.a" "$b/libkvl_kernels.a" "$b/libkvl_core.a" \
    $(pkg-config --libs libpcre2-8) -lm -lpthread
n=256
compare() { # label kvllm.f32 llama.f32 [f32-reference.f32]
    python3 - "$@" $n <<'PY'
import sys, struct, math
args = sys.argv[1:]
n = int(args[-1]); label = args[0]; files = args[1:-1]
def load(p):
    d = open(p, 'rb').read()
    return struct.unpack('%df' % (len(d) // 4), d)
x, y = load(files[0]), load(files[1])
assert len(x) == len(y)
k = len(x); v = k // n
rms = lambda a, b: math.sqrt(sum((p - q) ** 2 for p, q in zip(a, b)) / k)
big = max(abs(t) for t in y)
mx = max(abs(p - q) for p, q in zip(x, y))
top = sum(max(range(v), key=lambda j: x[i*v+j]) == max(range(v), key=lambda j: y[i*v+j]) for i in range(n))
line = f"{label:29s} max|logit| {big:.4f}  rms diff {rms(x, y):.2e}  max diff {mx:.2e}  top-1 agree {top}/{n}"
if len(files) > 2:
    r = load(files[2])
    line += f"  to F32: kvllm {rms(x, r):.2e} llama.cpp {rms(y, r):.2e}"
print(line)
PY
}
for type in f32 q8_0; do
    for preset in llama-3.2-1b qwen2.5-0.5b qwen3-0.6b; do
        f=$out/$preset-small-$type.gguf
        "$b/kvllm" mkmodel --preset "$preset" --dim 256 --layers 3 --heads 8 --kv-heads 2 \
            --ffn 512 --vocab-size 1024 --synth-vocab --type $type --seed 5 -o "$f" >/dev/null
        "$out/kvl_logits" "$f" $n "$out/$preset-$type.kvl.f32"
        "$out/llama_logits" "$f" $n "$out/$preset-$type.llama.f32" 2>/dev/null
        if [[ $type == f32 ]]; then
            compare "$preset $type" "$out/$preset-$type.kvl.f32" "$out/$preset-$type.llama.f32"
        else
            compare "$preset $type" "$out/$preset-$type.kvl.f32" "$out/$preset-$type.llama.f32" \
                "$out/$preset-f32.llama.f32"
        fi
        if [[ $preset == llama-3.2-1b && $type == f32 ]]; then
            "$out/kvl_logits" "$f" $n "$out/$preset-nofreqs.kvl.f32" --drop-rope-freqs
            compare "$preset $type (nofreqs)" "$out/$preset-nofreqs.kvl.f32" \
                "$out/$preset-$type.llama.f32"
        fi
    done
done
