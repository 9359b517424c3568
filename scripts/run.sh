#!/usr/bin/env bash
# Build kvllm (Release) and run it. With no arguments: generate text from
# the shipped stories260K model. Otherwise the arguments go to kvllm, e.g.
#   scripts/run.sh run -p "Once upon a time" -n 200 --temp 0
#   scripts/run.sh ppl -f ../shared/models/TinyStories-valid-reduced.txt
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target kvllm >/dev/null
if [ $# -eq 0 ]; then
  set -- run -p "Once upon a time" -n 200
fi
exec ./build/kvllm "$@"
