"""Time the main job, ``lorank demo``, from an empty output folder, in bf16 or fp32, and keep the figures.

    .venv/bin/python benchmarks/demo_timing.py --precision bf16     # the CPU's bf16 (AVX512-BF16 / AMX)
    .venv/bin/python benchmarks/demo_timing.py --precision fp32     # LORANK_BF16=0: what an AVX2-only CPU computes in

On a CPU without AVX-512 (an AVX2-only one), ``--precision fp32`` is recorded as ``fp32_avx2``: the measurement the
AVX2 estimate below is a stand-in for, shown beside it (a check of the planner's AVX2 rates).

Runs ``lorank demo --out TMP`` in a child process (``LORANK_BF16`` set for fp32) and merges into
results/demo_timing.json, under the precision: the wall time, each study step's time
(``demo_summary.json``), the child's CPU time (user + system), the CPU model and core count, and the load average
before and after (another job on the same cores makes the wall time longer than the job alone: the CPU time says by
how much). Also the study planner's estimates of the demo's steps for a bf16 CPU and for an AVX2-only CPU in fp32
(``plan_estimates_s``): their ratio per step kind, applied to the measured bf16 steps, is the AVX2 fp32 estimate
that ``lorank readme`` writes beside the measurements (lorank.report.markdown_blocks). Heavy: the whole demo; run one at a
time. ``--estimates-only`` rewrites the estimates alone (seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "demo_timing.json"


def cpu_model() -> str:
    """The CPU's model name and its widest matrix instructions (lorank.precision): e.g. ``AMD EPYC (AVX2)``."""
    from lorank.precision import cpu_isa, cpu_model as name

    return f"{name()} ({cpu_isa()})"


PLAN_ESTIMATE = """
import json
from lorank.study import build_plan, find_spec, load_spec
plan = build_plan(load_spec(find_spec("demo")), check_data=False, device="cpu")
out = {}
for s in plan.steps:
    out[s.kind] = out.get(s.kind, 0.0) + s.estimate_s
print(json.dumps({k: round(v, 1) for k, v in out.items()}))
"""


def plan_estimates(lorank_python: str) -> dict:
    """The study planner's estimate of the demo's steps per kind (train / ablate / analyze), in seconds, priced for a
    bf16 CPU (``LORANK_BF16=1``: its measured AVX512-BF16 rates) and for an AVX2-only CPU in fp32 (``LORANK_BF16=0``:
    the rates measured on one, lorank.study.cost.CPU_MEASURED)."""
    out = {}
    for name, flag in (("bf16", "1"), ("fp32_avx2", "0")):
        res = subprocess.run([lorank_python, "-c", PLAN_ESTIMATE], env=dict(os.environ, LORANK_BF16=flag), cwd=ROOT,
                             capture_output=True, text=True, check=True)
        out[name] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", choices=["bf16", "fp32"])
    ap.add_argument("--lorank", default=str(Path(sys.executable).parent / "lorank"), help="the lorank command")
    ap.add_argument("--note", default="", help="anything a reader of the figure should know (e.g. other jobs)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--keep", default=None,
                    help="run the demo into this new folder and keep it (default: a temporary one)")
    ap.add_argument("--estimates-only", action="store_true",
                    help="only (re)write the planner's estimates (plan_estimates): no demo is run")
    a = ap.parse_args()
    f = Path(a.out)
    data = json.loads(f.read_text()) if f.is_file() else {}
    estimates = data["plan_estimates_s"] = plan_estimates(str(Path(a.lorank).parent / "python"))
    if a.estimates_only:
        f.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        print(json.dumps(data["plan_estimates_s"]))
        return 0
    if a.precision is None:
        ap.error("--precision is required (or --estimates-only)")
    env = dict(os.environ, LORANK_BF16="1" if a.precision == "bf16" else "0")
    if a.keep:  # an empty folder of the caller's, kept afterwards (its report, to look at)
        Path(a.keep).mkdir(parents=True, exist_ok=False)
    with tempfile.TemporaryDirectory(prefix="lorank-demo-") as scratch:
        tmp = a.keep or scratch
        load0 = os.getloadavg()
        t0 = time.perf_counter()
        proc = subprocess.run([a.lorank, "demo", "--out", tmp], env=env, cwd=ROOT)
        wall = time.perf_counter() - t0
        load1 = os.getloadavg()
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        summary = json.loads((Path(tmp) / "demo_summary.json").read_text()) if proc.returncode == 0 else {}
    entry = {"date": time.strftime("%Y-%m-%d %H:%M"), "returncode": proc.returncode, "wall_s": round(wall, 1),
             "cpu_s": round(ru.ru_utime + ru.ru_stime, 1), "cpu": cpu_model(), "cores": os.cpu_count(),
             "load_before": [round(x, 2) for x in load0], "load_after": [round(x, 2) for x in load1],
             "summary": summary, "note": a.note,
             "command": f"python benchmarks/demo_timing.py --precision {a.precision}"}
    key = "fp32_avx2" if a.precision == "fp32" and entry["cpu"].endswith("(AVX2)") else a.precision
    data = json.loads(f.read_text()) if f.is_file() else {}  # another precision written meanwhile: kept
    data.update({"plan_estimates_s": estimates, key: entry})
    f.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in entry.items() if k != "summary"}, indent=1))
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
