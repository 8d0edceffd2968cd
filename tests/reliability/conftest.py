"""Shared pieces of the reliability suite: a tiny model + TREC folder, configs, subprocess runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tinydata import make_trec_dir, save_tiny_model

#: metric fields that are timings (differ from run to run by nature); every other field must match
TIMING_KEYS = {"score_wall_s", "pairs_per_s"}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reliability")
    return {"data": make_trec_dir(root / "data"), "model": save_tiny_model(root / "model"), "root": root}


def write_config(path: Path, tiny: dict[str, Path], out: Path, *, max_steps: int = 12, every: int = 4,
                 dropout: float = 0.1, eval_sets: bool = True, extra: str = "", steps: str | None = None) -> Path:
    """A tiny training config: dropout > 0 so that a resume must restore the RNG to match."""
    sets = f'["{tiny["data"]}"]' if eval_sets else "[]"
    ckpts = f'{{steps: "{steps}"}}' if steps else f"{{every: {every}}}"
    path.write_text(f"""
model: {tiny['model']}
dtype: fp32
data: [{{kind: trec, path: {tiny['data']}}}]
group_size: 4
batch_queries: 2
max_steps: {max_steps}
lr: 1e-3
seed: 7
lora: {{rank: 2, alpha: 4, dropout: {dropout}}}
checkpoints: {ckpts}
eval: {{sets: {sets}, depth: 12}}
output_dir: {out}
{extra}
""")
    return path


def subprocess_env() -> dict[str, str]:
    """One thread per process: bit-identical comparisons need the same thread count in every run, and
    on a shared 2-core machine OpenMP spinning makes multi-threaded tiny runs 20x slower."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               TOKENIZERS_PARALLELISM="false")
    env.pop("LORANK_FAULT_INJECT", None)
    return env


def train_cmd(cfg: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lorank.cli", "train", str(cfg), *extra]


def run_train(cfg: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(train_cmd(cfg, *extra), env=env or subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)


def adapter_tensors(ckpt: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(ckpt / "adapter_model.safetensors"))


def assert_bit_identical(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), f"{k} differs (max abs diff {(a[k] - b[k]).abs().max().item():.3e})"


def metric_rows(run_dir: Path) -> list[dict]:
    import json

    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return sorted(({k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows),
                  key=lambda r: (r["eval_set"], r["step"]))


class one_thread:
    """In-process training with one torch thread, like the subprocesses (bit-identical comparisons)."""

    def __enter__(self):
        import torch

        self.n, self.omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"
        return self

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.n)
        if self.omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = self.omp


def train_here(cfg: Path, **overrides):
    """``lorank.train(cfg)`` in this process (one thread, no progress bar)."""
    from lorank.train.config import TrainConfig
    from lorank.train.run import train

    with one_thread():
        return train(TrainConfig.from_yaml(cfg, overrides or None), progress=False)


@pytest.fixture(scope="session")
def trained_run(tiny, tmp_path_factory) -> Path:
    """A finished tiny run with complete checkpoints at steps 2 and 4 (no evaluation: fast)."""
    root = tmp_path_factory.mktemp("trained")
    cfg = write_config(root / "train.yaml", tiny, root / "run", max_steps=4, every=2, eval_sets=False)
    train_here(cfg)
    return root / "run"


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    import shutil

    dst = tmp_path / "run"
    shutil.copytree(trained_run, dst)
    return dst
