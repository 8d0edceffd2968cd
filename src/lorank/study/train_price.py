"""A training run priced before it starts (``lorank train CONFIG --dry-run``; Python :func:`plan_training`): how many
training groups and optimizer steps it has, how many of them a resume would skip, and how long its training,
checkpoint evaluations, dense curve and test scorings take at the study's cost basis (:mod:`lorank.study.cost`: the
rates measured on the 2-core CPUs, in the precision this machine would train in, scaled by the model's body
parameters; on a GPU the study's GPU rates). Nothing is trained, mined or loaded beyond the data's query lists and
the model's config.

Groups an epoch are queries (``unit: query``) or (query, positive) pairs (``unit: positive``), as the training
dataset counts them. The count is exact for sources read as they are (``trec``, ``tevatron``, ``hardneg``,
``triples``); for a ``kind: msmarco`` source it counts the folder's queries with a judged positive, an upper bound:
mining (on the fly, or the negatives file) drops queries whose positives all lie in an evaluation pool or that get
no negatives, and the run counts them. Steps over ``epochs`` follow the HF Trainer: ceil(groups / batch_queries)
batches an epoch, ceil(that / grad_accum) optimizer steps, one process (under torchrun, divide by the processes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorank.layout.checkpoints import complete_checkpoints, step_of
from lorank.train.config import TrainConfig


@dataclass
class TrainPlan:
    """What :func:`plan_training` found: the run's size and its estimated seconds by part."""

    model: str
    device: str
    precision: str
    groups: int  # training groups an epoch: queries (unit: query) or (query, positive) pairs (unit: positive)
    groups_exact: bool  # False: an upper bound (a kind: msmarco source, before mining)
    steps: int
    steps_done: int  # the last complete checkpoint in output_dir (a resume starts after it)
    tokens: float  # estimated real training tokens of the whole run (the cost basis's tokens a pair)
    seconds: dict[str, float] = field(default_factory=dict)  # training, checkpoint evaluations, curve, test
    notes: list[str] = field(default_factory=list)

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())

    @property
    def left_s(self) -> float:
        """The estimate for what a resume still has to do (training pro rata; the evaluations as a whole)."""
        done = self.steps_done / self.steps if self.steps else 0.0
        return self.total_s - done * self.seconds.get("training", 0.0)


def count_groups(cfg: TrainConfig) -> tuple[int, bool]:
    """(training groups an epoch, exact?) of the config's data sources, without mining: one a query
    (``unit: query``) or one a (query, positive) pair (``unit: positive``), as :class:`~lorank.train.groups.GroupDataset`
    counts them."""
    from lorank.data.msmarco import load_msmarco_train
    from lorank.train.data_sources import build_pools

    total, exact = 0, True
    for src in cfg.data:
        if src.kind == "msmarco":
            ts = load_msmarco_train(src.path, cfg.data_root, rel_threshold=src.threshold(), max_queries=src.max_queries)
            total += len(ts.positives) if cfg.unit == "query" else sum(map(len, ts.positives.values()))
            exact = False
        else:
            pools, _ = build_pools([src], cfg.data_root, evaluated=[*cfg.eval.sets, *cfg.eval.test_sets],
                                   test_sets=cfg.eval.test_sets)
            total += len(pools) if cfg.unit == "query" else sum(len(p.positives) for p in pools)
    return total, exact


def optimizer_steps(cfg: TrainConfig, groups: int) -> int:
    """The run's optimizer steps: ``max_steps``, else ``epochs`` over ``groups`` as the HF Trainer counts them."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    batches = math.ceil(groups / cfg.batch_queries)
    return max(1, math.ceil(cfg.epochs * math.ceil(batches / cfg.grad_accum)))


def plan_training(config: TrainConfig | str | Path, overrides: dict[str, Any] | None = None,
                  device: str | None = None) -> TrainPlan:
    """Price the run ``config`` describes (see the module's docstring); ``device``: cpu or cuda (default: this
    machine's, as ``lorank study --dry-run``)."""
    from lorank.study import cost
    from lorank.study.plan import RATES, _device, count_params, model_config

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_yaml(config, overrides)
    device = device or _device()
    groups, exact = count_groups(cfg)
    steps = optimizer_steps(cfg, groups)
    out = Path(cfg.output_dir)
    done = max((step_of(c) or 0 for c in complete_checkpoints(out, warn=False)), default=0) if out.is_dir() else 0
    precision, why = cost.cpu_precision(cfg.dtype) if device == "cpu" else ("bf16", "cuda")
    mc = model_config(cfg.model)
    tc = {**cfg.model_dump(warnings=False), "max_steps": steps}
    plan = TrainPlan(cfg.model, device, precision, groups, exact, steps, min(done, steps), cost.train_tokens(tc))
    if mc is None:
        plan.notes.append(f"{cfg.model}: its config is not available offline, so the run cannot be priced")
        return plan
    n = count_params(mc)
    rates = cost.model_rates(device, cfg.model, n, RATES[device], precision, why)
    plan.seconds = {"training": cost.training_s(tc, n, rates),
                    "checkpoint evaluations": cost.checkpoint_evals_s(tc, n, rates),
                    "curve": cost.curve_estimate(tc, n, rates), "test sets": cost.test_estimate(tc, n, rates)}
    if rates.note:
        plan.notes.append(f"cost basis: {rates.note}")
    if not exact:
        plan.notes.append("groups: the msmarco folder's queries with a judged positive, an upper bound: mining drops "
                          "queries whose positives lie in an evaluation pool or that get no negatives (the run counts "
                          "them); mining on the fly is not priced")
    return plan
