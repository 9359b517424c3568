#!/usr/bin/env bash
# Logits of kvllm against llama.cpp's on the same random-weight files, one
# per architecture (llama with Llama 3.1 rope_freqs, qwen2, qwen3), F32
# weights, the same 256 tokens at positions 0..255, every position compared.
#
#   bench/arch_vs_llamacpp.sh [--llama-dir DIR]   (default /tmp/llama.cpp-src)
#
# Needs llama.cpp built there as bench/build_llamacpp.sh does (libllama) and
# kvllm built in build/. Prints, per architecture: the largest |logit|, the
# RMS and the largest difference, and how often the top-1 token agrees;
# for llama also kvllm with rope_freqs dropped ("nofreqs"), the size of the
# error the comparison would catch.
# Not part of CI (CI has no llama.cpp).
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
for preset in llama-3.2-1b qwen2.5-0.5b qwen3-0.6b; do
    f=$out/$preset-small.gguf
    "$b/kvllm" mkmodel --preset "$preset" --dim 256 --layers 3 --heads 8 --kv-heads 2 --ffn 512 \
        --vocab-size 1024 --synth-vocab --type f32 --seed 5 -o "$f" >/dev/null
    "$out/kvl_logits" "$f" $n "$out/$preset.kvl.f32"
    "$out/llama_logits" "$f" $n "$out/$preset.llama.f32" 2>/dev/null
    cmp=(kvllm)
    if [[ $preset == llama-3.2-1b ]]; then
        "$out/kvl_logits" "$f" $n "$out/$preset.nofreqs.f32" --drop-rope-freqs
        cmp+=(nofreqs)
    fi
    for c in "${cmp[@]}"; do
    k=$out/$preset.kvl.f32
    [[ $c == nofreqs ]] && k=$out/$preset.nofreqs.f32
    python3 - "$preset ($c)" "$k" "$out/$preset.llama.f32" $n <<'PY'
import sys, struct, math
name, a, b, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
x = open(a, 'rb').read(); y = open(b, 'rb').read()
assert len(x) == len(y), (len(x), len(y))
k = len(x) // 4
x = struct.unpack('%df' % k, x); y = struct.unpack('%df' % k, y)
v = k // n
big = max(abs(t) for t in y)
rms = math.sqrt(sum((p - q) ** 2 for p, q in zip(x, y)) / k)
mx = max(abs(p - q) for p, q in zip(x, y))
top = sum(max(range(v), key=lambda j: x[i*v+j]) == max(range(v), key=lambda j: y[i*v+j]) for i in range(n))
print(f"{name:24s} max|logit| {big:.4f}  rms diff {rms:.2e}  max diff {mx:.2e}  top-1 agree {top}/{n}")
PY
    done
done
