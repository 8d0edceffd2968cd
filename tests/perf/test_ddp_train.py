"""Training under 2-process gloo DDP on CPU (torchrun), tiny model: one job, weights kept in step."""
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.tinydata import make_trec_dir, save_tiny_model

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path) -> Path:
    data = make_trec_dir(tmp_path / "data")
    model = save_tiny_model(tmp_path / "model")
    cfg = tmp_path / "train.yaml"
    cfg.write_text(f"""
model: {model}
dtype: fp32
data: [{{kind: trec, path: {data}}}]
group_size: 4
batch_queries: 2
max_steps: 3
lr: 1e-3
lora: {{rank: 2, alpha: 4, dropout: 0.1}}
checkpoints: {{steps: "3"}}
eval: {{sets: []}}
output_dir: {tmp_path / 'run'}
""")
    return cfg


def _torchrun(tmp_path: Path, *script_and_args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "0", "--rdzv_backend", "c10d", "--rdzv_endpoint", "localhost:0",
                           *script_and_args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_two_process_gloo_training(tmp_path):
    cfg = _config(tmp_path)
    out = tmp_path / "ddp.json"
    _torchrun(tmp_path, str(ROOT / "tests" / "perf" / "ddp_train_worker.py"), str(cfg), str(out))
    res = json.loads(out.read_text())
    assert res["world_size"] == 2 and res["backend"] == "gloo"
    assert res["model_class"] == "DistributedDataParallel"
    assert res["steps"] == 3 and res["checkpoints"] == ["checkpoint-3"]
    a, b = res["weight_sums"]
    assert a == b  # gradients were all-reduced: both ranks hold the same weights
    assert (tmp_path / "run" / "checkpoint-3" / "lorank_checkpoint.json").is_file()


def test_cli_under_torchrun_ends_the_job_once(tmp_path):
    """``lorank train`` under torchrun: exit 0 on both ranks, the group torn down, one summary (rank 0's)."""
    cfg = _config(tmp_path)
    proc = _torchrun(tmp_path, str(Path(sys.executable).with_name("lorank")), "train", str(cfg))
    assert proc.stdout.count("done:") == 1, proc.stdout[-3000:]
    assert (tmp_path / "run" / "checkpoint-3" / "lorank_checkpoint.json").is_file()
