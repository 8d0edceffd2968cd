#!/usr/bin/env bash
# Run the test suite (real-data tests read ../shared/data and skip with a message when it is absent).
# With no arguments it then runs the precision-sensitive tests (marker `precision`) again with bf16 pinned
# off and on (LORANK_BF16=0/1), so a CPU without AVX512-BF16 still checks what a CPU with it would run, and
# the other way round. With arguments, they go to pytest as given and only that run is made.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTEST=(.venv/bin/python -m pytest -q)
if [ "$#" -gt 0 ]; then
  exec "${PYTEST[@]}" "$@"
fi
"${PYTEST[@]}"
for bf16 in 0 1; do
  echo "[test] precision-sensitive tests with LORANK_BF16=$bf16"
  LORANK_BF16=$bf16 "${PYTEST[@]}" -m precision
done
