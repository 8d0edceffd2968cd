#!/usr/bin/env bash
# Issue 13's GPU measurements in ONE device call (~9 min at most on an H100/H200):
#   1. smollm2-135m shape: lorank vs the Tevatron-style baseline, training + scoring
#   2. llama-3.1-8b shape: lorank vs the baseline, training + scoring
#   3. profile excerpt (torch.profiler, top ops by self CUDA / CPU time) of a few lorank steps, smollm2-135m
#   4. smollm2-135m lorank with the cuDNN attention backend (torch's Hopper default): separates the backend
#   5. profile excerpt of a few lorank steps of the 8B shape (only if time is left)
# Every stage is its own process (fresh CUDA state: the SDPA flags are process-wide) under a timeout cut
# from what is left of BUDGET_S, so a slow stage cannot take the later ones' results with it. Results:
# $OUT/gpu_issue13/<stage>.json (+ profile-*.txt), merged into $OUT/gpu_issue13.json (rows + a table).
#
#   bash benchmarks/gpu_issue13.sh                          # on the GPU machine (run from the repo root)
#   SMOKE=1 bash benchmarks/gpu_issue13.sh                  # CPU smoke: tiny shapes, 1+1 steps, seconds
#   STAGES=small,merge SMOKE=1 bash benchmarks/gpu_issue13.sh   # a subset (what the test suite runs)
# Env: OUT (default results), PYTHON (default python), BUDGET_S (default 530), STAGES
# (default small,big,profile,cudnn,profile8b,merge).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT_ROOT=${OUT:-results}
DIR="$OUT_ROOT/gpu_issue13"
mkdir -p "$DIR"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
BUDGET_S=${BUDGET_S:-530}
STAGES=${STAGES:-small,big,profile,cudnn,profile8b,merge}
T0=$(date +%s)
GT=benchmarks/gpu_throughput.py

if [ "${SMOKE:-0}" = "1" ]; then
  COMMON=(--device cpu --tmp /tmp/lorank-gpu-issue13)
  SMALL=tiny-llama; BIG=tiny-llama
  SMALL_RUN=(--steps 1 --warmup 1 --score-pairs 16)
  BIG_RUN=(--steps 1 --warmup 1 --score-pairs 16)
  PROF_RUN=(--steps 1 --warmup 0 --score-pairs 8)
else
  COMMON=(--device cuda --tmp /tmp/lorank-gpu-issue13)
  SMALL=smollm2-135m; BIG=llama-3.1-8b
  SMALL_RUN=(--steps 8 --warmup 4 --score-pairs 4000)
  BIG_RUN=(--steps 5 --warmup 3 --score-pairs 2000)
  PROF_RUN=(--steps 2 --warmup 2 --score-pairs 256)
fi

left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }
want() { [[ ",$STAGES," == *",$1,"* ]]; }
stage() {  # stage NAME MIN_SECONDS ARGS...: run gpu_throughput.py if at least MIN_SECONDS are left
  local name=$1 min=$2; shift 2
  local t; t=$(left)
  if [ "$t" -lt "$min" ]; then
    echo "== $name: skipped ($t s left, needs $min)"; echo "{\"skipped\": \"$t s left\"}" > "$DIR/$name.json"; return
  fi
  echo "== $name ($t s left): $PY $GT $*"
  local s0; s0=$(date +%s)
  timeout --signal=INT --kill-after=15 "$t" "$PY" "$GT" "${COMMON[@]}" "$@" --out "$DIR/$name.json" \
    > "$DIR/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc in $(( $(date +%s) - s0 )) s; log: $DIR/$name.log"
  [ "$rc" -eq 0 ] || { tail -5 "$DIR/$name.log"; echo "{\"failed\": $rc}" > "$DIR/$name.failed.json"; }
}

want small && stage small 60 --shape "$SMALL" --configs lorank,baseline "${SMALL_RUN[@]}"
want big && stage big 200 --shape "$BIG" --configs lorank,baseline "${BIG_RUN[@]}"
want profile && stage profile 45 --shape "$SMALL" --configs lorank --profile --profile-out "$DIR" "${PROF_RUN[@]}"
want cudnn && stage cudnn 45 --shape "$SMALL" --configs lorank --attention-backend cudnn "${SMALL_RUN[@]}"
want profile8b && stage profile8b 100 --shape "$BIG" --configs lorank --profile --profile-out "$DIR" "${PROF_RUN[@]}"

if want merge; then
  "$PY" - "$DIR" "$OUT_ROOT/gpu_issue13.json" <<'EOF'
import json, sys, time
from pathlib import Path

d, out = Path(sys.argv[1]), Path(sys.argv[2])
res = {"script": "bash benchmarks/gpu_issue13.sh", "written": time.strftime("%Y-%m-%d %H:%M:%S"), "stages": {}, "rows": [],
       "table": []}
for f in sorted(d.glob("*.json")):
    data = json.loads(f.read_text())
    stage = f.stem
    res["stages"][stage] = {k: v for k, v in data.items() if k not in ("rows", "table")}
    for r in data.get("rows", []):
        res["rows"].append({"stage": stage, **r})
    for t in data.get("table", []):
        res["table"].append({"stage": stage, **t})
out.write_text(json.dumps(res, indent=1))
for t in res["table"]:
    print(json.dumps(t))
print(f"wrote {out}")
EOF
fi
echo "total $(( $(date +%s) - T0 )) s"
