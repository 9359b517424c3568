#!/usr/bin/env bash
# Format every C file with the house .clang-format (clang-format 14, Debian).
#   scripts/format.sh          rewrite the files
#   scripts/format.sh --check  list files that differ; exit 1 if any
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(find src include tests bench fuzz -name '*.[ch]' | sort)
if [ "${1:-}" = --check ]; then
  bad=0
  for f in "${files[@]}"; do
    clang-format "$f" | cmp -s - "$f" || { echo "$f"; bad=1; }
  done
  exit $bad
fi
clang-format -i "${files[@]}"
