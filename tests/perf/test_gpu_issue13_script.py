"""benchmarks/gpu_issue13.sh in its CPU smoke mode: one short stage (a profiled lorank step) and the merge."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_issue13_script_smoke_writes_the_merged_json(tmp_path):
    env = {**os.environ, "SMOKE": "1", "OUT": str(tmp_path), "PYTHON": sys.executable, "STAGES": "profile8b,merge"}
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_issue13.sh")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    merged = json.loads((tmp_path / "gpu_issue13.json").read_text())
    (row,) = merged["rows"]
    assert row["stage"] == "profile8b" and row["config"] == "lorank" and row["train"]["tokens_per_s"] > 0
    top = row["profile"]["self_cpu_time_total"]
    assert top and all(t["self_us"] >= 0 and t["op"] for t in top)
    assert Path(row["profile"]["text"]).is_file()
    assert merged["table"][0]["stage"] == "profile8b" and "== small: skipped" not in res.stdout
