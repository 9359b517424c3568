#!/usr/bin/env bash
# K-quant conformance with llama.cpp (issue 14): a TinyLlama-shaped F16
# model from `kvllm mkmodel`, quantized to Q4_K_M by llama.cpp's own
# quantizer, then
#   1. every tensor of the Q4_K_M file dequantized by ggml and by kvllm,
#      compared bit for bit;
#   2. logits of both engines on that file and on the F16 file, for the
#      same N tokens (bench/kquant_conform.c).
#
#   bench/kquant_conform.sh [--llama-dir DIR] [--layers N] [-n N] [--kvllm-build DIR]
#                           [--ftype q4_k_m|q4_k_s|q5_k_m|q6_k|q2_k|q3_k_s|q3_k_m|q3_k_l|q5_0|q5_1]
#
#   --llama-dir DIR   a llama.cpp checkout whose build/bin holds libllama.so
#                     and the ggml libraries (bench/build_llamacpp.sh makes
#                     one; default /tmp/llama.cpp-src)
#   --layers N        layers of the TinyLlama shape (default 22, all)
#   -n N              positions for the logits (default 256)
#   --kvllm-build DIR kvllm's CMake build with the static libraries
#                     (default build/)
#   --ftype T         what llama.cpp quantizes to (default q4_k_m)
#
# Files go to bench/out/conform/ (not committed). Not part of CI.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
llama=/tmp/llama.cpp-src
layers=22
n=256
kb=$root/build
ftype=q4_k_m
die() { echo "kquant_conform.sh: $*" >&2; exit 2; }
while (($#)); do
    case $1 in
    --llama-dir) llama=${2:?}; shift 2 ;;
    --layers) layers=${2:?}; shift 2 ;;
    -n) n=${2:?}; shift 2 ;;
    --kvllm-build) kb=${2:?}; shift 2 ;;
    --ftype) ftype=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown flag '$1' (see --help)" ;;
    esac
done
[[ -f $llama/build/bin/libllama.so ]] || die "no $llama/build/bin/libllama.so (bench/build_llamacpp.sh)"
[[ -f $kb/libkvl_kv.a && -x $kb/kvllm ]] || die "no kvllm build in $kb"
out=$root/bench/out/conform
mkdir -p "$out"
bin=$out/kquant_conform
cc -std=gnu11 -O2 -Wall -Wextra -D_GNU_SOURCE -o "$bin" "$root/bench/kquant_conform.c" \
    -I"$root/src" -I"$root/include" -I"$llama/include" -I"$llama/ggml/include" \
    "$kb/libkvl_kv.a" "$kb/libkvl_plan.a" "$kb/libkvl_model.a" "$kb/libkvl_kernels.a" \
    "$kb/libkvl_core.a" -L"$llama/build/bin" -lllama -lggml -lggml-base -lggml-cpu \
    -Wl,-rpath,"$llama/build/bin" -lpcre2-8 -lm -lpthread
f16=$out/tinyllama-l$layers-f16.gguf
q=$out/tinyllama-l$layers-$ftype-llamacpp.gguf
[[ -f $f16 ]] || "$kb/kvllm" mkmodel --preset tinyllama-1.1b --layers "$layers" --type f16 -o "$f16"
[[ -f $q ]] || "$bin" quantize "$f16" "$q" "$ftype"
echo "llama.cpp $(git -C "$llama" rev-parse --short HEAD 2>/dev/null || echo '?'), $layers layers"
echo "## dequantized weights of llama.cpp's $ftype file: ggml vs kvllm"
"$bin" dequant "$q" || echo "(some values differ)"
echo "## logits, $n positions"
"$bin" logits "$f16" "$q" -n "$n" -t "$(nproc)"
