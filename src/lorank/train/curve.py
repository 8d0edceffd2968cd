"""Dense checkpoint curves (``eval.curve``): a cheap evaluation schedule beside the full one of saved checkpoints.

Every ``every`` optimizer steps, and at the last, the model in memory is scored on the curve sets (``eval.sets`` when
``curve.sets`` is null) at the curve depth, with its LoRA merged while it scores and the exact weights put back
(:class:`~lorank.train.checkpoint_eval.CheckpointEvaluator`'s machinery), so training goes on from the very weights it
had. Each point is one row of ``curve.jsonl`` (step, eval_set, role "dev", depth, the measures, pairs, score_wall_s)
and one TREC run ``runs_trec/curve-{step}.{set}.run`` (per-query values for the findings), both written atomically.
A resumed run skips the points already written. The scoring time is not training time (train_summary.json's
``curve_s`` is subtracted like the checkpoint evaluations'). A curve point selects nothing: it is never a checkpoint,
and studies add its rows to results.csv with ``source: curve``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from lorank.train.config import EvalSpec
from lorank.evaluation import write_run
from lorank.layout.run import TREC_CURVE, append_curve, curve_file, read_curve, trec_run_file
from lorank.train.checkpoint_eval import CheckpointEvaluator

log = logging.getLogger("lorank.train")
CURVE_FIELDS = ("step", "eval_set", "role", "depth", "ndcg_cut_10", "recip_rank_10", "pairs", "score_wall_s")
__all__ = ["CURVE_FIELDS", "CurveEvaluator", "CurveOnStep", "curve_steps"]


def curve_steps(max_steps: int, every: int) -> list[int]:
    """The steps a run of ``max_steps`` scores its curve at: every ``every`` steps and the last."""
    return sorted(set(range(every, max_steps + 1, every)) | ({max_steps} if max_steps > 0 else set()))


class CurveEvaluator(CheckpointEvaluator):
    """Scores the model in memory on the curve sets at the curve depth into ``curve.jsonl`` (not metrics.jsonl)."""

    def __init__(self, encoder: Any, pad_id: int, spec: EvalSpec, out_dir: Path, data_root: str | None = None,
                 merge_lora: bool | None = None):
        curve = spec.curve
        if curve is None:
            raise ConfigError("eval.curve is not set: no curve to score")
        sets = list(curve.sets) if curve.sets is not None else list(spec.sets)
        update = {"sets": sets, "depth": curve.depth, "interpolate": []}
        if "test_sets" in type(spec).model_fields:  # test sets are never scored on a model in training
            update["test_sets"] = []
        cspec = spec.model_copy(update=update)
        super().__init__(encoder, pad_id, cspec, out_dir, data_root, merge_lora)
        self.every = curve.every

    def done_steps(self) -> set[tuple[int, str]]:
        return {(r["step"], r["eval_set"]) for r in read_curve(self.out_dir)}

    def __call__(self, model: Any, step: int, ckpt_dir: Path | None = None) -> list[dict[str, Any]]:
        rows = []
        depths = {(r["step"], r["eval_set"]): r.get("depth") for r in read_curve(self.out_dir)}
        for name, rs in self.sets.items():
            if (step, name) in depths:  # written before a resume: the same weights, scored already
                self.check_depth(depths[(step, name)], step, name, curve_file(self.out_dir))
                continue
            row, run, _ = self.scored_row(model, step, name, rs, "dev")
            write_run(trec_run_file(self.out_dir, TREC_CURVE, step, name), run, tag=f"lorank-curve-{step}")
            self.total_s += row["score_wall_s"]
            append_curve(self.out_dir, row)  # after its run file: a row means both are there
            log.info("curve step %d %s (top-%d): nDCG@10 %.4f", step, name, self.spec.depth,
                     row.get("ndcg_cut_10", float("nan")))
            rows.append(row)
        return rows


class CurveOnStep(TrainerCallback):
    """Score the curve after every ``every``-th optimizer step and after the last (before that step's checkpoint,
    if any, is saved)."""

    def __init__(self, evaluator: CurveEvaluator):
        self.evaluator = evaluator

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        step = state.global_step
        if not state.is_world_process_zero or model is None or step < 1:
            return
        if step % self.evaluator.every == 0 or step >= state.max_steps:
            self.evaluator(model, step)
