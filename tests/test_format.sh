#!/usr/bin/env bash
# Every C file is formatted with the house .clang-format (scripts/format.sh).
set -u
cd "$(dirname "$0")/.."
if ! command -v clang-format >/dev/null; then
  echo "test_format: clang-format not installed: SKIPPED"; exit 0
fi
if out=$(scripts/format.sh --check); then
  echo "test_format: 1 passed, 0 failed"
else
  echo "FAIL: not formatted (run scripts/format.sh):"; echo "$out"
  echo "test_format: 0 passed, 1 failed"; exit 1
fi
