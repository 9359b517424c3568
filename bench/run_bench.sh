#!/usr/bin/env bash
# kvllm vs llama.cpp on the CPU, side by side in one run (issue 5).
#
#   bench/run_bench.sh [--nlc DIR] [--models DIR] [--pairs N] [--threads N]
#                      [--types "q8_0 f16"] [--groups "base deep batch"]
#                      [--kvllm PATH] [--llama-gate PATH]
#
# 1. builds kvllm (build-bench/, unless --kvllm names a binary) and
#    bench/out/stream when missing;
# 2. writes TinyLlama-1.1B-shaped random GGUFs (Q8_0, F16) with
#    `kvllm mkmodel` into --models (default bench/out/models) when missing;
# 3. measures memory bandwidth (bench/stream.c) before, between and after;
# 4. for each model and each test group runs kvllm bench and llama.cpp
#    (bench/llamacpp_bench.mjs) side by side through bench/interleave.py:
#    each loads and prefills once, then their timed repetitions alternate,
#    A B A B ..., --pairs times (default 3); every JSON result is kept under
#    bench/out/run-DATE/;
# 5. prints a markdown table (bench/summarize.py): medians, the median of the
#    pairwise kvllm/llama.cpp ratios, and the fraction of the decode roofline
#    kvllm reached (bytes read per token / measured bandwidth).
#
# Test groups (the tests of issue 5):
#   base   pp512 and tg128                       (-p 512 -n 128)
#   deep   tg128 at depth 2048                   (-p 0 -n 128 -d 2048; prefill untimed)
#   batch  tg32 with 4 and 16 sequences together (-p 0 -n 32 -b 4,16)
#
# llama.cpp: with --llama-gate PATH (bench/llama_gate.c built by
# bench/build_llamacpp.sh; bench/out/llama_gate is taken when it exists and
# no --llama-gate is given), llama.cpp's own llama-bench loop (llama_decode
# on one token per step, no sampling); otherwise node-llama-cpp's generation
# loop from an existing install (--nlc, default $NLC_DIR or /tmp/nlc), which
# samples every token and decodes ~12% slower (issue 5). When neither is
# there, only kvllm runs and the table says so. Nothing is installed. Not part of CI; takes about 10-15 minutes on 2
# cores (mostly the 2048-token prefills and F16 decoding).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
nlc=${NLC_DIR:-/tmp/nlc}
models=$root/bench/out/models
pairs=3
threads=$(nproc)
types="q8_0 f16"
groups="base deep batch"
kvllm=
gate=

die() { echo "run_bench.sh: $*" >&2; exit 2; }
posint() {
    if ! [[ $2 =~ ^[0-9]{1,9}$ ]] || ((10#$2 < $3 || 10#$2 > $4)); then
        die "$1: '$2' is not an integer in [$3, $4]"
    fi
}
while (($#)); do
    case $1 in
    --nlc) nlc=${2:?--nlc needs a value}; shift 2 ;;
    --models) models=${2:?--models needs a value}; shift 2 ;;
    --pairs) posint --pairs "${2:-}" 1 100; pairs=$2; shift 2 ;;
    --threads) posint --threads "${2:-}" 1 1024; threads=$2; shift 2 ;;
    --types) types=${2:?--types needs a value}; shift 2 ;;
    --groups) groups=${2:?--groups needs a value}; shift 2 ;;
    --kvllm) kvllm=${2:?--kvllm needs a value}; [[ -x $kvllm ]] || die "--kvllm: '$kvllm' is not an executable"; shift 2 ;;
    --llama-gate) gate=${2:?--llama-gate needs a value}; [[ -x $gate ]] || die "--llama-gate: '$gate' is not an executable"; shift 2 ;;
    -h|--help) sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown flag '$1' (see --help)" ;;
    esac
done
for t in $types; do
    case $t in q8_0|f16|q4_0|bf16|f32) ;; *) die "--types: '$t' is not one of q8_0 f16 q4_0 bf16 f32" ;; esac
done
for g in $groups; do
    case $g in base|deep|batch) ;; *) die "--groups: '$g' is not one of base deep batch" ;; esac
done

if [[ -z $kvllm ]]; then
    kvllm=$root/build-bench/kvllm
fi
if [[ ! -x $kvllm ]]; then
    echo "building kvllm in build-bench/ ..." >&2
    cmake -S "$root" -B "$root/build-bench" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$root/build-bench" -j"$(nproc)" --target kvllm >/dev/null
fi
mkdir -p "$root/bench/out" "$models"
stream=$root/bench/out/stream
if [[ ! -x $stream || $root/bench/stream.c -nt $stream ]]; then
    cc -std=c11 -O2 -pthread -o "$stream" "$root/bench/stream.c"
fi

if [[ -z $gate && -x $root/bench/out/llama_gate ]]; then
    gate=$root/bench/out/llama_gate
fi
have_llama=1
if [[ -n $gate ]]; then
    :
elif [[ ! -f $nlc/node_modules/node-llama-cpp/dist/index.js ]] || ! command -v node >/dev/null; then
    have_llama=0
    echo "note: node-llama-cpp not found under $nlc (or no node): llama.cpp side skipped" >&2
fi

run=$root/bench/out/run-$(date +%Y%m%d-%H%M%S)
mkdir -p "$run"
t_start=$(date +%s)
{
    echo "date: $(date -Is)"
    echo "host: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cpus, $(free -g | awk '/Mem:/{print $2}') GiB"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "kvllm: $kvllm ($("$kvllm" --version)); checkout $(git -C "$root" rev-parse --short HEAD)"
    echo "threads: $threads, pairs: $pairs, types: $types, groups: $groups"
    if [[ -n $gate ]]; then
        echo "llama.cpp: llama-bench loop, $gate"
    elif [[ $have_llama = 1 ]]; then
        echo "llama.cpp: node-llama-cpp $(node -p "require('$nlc/node_modules/node-llama-cpp/package.json').version")"
    else
        echo "llama.cpp: absent"
    fi
} | tee "$run/machine.txt" >&2

for t in $types; do
    # --ctx 4096: the deep group needs 2048 + 128 positions, past TinyLlama's 2048
    # (kvllm bench refuses depths past the model's context)
    f=$models/tinyllama-1.1b-$t-ctx4k.gguf
    if [[ ! -f $f ]]; then
        echo "writing $f ..." >&2
        "$kvllm" mkmodel --preset tinyllama-1.1b --type "$t" --ctx 4096 -o "$f" >&2
    fi
done

bw_i=0
measure_bw() {
    bw_i=$((bw_i + 1))
    "$stream" --mib 1024 --reps 3 --threads "$threads" --json >"$run/stream-$bw_i.json"
    echo "stream: $(cat "$run/stream-$bw_i.json")" >&2
}

group_flags() {
    case $1 in
    base) echo "-p 512 -n 128" ;;
    deep) echo "-p 0 -n 128 -d 2048" ;;
    batch) echo "-p 0 -n 32 -b 4,16" ;;
    esac
}

measure_bw
for t in $types; do
    f=$models/tinyllama-1.1b-$t-ctx4k.gguf
    for g in $groups; do
        read -r -a flags <<<"$(group_flags "$g")"
        echo "[$(($(date +%s) - t_start)) s] $t $g: ${flags[*]}" >&2
        kv_cmd=("$kvllm" bench -m "$f" "${flags[@]}" -r "$pairs" -t "$threads" -o json)
        if [[ -n $gate ]]; then
            python3 "$root/bench/interleave.py" "$run/$t-$g-kvllm.json" "$run/$t-$g-llamacpp.json" \
                -- "${kv_cmd[@]}" --gate \
                -- "$gate" -m "$f" "${flags[@]}" -r "$pairs" -t "$threads" --gate
        elif [[ $have_llama = 1 ]]; then
            python3 "$root/bench/interleave.py" "$run/$t-$g-kvllm.json" "$run/$t-$g-llamacpp.json" \
                -- "${kv_cmd[@]}" --gate \
                -- node "$root/bench/llamacpp_bench.mjs" --nlc "$nlc" -m "$f" "${flags[@]}" \
                -r "$pairs" -t "$threads" -o json --gate
        else
            "${kv_cmd[@]}" >"$run/$t-$g-kvllm.json"
        fi
    done
    measure_bw
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$run/machine.txt" >&2
echo "total: $(($(date +%s) - t_start)) s" | tee -a "$run/machine.txt" >&2

python3 "$root/bench/summarize.py" "$run" | tee "$run/table.md"
echo "results: $run" >&2
