"""Run one study step in its own process: ``python -m lorank.study.worker STEP.json``.

A crash (or an out-of-memory kill) here is recorded by the executor and does not stop the study.
"""
from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from lorank.ablate.run import ablate
from lorank.ablate.windows import PAPER_WINDOW
from lorank.analyze import run_analysis
from lorank.atomic import atomic_write_json
from lorank.layout.checkpoints import complete_checkpoints
from lorank.layout.study import run_dir as study_run_dir
from lorank.progress import ProgressLines
from lorank.subject import resolve_subject
from lorank.train.config import TrainConfig
from lorank.train.run import train


def run_step(step: dict[str, Any]) -> dict[str, Any]:
    kind, payload = step["kind"], step["payload"]
    study = Path(step["study_dir"])
    out = study / step["out_dir"]
    # an external adapter's folder (lorank.study.external), else the study's own run
    run_dir = Path(payload["adapter_path"]) if payload.get("adapter_path") else study_run_dir(study, step["run_id"])
    if kind == "train":
        cfg = TrainConfig.from_dict({**payload["config"], "output_dir": str(out)})
        res = train(cfg, progress=False)
        last = [r for r in res.metrics if r["step"] == res.steps]
        return {"steps": res.steps, "tokens_per_s": round(res.tokens_per_s, 1), "final": last}
    if kind == "ablate":
        subject = resolve_subject(run_dir, payload["eval"], data_root=payload.get("data_root"))
        res = ablate(subject, payload["sweeps"], payload["depth"], out, use_cache=payload.get("use_cache", True),
                     window=payload.get("window", 11), max_queries=payload.get("max_queries"),
                     target_window=tuple(payload.get("target_window", PAPER_WINDOW)),
                     # a line every 30 s in the step's log (its sequences, all configurations of the sweep)
                     progress=lambda sweep, total: ProgressLines(f"ablate {sweep} (sequences)", total,
                                                                 out=sys.stdout))
        return {"sweeps": {k: {"wall_s": v["wall_s"], "cost_fraction": v["cost_fraction"]}
                           for k, v in res["sweeps"].items()}}
    if kind == "analyze":
        options = dict(payload.get("options") or {})
        if payload.get("data_root") and payload["kind"] in ("probe", "patch", "ltr"):
            options.setdefault("data_root", payload["data_root"])
        adapter: Any = run_dir
        if payload.get("against"):
            options["other"] = study_run_dir(study, payload["against"])
        elif payload["kind"] == "compare" and payload.get("adapter_path"):  # the plan refuses this already
            raise ValueError(f"compare on the external adapter {run_dir} needs `against` (one study run)")
        elif payload["kind"] == "compare":  # no counterpart run: the run's first checkpoint vs its last
            ckpts = complete_checkpoints(run_dir)
            if len(ckpts) < 2:
                raise ValueError(f"compare without `against` needs 2+ checkpoints in {run_dir}, found {len(ckpts)}")
            adapter, options["other"] = ckpts[-1], ckpts[0]
        res = run_analysis(payload["kind"], adapter, out, **options)
        return {"summary": _small(res)}
    raise ValueError(f"unknown step kind {kind!r}")


def _small(obj: Any) -> Any:
    """A short JSON-able summary of a result (drops big arrays)."""
    if isinstance(obj, dict):
        return {k: _small(v) for k, v in list(obj.items())[:20] if not isinstance(v, (list, dict)) or len(v) < 50}
    if isinstance(obj, (list, tuple)):
        return [_small(v) for v in obj[:50]]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def interruptible() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt here, whatever the worker inherited: a study started in the
    background by a non-interactive shell starts with SIGINT *ignored*, and the executor stops a step by sending
    it SIGINT. (A training run's own handler, :class:`lorank.train.callbacks.GracefulStop`, replaces these while
    it trains and saves a checkpoint first.) An interrupted ablation keeps its sweeps' saved chunks."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def call_facts() -> dict[str, Any]:
    """What this call ran with that only its own process knows: torch's intra-op threads (None where torch was
    never loaded)."""
    torch = sys.modules.get("torch")
    return {"torch_threads": torch.get_num_threads() if torch is not None else None}


def main(argv: list[str] | None = None) -> int:
    """``STEP.json [RESULT.json [CALL.json]]``: run the step, write its result; CALL.json gets :func:`call_facts`
    however the call ends (ok, an error, a signal), for the executor's call ledger."""
    argv = sys.argv[1:] if argv is None else argv
    interruptible()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    step = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        result = run_step(step)
    finally:
        if len(argv) > 2:
            atomic_write_json(argv[2], call_facts())
    atomic_write_json(argv[1] if len(argv) > 1 else Path(argv[0]).with_suffix(".result.json"), result)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
