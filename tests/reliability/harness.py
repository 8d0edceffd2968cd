"""Kill / interrupt a `lorank train` subprocess at a chosen moment, resume it, and compare with a clean run.

Used by test_crash_resume.py (a few trials in CI) and runnable on its own for many trials:

    .venv/bin/python -m tests.reliability.harness --trials 10 --out crash_trials.json
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.reliability.conftest import (
    adapter_tensors,
    assert_bit_identical,
    metric_rows,
    subprocess_env,
    train_cmd,
    write_config,
)

MAX_STEPS = 24  # 18 groups / 2 per step = 9 steps per epoch: the run crosses two epoch boundaries
EVERY = 4
MODES = ("kill-random-step", "kill-mid-save", "sigint", "sigterm")


@dataclass
class Trial:
    name: str
    mode: str
    target_step: int  # the random step (or the checkpoint, for kill-mid-save) picked for the fault
    seed: int
    signalled_at_step: int | None = None  # last step in the log when the signal was sent
    exit_code: int | None = None
    stderr_tail: str = ""
    checkpoints_at_fault: list[str] = field(default_factory=list)
    incomplete_at_fault: list[str] = field(default_factory=list)
    resume_exit_code: int | None = None
    resumed_from: str | None = None
    resume_stderr_tail: str = ""
    final_step: int | None = None
    identical_checkpoints: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    metrics_equal: bool | None = None
    losses_equal: bool | None = None
    tokens_equal: bool | None = None
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return (not self.differences and bool(self.metrics_equal) and bool(self.losses_equal)
                and self.resume_exit_code == 0)


def last_logged_step(run: Path) -> int:
    f = run / "train_log.jsonl"
    try:
        lines = f.read_bytes().split(b"\n")
    except FileNotFoundError:
        return 0
    for line in reversed(lines[:-1]):  # the part after the last newline may be cut mid-write
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


def _checkpoints(run: Path) -> tuple[list[str], list[str]]:
    from lorank.layout.checkpoints import checkpoint_problem, step_of

    dirs = sorted((d for d in run.glob("checkpoint-*") if d.is_dir() and step_of(d) is not None), key=step_of)
    return [d.name for d in dirs], [d.name for d in dirs if checkpoint_problem(d) is not None]


def start(cfg: Path, log: Any) -> subprocess.Popen:
    return subprocess.Popen(train_cmd(cfg), env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=log)


def _tail(path: Path, n: int = 20000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except FileNotFoundError:
        return ""


def fault_run(trial: Trial, cfg: Path, run: Path, timeout: float = 240) -> None:
    """Start training, wait for the trial's moment, deliver its fault; record what is on disk after."""
    log = run.parent / f"{trial.name}.fault.log"
    with open(log, "wb") as fh:
        _deliver(trial, start(cfg, fh), run, timeout)
    trial.checkpoints_at_fault, trial.incomplete_at_fault = _checkpoints(run)
    trial.stderr_tail = _tail(log)


def _deliver(trial: Trial, p: subprocess.Popen, run: Path, timeout: float) -> None:
    t_end = time.monotonic() + timeout
    sig = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM}.get(trial.mode, signal.SIGKILL)
    try:
        while p.poll() is None and time.monotonic() < t_end:
            if trial.mode == "kill-mid-save":
                if (run / f"checkpoint-{trial.target_step}").is_dir():
                    break  # the folder exists: HF is writing it right now (or has just finished)
                time.sleep(0.001)
            else:
                if last_logged_step(run) >= trial.target_step:
                    break
                time.sleep(0.005)
        trial.signalled_at_step = last_logged_step(run)
        if p.poll() is None:
            p.send_signal(sig)
        trial.exit_code = p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def train_in_process(cfg: Path) -> tuple[int, str]:
    """``lorank train CFG`` in this process (CliRunner), one torch thread like the subprocesses; the exit
    code and the output + lorank's log lines. Saves the ~10 s of imports a subprocess pays."""
    import logging

    import torch
    from typer.testing import CliRunner

    from lorank.cli import app

    lines: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")

    logger, keep = logging.getLogger("lorank"), _Keep()
    level, threads, omp = logger.level, torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        res = CliRunner().invoke(app, ["train", str(cfg)])
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)
        torch.set_num_threads(threads)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp
    extra = f"\n{type(res.exception).__name__}: {res.exception}" if res.exception and res.exit_code != 2 else ""
    return res.exit_code, "\n".join(lines) + "\n" + res.output + extra


def resume_run(trial: Trial, cfg: Path, run: Path, timeout: float = 300, in_process: bool = False) -> None:
    if in_process:
        trial.resume_exit_code, out = train_in_process(cfg)
        trial.resume_stderr_tail = out[-20000:]
    else:
        log = run.parent / f"{trial.name}.resume.log"
        with open(log, "wb") as fh:
            trial.resume_exit_code = subprocess.run(train_cmd(cfg), env=subprocess_env(), stdout=subprocess.DEVNULL,
                                                    stderr=fh, timeout=timeout).returncode
        trial.resume_stderr_tail = _tail(log)
    summary = json.loads((run / "train_summary.json").read_text()) if (run / "train_summary.json").is_file() else {}
    trial.resumed_from = summary.get("resumed_from")
    trial.final_step = summary.get("steps")


def compare(trial: Trial, base: Path, run: Path) -> None:
    """Every checkpoint of the clean run must exist in the resumed one with bit-identical weights;
    metrics, per-step losses and token counts must match."""
    for c in sorted(base.glob("checkpoint-*")):
        other = run / c.name
        if not other.is_dir():
            trial.differences.append(f"{c.name} missing")
            continue
        try:
            assert_bit_identical(adapter_tensors(c), adapter_tensors(other))
            trial.identical_checkpoints.append(c.name)
        except AssertionError as e:
            trial.differences.append(f"{c.name}: {e}")
    trial.metrics_equal = metric_rows(base) == metric_rows(run)
    trial.losses_equal = _losses(base) == _losses(run)
    sb, sr = (json.loads((d / "train_summary.json").read_text()) for d in (base, run))
    trial.tokens_equal = (sb["tokens"], sb["padded_tokens"]) == (sr["tokens"], sr["padded_tokens"])


def _losses(run: Path) -> list[tuple[int, float, float]]:
    rows = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines() if x.strip()]
    return [(r["step"], r["loss"], r["grad_norm"]) for r in rows if "loss" in r]


def make_trials(n_random: int, n_mid_save: int, n_sigint: int, n_sigterm: int, seed: int) -> list[Trial]:
    rng = random.Random(seed)
    trials = []
    for i in range(n_random):  # the first one resumes mid-epoch in epoch 1 or 2 (the harder case)
        lo = 3 * EVERY + 1 if i == 0 else 1
        trials.append(Trial(f"kill-random-{i}", "kill-random-step", rng.randint(lo, MAX_STEPS - 1), seed))
    for i in range(n_mid_save):
        trials.append(Trial(f"kill-mid-save-{i}", "kill-mid-save",
                            EVERY * rng.randint(1, MAX_STEPS // EVERY), seed))
    for mode, n in (("sigint", n_sigint), ("sigterm", n_sigterm)):
        for i in range(n):  # not in the last checkpoint interval: the run must still be training
            trials.append(Trial(f"{mode}-{i}", mode, rng.randint(1, MAX_STEPS - EVERY - 1), seed))
    return trials


def run_all(root: Path, tiny: dict[str, Path], trials: list[Trial], workers: int = 2,
            in_process: bool = False) -> tuple[Path, list[Trial]]:
    """The clean baseline run and the trials. The fault runs are subprocesses, ``workers`` at a time (one
    thread each); the baseline and the resumes are subprocesses too, or with ``in_process`` run here
    (the same CLI command through CliRunner, cheaper)."""
    base = root / "baseline"
    cfg = write_config(root / "baseline.yaml", tiny, base, max_steps=MAX_STEPS, every=EVERY)
    with ThreadPoolExecutor(workers) as pool:
        fb = None if in_process else pool.submit(subprocess.run, train_cmd(cfg), env=subprocess_env(),
                                                 capture_output=True, text=True, timeout=300)
        futures = [pool.submit(_faults_only, t, root, tiny) for t in trials]
        if in_process:
            code, out = train_in_process(cfg)
        else:
            done = fb.result()
            code, out = done.returncode, done.stderr
        if code != 0:
            raise RuntimeError(f"baseline training failed:\n{out[-3000:]}")
        for f in futures:
            f.result()
        if in_process:
            for t in trials:
                _resume_and_compare(t, root, base, True)
        else:
            for f in [pool.submit(_resume_and_compare, t, root, base) for t in trials]:
                f.result()
    return base, trials


def _faults_only(trial: Trial, root: Path, tiny: dict[str, Path]) -> None:
    run = root / trial.name
    cfg = write_config(root / f"{trial.name}.yaml", tiny, run, max_steps=MAX_STEPS, every=EVERY)
    fault_run(trial, cfg, run)


def _resume_and_compare(trial: Trial, root: Path, base: Path, in_process: bool = False) -> None:
    t0 = time.perf_counter()
    run = root / trial.name
    resume_run(trial, root / f"{trial.name}.yaml", run, in_process=in_process)
    if trial.resume_exit_code == 0:
        compare(trial, base, run)
    trial.wall_s = round(time.perf_counter() - t0, 1)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    from tests.tinydata import make_trec_dir, save_tiny_model

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=4, help="kill-at-random-step trials")
    ap.add_argument("--mid-save", type=int, default=None, help="kill-mid-save trials (default: trials // 2)")
    ap.add_argument("--sigint", type=int, default=2)
    ap.add_argument("--sigterm", type=int, default=1)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--in-process", action="store_true", help="baseline and resumes in this process")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        tiny = {"data": make_trec_dir(root / "data"), "model": save_tiny_model(root / "model")}
        trials = make_trials(a.trials, a.trials // 2 if a.mid_save is None else a.mid_save, a.sigint, a.sigterm,
                             a.seed)
        t0 = time.perf_counter()
        _, trials = run_all(root, tiny, trials, a.workers, a.in_process)
        rows = [dict(asdict(t), ok=t.ok) for t in trials]
    for t in trials:
        print(f"{t.name:18s} step {t.signalled_at_step!s:>3} exit {t.exit_code!s:>4} ckpts {len(t.checkpoints_at_fault)} "
              f"incomplete {t.incomplete_at_fault} resumed_from {Path(t.resumed_from).name if t.resumed_from else None} "
              f"identical {len(t.identical_checkpoints)} metrics {t.metrics_equal} losses {t.losses_equal} "
              f"tokens {t.tokens_equal} ok {t.ok}")
    summary = {"seed": a.seed, "trials": len(trials), "ok": sum(t.ok for t in trials),
               "wall_s": round(time.perf_counter() - t0, 1), "rows": rows}
    if a.out:
        a.out.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))
    return 0 if all(t.ok for t in trials) else 1


if __name__ == "__main__":
    sys.exit(main())
