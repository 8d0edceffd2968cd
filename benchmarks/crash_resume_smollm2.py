"""Crash / interrupt and resume on the real model: SmolLM2-135M LoRA on TREC DL 2020, CPU.

A clean run, a run SIGKILLed at a random step, and a run stopped with Ctrl-C (SIGINT), each resumed with
the same ``lorank train`` command; every checkpoint of the resumed runs is compared bit for bit with the
clean run's, and so are the checkpoint metrics (DL19, a few queries) and per-step losses.

    flock /tmp/lorank-heavy.lock nice -n 5 .venv/bin/python benchmarks/crash_resume_smollm2.py

Writes results/crash_resume_smollm2.json. About 5 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reliability import harness  # noqa: E402
from tests.reliability.conftest import subprocess_env, train_cmd  # noqa: E402

MAX_STEPS, EVERY = 12, 4


def config(path: Path, out: Path, data_root: str | None) -> Path:
    root = f"data_root: {data_root}\n" if data_root else ""
    path.write_text(f"""
model: smollm2-135m
dtype: fp32
head_init: yes_no
data: [{{kind: trec, path: dl20, depth: 30}}]
{root}group_size: 4
batch_queries: 1
lr: 3e-4
seed: 11
max_steps: {MAX_STEPS}
input: {{max_len: 96, query_max_len: 24}}
lora: {{rank: 4, alpha: 32, dropout: 0.1}}
checkpoints: {{every: {EVERY}}}
eval: {{sets: [dl19], depth: 10, max_queries: 3}}
output_dir: {out}
""")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=None, help="data root (default: $LORANK_DATA or ../shared/data)")
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "crash_resume_smollm2.json")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    harness.MAX_STEPS, harness.EVERY = MAX_STEPS, EVERY
    trials = [harness.Trial("kill-random", "kill-random-step", rng.randint(EVERY + 1, MAX_STEPS - 1), a.seed),
              harness.Trial("sigint", "sigint", rng.randint(1, MAX_STEPS - EVERY - 1), a.seed)]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=ROOT / "runs" if (ROOT / "runs").is_dir() else None) as d:
        work = Path(d)
        base = work / "baseline"
        cfgs = {t.name: config(work / f"{t.name}.yaml", work / t.name, a.data) for t in trials}
        with ThreadPoolExecutor(2) as pool:
            import subprocess

            fb = pool.submit(subprocess.run, train_cmd(config(work / "baseline.yaml", base, a.data)),
                             env=subprocess_env(), capture_output=True, text=True, timeout=900)
            faults = [pool.submit(harness.fault_run, t, cfgs[t.name], work / t.name, 900) for t in trials]
            for f in faults:
                f.result()
            resumes = [pool.submit(harness.resume_run, t, cfgs[t.name], work / t.name, 900) for t in trials]
            for f in resumes:
                f.result()
            done = fb.result()
            if done.returncode != 0:
                print(done.stderr[-3000:])
                return 1
        for t in trials:
            if t.resume_exit_code == 0:
                harness.compare(t, base, work / t.name)
        summary = json.loads((base / "train_summary.json").read_text())
    wall = time.perf_counter() - t0
    rows = [{k: v for k, v in dict(asdict(t), ok=t.ok).items() if not k.endswith("tail") and k != "wall_s"}
            for t in trials]
    result = {"model": "SmolLM2-135M (fp32, CPU, 1 thread per process)", "max_steps": MAX_STEPS, "every": EVERY,
              "seed": a.seed, "baseline_train_s": summary.get("train_s"), "wall_s": round(wall, 1),
              "all_ok": all(t.ok for t in trials), "trials": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    for t in trials:
        print(f"{t.name}: fault at step {t.signalled_at_step} (exit {t.exit_code}), resumed from "
              f"{Path(t.resumed_from).name if t.resumed_from else None}, {len(t.identical_checkpoints)} checkpoints "
              f"bit-identical, metrics equal {t.metrics_equal}, losses equal {t.losses_equal}, ok {t.ok}")
        if not t.ok:
            print(t.differences, t.stderr_tail[-1500:], t.resume_stderr_tail[-1500:])
    print(f"wrote {a.out} ({wall:.0f} s)")
    return 0 if result["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
