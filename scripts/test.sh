#!/usr/bin/env bash
# Run the test suite (real-data tests read ../shared/data and skip with a message when it is absent).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -q "$@"
