#!/usr/bin/env bash
# Issue 14 on a GPU (the device machine): train the MS MARCO recipe (configs/train_msmarco12k.yaml) for at most
# TRAIN_S seconds, evaluate its checkpoints on DL19 and DL20 (BM25 top-100) as it goes, and export the best
# checkpoint as the reference adapter. Everything lands in $OUT (at most 8 files come back from the device):
#   run.tar (the run minus optimizer states), adapter.tar (adapters/smollm2-135m-msmarco12k-r8), metrics.jsonl,
#   train_summary.json, checkpoints.png, log.txt
# Use (after scripts/setup.sh and ../shared/tools/device-prep; add lightgbm/pyarrow wheels to .devcarry/whl if the
# device image lacks them -- training does not import them):
#   call 1: bash .devcarry/meta/remote.sh                      (carry the model's first part, wheels, pkg, meta)
#   call 2: bash .devcarry/meta/remote.sh bash benchmarks/gpu_train_msmarco12k.sh   (second part, data, meta)
# Resumable: a later session re-runs call 2 with the returned run.tar unpacked into runs/ (RESUME_TAR=path).
# SMOKE=1 runs 2 steps on 2 queries on the CPU, to check the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-results/gpu_train_msmarco12k}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
TRAIN_S="${TRAIN_S:-420}"
RUN="${RUN_DIR:-/tmp/lorank-msmarco12k-r8}"
log() { echo "[gpu_train_msmarco12k] $*" | tee -a "$OUT/log.txt"; }
SETS=()
if [ "${SMOKE:-0}" = 1 ]; then
  SETS=(--set max_steps=2 --set epochs=1 --set batch_queries=1 --set group_size=4 --set checkpoints.every=1
        --set eval.max_queries=2 --set eval.depth=5 --set data.0.max_queries=4)
  TRAIN_S=600
fi
if [ -n "${RESUME_TAR:-}" ]; then mkdir -p "$RUN" && tar -xf "$RESUME_TAR" -C "$RUN"; fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee -a "$OUT/log.txt"
log "training for at most ${TRAIN_S}s into $RUN"
t0=$(date +%s)
# SIGINT: lorank saves a checkpoint and stops cleanly (resumable); -k: a hard stop 60 s later if it cannot
timeout -s INT -k 60 "$TRAIN_S" "$PY" -m lorank.cli train configs/train_msmarco12k.yaml -o "$RUN" "${SETS[@]}" \
  2>&1 | grep -v -E "Warning|warnings.warn" | tail -n 40 | tee -a "$OUT/log.txt"
log "training call ended after $(( $(date +%s) - t0 ))s"
for f in metrics.jsonl train_summary.json checkpoints.png; do [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"; done
best=$("$PY" - "$RUN" <<'PYEOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()] if (run / "metrics.jsonl").is_file() else []
dl19 = [r for r in rows if r["eval_set"] == "dl19" and (run / f"checkpoint-{r['step']}").is_dir()]
print(max(dl19, key=lambda r: r["ndcg_cut_10"])["step"] if dl19 else "")
PYEOF
)
if [ -n "$best" ]; then
  log "best DL19 checkpoint: $best; exporting"
  rm -rf /tmp/adapter-export && "$PY" -m lorank.cli export-adapter "$RUN/checkpoint-$best" \
      --out /tmp/adapter-export/smollm2-135m-msmarco12k-r8 2>&1 | tail -n 3 | tee -a "$OUT/log.txt"
  tar -cf "$OUT/adapter.tar" -C /tmp/adapter-export smollm2-135m-msmarco12k-r8
else
  log "no evaluated checkpoint: nothing exported"
fi
# the run without optimizer/rng states, so that it fits the way back (64 MiB) and can be evaluated or exported here
tar -cf "$OUT/run.tar" -C "$RUN" --exclude='optimizer.pt' --exclude='rng_state*.pth' --exclude='scheduler.pt' . 2>/dev/null
ls -la "$OUT" | tee -a "$OUT/log.txt"
