"""Evaluate checkpoints on eval sets: rerank, write a TREC run, append a metrics row, plot the curve.

Every metrics row carries its set's ``role`` (:mod:`lorank.data.roles`): the dev sets (``eval.sets``) are scored on
every scheduled checkpoint; the test sets (``eval.test_sets``) once, on the final model (:meth:`CheckpointEvaluator.
score_test`), and nothing here chooses by a test row."""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from lorank.train.config import EvalSpec
from lorank.data import resolve_eval_set
from lorank.data.roles import TEST, role_of
from lorank.data.sources import eval_label
from lorank.errors import ConfigError
from lorank.evaluation import evaluate, write_run
from lorank.layout.run import (TREC_CHECKPOINT, append_metrics, metrics_file, plot_file, read_curve, read_metrics,
                               trec_run_file)
from lorank.lora.merge import merge_by_default, merged_lora
from lorank.precision import weights_dtype
from lorank.plotting import METRIC_LABELS, pyplot, save_figure
from lorank.inference.engine import Scorer
from lorank.inference.runs import interpolate_runs, rerank_to_run

log = logging.getLogger("lorank.train")


class CheckpointEvaluator:
    """Scores a model's checkpoint on the eval sets, with its LoRA deltas merged into the base weights while it
    scores (:func:`lorank.lora.merge.merged_lora`: 1.37x on DL19 top-50 in fp32, session 13) and the exact
    base weights put back after, so a model in training goes on from the very weights it had. ``merge_lora``
    (else ``spec.merge_lora``, else :func:`~lorank.lora.merge.merge_by_default`: on CPUs) decides."""

    def __init__(self, encoder: Any, pad_id: int, spec: EvalSpec, out_dir: Path, data_root: str | None = None,
                 merge_lora: bool | None = None):
        self.encoder = encoder
        self.merge_lora = merge_lora if merge_lora is not None else spec.merge_lora
        self.pad_id = pad_id
        self.spec = spec
        self.out_dir = Path(out_dir)
        self.sets = {eval_label(name): resolve_eval_set(name, data_root).subset(spec.max_queries) for name in spec.sets}
        #: scored once, on the final model (score_test), never on the checkpoints one chooses among
        self.test_sets = {eval_label(name): resolve_eval_set(name, data_root).subset(spec.max_queries)
                          for name in spec.test_sets}
        self.total_s = 0.0  # dev scoring time spent so far (subtracted from training time in the summary)
        self.test_s = 0.0  # test scoring time (after training)

    def first_stage(self) -> dict[str, dict[str, float]]:
        """Metrics of each eval set's first-stage run (the dashed baseline in the curve)."""
        return {name: dict(evaluate(rs.qrels, rs.run, rel_threshold=self.spec.rel_threshold).aggregate)
                for name, rs in self.sets.items() if rs.qrels}

    def done_steps(self) -> set[tuple[int, str]]:
        return {(r["step"], r["eval_set"]) for r in read_metrics(self.out_dir)}

    def role(self, name: str) -> str:
        return role_of(name, self.spec.test_sets)

    def __call__(self, model: Any, step: int, ckpt_dir: Path | None = None) -> list[dict[str, Any]]:
        """Score the dev sets (``eval.sets``) on this checkpoint (those not yet scored)."""
        return self._score(model, step, self.sets, test=False)

    def score_test(self, model: Any, step: int) -> list[dict[str, Any]]:
        """Score the test sets (``eval.test_sets``) on a frozen checkpoint's weights, at its step (those not yet
        scored): rows with role ``test``. Call it only once training has finished (the final checkpoint, or the saved
        steps ``eval.test_steps`` lists), never while a checkpoint can still be chosen."""
        return self._score(model, step, self.test_sets, test=True)

    def rerank_set(self, model: Any, rs: Any) -> tuple[dict[str, Any], dict[str, Any], str, bool, float]:
        """`rs` reranked at the evaluation depth, with the LoRA merged while it scores when that is the choice:
        (the run, the scores, the precision, whether LoRA was merged, the wall time)."""
        t0 = time.perf_counter()
        scorer = Scorer(model, self.encoder, self.pad_id, batch_tokens=self.spec.batch_tokens, bf16=self.spec.bf16)
        merge = self.merge_lora if self.merge_lora is not None else merge_by_default(scorer.device)
        with (merged_lora(model) if merge else contextlib.nullcontext(0)) as n_merged:
            scores = scorer.rerank(rs.queries, rs.passages, rs.run, depth=self.spec.depth)
        run = rerank_to_run(scores, rs.run, self.spec.depth)
        return run, scores, scorer.precision, bool(n_merged), time.perf_counter() - t0

    def check_depth(self, have: Any, step: int, name: str, where: Path) -> None:
        """Refuse a (step, set) already scored at another depth in ``where``: its row and TREC run would be mixed up
        with this depth's (a row without a depth predates the field and is taken as this one's)."""
        if have is not None and have != self.spec.depth:
            raise ConfigError(f"{where}: step {step} on {name} is already evaluated at depth {have}, not "
                              f"{self.spec.depth}; its row and TREC run would be mixed up with this one's: score this "
                              "depth into another folder")

    def scored_row(self, model: Any, step: int, name: str, rs: Any, role: str
                   ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """`rs` reranked and evaluated on ``model`` at ``step``: (the row every evaluation writes, the run, the
        scores). The one home of a scored row's fields, for the checkpoints' metrics.jsonl and the curve's
        curve.jsonl alike."""
        run, scores, precision, merged, wall = self.rerank_set(model, rs)
        res = evaluate(rs.qrels, run, rel_threshold=self.spec.rel_threshold)
        n_pairs = sum(len(v) for v in scores.values())
        row = {"step": step, "eval_set": name, "role": role, "depth": self.spec.depth,
               **{k: round(float(v), 6) for k, v in res.aggregate.items()},
               "pairs": n_pairs, "score_wall_s": round(wall, 2), "pairs_per_s": round(n_pairs / wall, 2),
               "precision": precision, "lora_merged": merged, "weights": weights_dtype(model)}
        return row, run, scores

    def _score(self, model: Any, step: int, sets: dict[str, Any], test: bool) -> list[dict[str, Any]]:
        rows = []
        depths = {(r["step"], r["eval_set"]): r.get("depth") for r in read_metrics(self.out_dir)}  # the done ones
        for name, rs in sets.items():
            role = TEST if test else self.role(name)
            if (step, name) in depths:
                self.check_depth(depths[(step, name)], step, name, metrics_file(self.out_dir))
                continue
            row, run, scores = self.scored_row(model, step, name, rs, role)
            if test:
                self.test_s += row["score_wall_s"]
            else:
                self.total_s += row["score_wall_s"]
            if self.spec.write_runs:
                write_run(trec_run_file(self.out_dir, TREC_CHECKPOINT, step, name), run, tag=f"lorank-{step}")
            append_metrics(self.out_dir, row)
            for alpha in self.spec.interpolate:
                fused = rerank_to_run(interpolate_runs(scores, rs.run, alpha), rs.run, self.spec.depth)
                fres = evaluate(rs.qrels, fused, rel_threshold=self.spec.rel_threshold)
                append_metrics(self.out_dir, {"step": step, "eval_set": f"{name}+bm25@{alpha:g}", "role": role,
                                              **{k: round(float(v), 6) for k, v in fres.aggregate.items()}})
            log.info("step %d %s (%s): nDCG@10 %.4f MRR@10 %.4f", step, name, role, row.get("ndcg_cut_10", float("nan")),
                     row.get("recip_rank_10", float("nan")))
            rows.append(row)
        return rows


def plot_checkpoint_curve(out_dir: Path, title: str | None = None, baselines: dict[str, dict[str, float]] | None = None,
                          queries_per_step: int | None = None,
                          pooled: tuple[str, dict[int, dict[str, float]], dict[str, float]] | None = None) -> Path | None:
    """nDCG@10 and MRR@10 vs training step (vs training queries seen, with ``queries_per_step``), one line per dev
    set; dashed first-stage baseline. A test set's rows (role ``test``: scored once training had finished, on the
    final checkpoint or the steps of ``eval.test_steps``) are markers at their steps, labelled test, never a line.
    ``pooled``: (label, step -> figures, the first stage's figures) of the dev sets pooled, the view that chooses the
    checkpoint: a thick black line with its dashed first stage."""
    rows = read_metrics(out_dir)
    curve = read_curve(out_dir)  # eval.curve's points: small markers on a thin line beside the checkpoints'
    if not rows and not curve:
        return None
    fig, axes = pyplot().subplots(1, 2, figsize=(10, 5.2), constrained_layout=True)
    for ax, key in zip(axes, ("ndcg_cut_10", "recip_rank_10")):
        label = METRIC_LABELS[key]
        for name in sorted({r["eval_set"] for r in rows} | {r["eval_set"] for r in curve}):
            line = None
            pts = sorted((r["step"], r[key]) for r in rows if r["eval_set"] == name and key in r)
            if pts and any(r.get("role", role_of(name)) == TEST for r in rows if r["eval_set"] == name):
                # scored once training had finished (the final checkpoint, or eval.test_steps): markers, no line
                ax.plot([p[0] * (queries_per_step or 1) for p in pts], [p[1] for p in pts], marker="*", ms=11,
                        ls="none", label=f"{name} (test: scored after training)")
            elif pts:
                xs = [p[0] * (queries_per_step or 1) for p in pts]
                line, = ax.plot(xs, [p[1] for p in pts], marker="o", label=f"{name} (reranked)")
                if baselines and name in baselines and key in baselines[name]:
                    ax.axhline(baselines[name][key], ls="--", color=line.get_color(), alpha=0.6,
                               label=f"{name} first stage (BM25)")
            cpts = sorted((r["step"], r[key], r.get("depth")) for r in curve if r["eval_set"] == name and key in r)
            if cpts:
                ax.plot([p[0] * (queries_per_step or 1) for p in cpts], [p[1] for p in cpts], marker=".", ms=3,
                        lw=0.8, alpha=0.7, color=line.get_color() if line is not None else None,
                        label=f"{name} (curve, top-{cpts[-1][2]})")
        if pooled is not None:
            name, by_step, first = pooled
            pts = sorted((st, f[key]) for st, f in by_step.items() if key in f)
            if pts:
                ax.plot([p[0] * (queries_per_step or 1) for p in pts], [p[1] for p in pts], marker="s", lw=2.2,
                        color="black", label=f"{name} pooled (chooses the checkpoint)")
            if key in first:
                ax.axhline(first[key], ls="--", color="black", alpha=0.6, label=f"{name} pooled first stage")
        ax.set_xlabel(f"training queries seen ({queries_per_step} a step)" if queries_per_step else "training step")
        ax.set_ylabel(label)
        ax.set_title(label + " by checkpoint")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)  # below: never over a point
    if title:
        fig.suptitle(title)
    return save_figure(fig, plot_file(out_dir))
