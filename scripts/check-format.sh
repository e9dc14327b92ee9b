#!/usr/bin/env bash
# Fails when a tracked C++/CUDA source differs from what clang-format makes of it (.clang-format at the
# root). `scripts/check-format.sh --fix` rewrites them instead.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "check-format: clang-format not found (apt-get install clang-format)"; exit 1; }
mapfile -t files < <(git ls-files '*.cpp' '*.h' '*.cu' '*.cuh' '*.inc')
if [ "${1:-}" = --fix ]; then
  clang-format -i "${files[@]}"
  exit 0
fi
if ! clang-format --dry-run --Werror "${files[@]}" 2>/tmp/llamarun-format.log; then
  grep -E "^[^ ].*: (error|warning):" /tmp/llamarun-format.log | cut -d: -f1 | sort | uniq -c
  echo "check-format: the files above are not clang-formatted (run scripts/check-format.sh --fix)"
  exit 1
fi
echo "check-format: ${#files[@]} files clang-formatted"
