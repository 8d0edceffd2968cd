"""Where a lorank training step's time goes: ``torch.profiler`` (CPU activities) over real ``lorank.train`` steps.

    flock /tmp/lorank-heavy.lock nice -n 5 .venv/bin/python benchmarks/train_profile.py --steps 4 --warmup 2
    LORANK_BF16=0 .venv/bin/python benchmarks/train_profile.py --out results/train_profile_fp32.json

The run is ``benchmarks/train_speed.py``'s ``lorank-2x8`` configuration (SmolLM2-135M, LoRA r=8 alpha=64 dropout
0.1 on all 7 projections, 2 queries x G=8 fixed DL20 groups, AdamW), trained by ``lorank.train`` itself; the
profiler records the steps after ``--warmup`` (a ``TrainerCallback`` starts it at the first measured step and
stops it at the end). ``--set KEY=VALUE`` overrides a ``TrainConfig`` field (e.g. ``--set forward=hf``).

Every op's *self* CPU time (the calling thread's time inside the op, children excluded) goes to one category:

- ``gemm_big``: ``mm``/``addmm``/``bmm`` whose smallest dimension is > 64: the frozen projections' forward and
  activation-gradient matmuls;
- ``gemm_small``: matmuls with a dimension <= 64: LoRA's r=8 ``A``/``B`` matmuls and their gradients, the score head;
- ``attention``: scaled-dot-product attention kernels and their backward, and ``bmm`` (the packed forward's bf16
  attention is two batched matmuls; nothing else in a step calls bmm);
- ``dropout``: the LoRA dropout's random draws, mask and masked multiply (``random_``, ``bernoulli_``, ``ge``,
  ``where``, ``native_dropout``);
- ``cast``: dtype conversions (``_to_copy``, ``copy_``, ``to``);
- ``optimizer``: every op under ``Optimizer.step`` / ``zero_grad``;
- ``elementwise``: the rest of the tensor ops (RMSNorm, rotary, SiLU, residual adds, index/cat/reshape copies);
- ``python_dispatch``: the step's wall time not inside any op (Python, the Trainer, autograd bookkeeping).

Writes the shares, the top ops by self time and each category's ops to ``--out`` (JSON).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from train_speed import fixed_groups, lorank_config  # noqa: E402

CATEGORIES = ("gemm_big", "gemm_small", "attention", "dropout", "cast", "optimizer", "elementwise", "python_dispatch")
_GEMM = ("aten::mm", "aten::addmm", "aten::matmul")
_DROPOUT = ("aten::random_", "aten::bernoulli_", "aten::ge", "aten::where", "aten::native_dropout",
            "aten::native_dropout_backward")
_CAST = ("aten::_to_copy", "aten::copy_", "aten::to")


def category(ev: Any, in_optimizer: bool) -> str:
    name = ev.name
    if in_optimizer:
        return "optimizer"
    if name in _GEMM:
        dims = [d for shape in (ev.input_shapes or [])[:3] if shape for d in shape[-2:]]
        return "gemm_small" if dims and min(dims) <= 64 else "gemm_big"
    if name in ("aten::bmm", "aten::baddbmm") or "scaled_dot_product" in name or "flash_attention" in name or "attention" in name.lower():
        return "attention"
    if name in _DROPOUT:
        return "dropout"
    if name in _CAST:
        return "cast"
    return "elementwise"


def _under_optimizer(ev: Any) -> bool:
    p = ev
    while p is not None:
        if p.name.startswith(("Optimizer.step", "Optimizer.zero_grad")):
            return True
        p = p.cpu_parent
    return False


def analyse(prof: Any, wall_s: float, steps: int) -> dict[str, Any]:
    events = [e for e in prof.events() if e.device_type.name == "CPU"]
    main_thread = max(set(e.thread for e in events), key=lambda t: sum(e.self_cpu_time_total for e in events
                                                                       if e.thread == t))
    by_cat: dict[str, float] = defaultdict(float)
    by_op: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    inside = 0.0
    for e in events:
        if e.thread != main_thread or e.name.startswith(("Optimizer.", "ProfilerStep", "## ")):
            continue
        if e.name.startswith("autograd::engine") or e.name.endswith("Backward0") or e.name.endswith("Backward1"):
            # autograd's node wrappers: their self time is bookkeeping between the ops they call
            by_cat["python_dispatch"] += e.self_cpu_time_total / 1e6
            inside += e.self_cpu_time_total / 1e6
            continue
        cat = category(e, _under_optimizer(e))
        t = e.self_cpu_time_total / 1e6
        by_cat[cat] += t
        inside += t
        rec = by_op[(e.name, cat)]
        rec[0] += t
        rec[1] += 1
    by_cat["python_dispatch"] += max(wall_s - inside, 0.0)
    total = sum(by_cat.values())
    shares = {c: round(by_cat.get(c, 0.0) / total, 4) for c in CATEGORIES}
    top = sorted(by_op.items(), key=lambda kv: -kv[1][0])[:25]
    return {"wall_s": round(wall_s, 3), "step_s": round(wall_s / steps, 3), "seconds": {c: round(by_cat.get(c, 0.0), 3)
            for c in CATEGORIES}, "shares": shares,
            "top_ops": [{"op": n, "category": c, "self_s": round(t / steps, 4), "calls_per_step": int(k / steps),
                         "share": round(t / total, 4)} for (n, c), (t, k) in top]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="TrainConfig override")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "train_profile.json")
    a = ap.parse_args()

    import logging

    import torch
    import yaml
    from torch.profiler import ProfilerActivity, profile
    from transformers import TrainerCallback

    import lorank
    from lorank.atomic import atomic_write_json
    from lorank.train import trainer as trainer_mod
    from lorank.train.config import TrainConfig, _set_dotted
    from lorank.train.run import software_versions

    logging.disable(logging.WARNING)
    g, bq = 8, 2
    groups = fixed_groups(g, bq * (a.warmup + a.steps))
    trainer_mod.RerankTrainer._get_train_sampler = (  # type: ignore[method-assign]
        lambda self, *args, **kw: torch.utils.data.SequentialSampler(self.train_dataset))
    state: dict[str, Any] = {"tokens": 0}
    real_step = trainer_mod.RerankTrainer.training_step

    def counted(self: Any, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
        if state.get("prof") is not None:
            state["tokens"] += int(inputs["num_tokens"])
        return real_step(self, model, inputs, num_items_in_batch)

    trainer_mod.RerankTrainer.training_step = counted  # type: ignore[method-assign]

    class Profiled(TrainerCallback):
        def on_step_begin(self, args: Any, st: Any, control: Any, **kw: Any) -> None:
            if st.global_step == a.warmup and state.get("prof") is None:
                state["prof"] = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
                state["prof"].__enter__()
                state["t0"] = time.perf_counter()

        def on_step_end(self, args: Any, st: Any, control: Any, **kw: Any) -> None:
            if st.global_step == a.warmup + a.steps and state.get("prof") is not None and "wall" not in state:
                state["wall"] = time.perf_counter() - state["t0"]
                state["prof"].__exit__(None, None, None)

    orig_init = trainer_mod.RerankTrainer.__init__

    def init(self: Any, *args: Any, **kw: Any) -> None:
        orig_init(self, *args, **kw)
        self.add_callback(Profiled())

    trainer_mod.RerankTrainer.__init__ = init  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = lorank_config(groups, Path(tmp), g, bq, a.warmup + a.steps)
        for kv in a.set:
            k, _, v = kv.partition("=")
            _set_dotted(cfg, k, yaml.safe_load(v))
        lorank.train(TrainConfig.from_dict(cfg), progress=False, resume=False)
        resolved = json.loads((Path(tmp) / "run" / "config.json").read_text())
        summary = json.loads((Path(tmp) / "run" / "train_summary.json").read_text())
    res = analyse(state["prof"], state["wall"], a.steps)
    res["tokens_per_s"] = round(state["tokens"] / state["wall"], 1)
    out = {"command": "python benchmarks/train_profile.py " + " ".join(sys.argv[1:]), "steps": a.steps,
           "warmup": a.warmup, "overrides": a.set, "precision": resolved.get("precision"),
           "execution": summary.get("execution"), "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
           "threads": torch.get_num_threads(), "versions": software_versions(), **res,
           "note": "tokens_per_s here runs under the profiler (slower than train_speed.py's figure)"}
    atomic_write_json(a.out, out)
    print(f"{res['step_s']:.2f} s/step under the profiler, {res['tokens_per_s']} tokens/s")
    for c in CATEGORIES:
        print(f"  {c:16s} {res['shares'][c]:6.1%}")
    for r in res["top_ops"][:15]:
        print(f"  {r['op']:40s} {r['category']:12s} {r['self_s']*1000:8.1f} ms/step  {r['calls_per_step']:5d} calls  "
              f"{r['share']:6.1%}")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
