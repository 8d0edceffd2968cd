"""eval.test_sets: scored once, on the final model of a finished training run (role "test"), never on an
intermediate checkpoint, not when a signal stopped training, and not again on a resume; every metrics row has its
role. A tiny random model on synthetic folders."""
from __future__ import annotations

import json
import signal

import pytest

from lorank.train.callbacks import GracefulStop
from lorank.train.config import TrainConfig
from tests.tinydata import make_trec_dir, save_tiny_model


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("testsets")
    return root, make_trec_dir(root / "dev"), make_trec_dir(root / "held-out", seed=1, first_qid=500), \
        save_tiny_model(root / "model")


def _cfg(tiny, out, **kw):
    root, dev, held, model = tiny
    return TrainConfig.from_dict({
        "model": str(model), "dtype": "fp32", "data": [{"kind": "trec", "path": str(dev)}], "group_size": 4,
        "batch_queries": 2, "max_steps": 4, "lr": 1e-3, "lora": {"rank": 2, "alpha": 4, "dropout": 0.0},
        "checkpoints": {"steps": "2,4"}, "eval": {"sets": [str(dev)], "test_sets": [str(held)], "depth": 12},
        "output_dir": str(out), **kw})


def test_test_sets_are_scored_once_on_the_final_model_only(tiny):
    from lorank.train.run import train

    root, dev, held, _ = tiny
    out = root / "run"
    res = train(_cfg(tiny, out), progress=False)
    rows = _rows(out)
    assert sorted((r["eval_set"], r["step"], r["role"]) for r in rows) == [
        ("dev", 2, "dev"), ("dev", 4, "dev"), ("held-out", 4, "test")]
    assert (out / "runs_trec" / "checkpoint-4.held-out.run").is_file()
    assert not (out / "runs_trec" / "checkpoint-2.held-out.run").exists()
    assert [r["role"] for r in res.metrics if r["eval_set"] == "held-out"] == ["test"]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["test_eval_s"] > 0 and (out / "checkpoints.png").is_file()
    # a resume of the finished run trains nothing and scores nothing again
    before = (out / "metrics.jsonl").read_text()
    train(_cfg(tiny, out), progress=False)
    assert (out / "metrics.jsonl").read_text() == before
    assert json.loads((out / "train_summary.json").read_text())["test_eval_s"] == 0


def test_a_run_stopped_by_a_signal_scores_no_test_set_until_it_finishes(tiny, monkeypatch):
    from lorank.train import run as run_mod
    from lorank.train.run import TrainingInterrupted, train

    class StopAtStep2(GracefulStop):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 2 and self.signum is None:
                self.signum = signal.SIGTERM
            return super().on_step_end(args, state, control, **kw)

    root, *_ = tiny
    out = root / "stopped"
    monkeypatch.setattr(run_mod, "GracefulStop", StopAtStep2)
    with pytest.raises(TrainingInterrupted):
        train(_cfg(tiny, out), progress=False)
    assert all(r["role"] == "dev" for r in _rows(out)) and {r["step"] for r in _rows(out)} == {2}
    monkeypatch.setattr(run_mod, "GracefulStop", GracefulStop)
    train(_cfg(tiny, out), progress=False)  # resumed to the end: now the final model is scored on the test set
    assert [(r["step"], r["role"]) for r in _rows(out) if r["eval_set"] == "held-out"] == [(4, "test")]


def test_only_test_sets_and_no_dev_set_still_score_the_final_model(tiny):
    from lorank.train.run import train

    root, _, held, _ = tiny
    out = root / "test-only"
    train(_cfg(tiny, out, eval={"sets": [], "test_sets": [str(held)], "depth": 12}), progress=False)
    assert [(r["eval_set"], r["step"], r["role"]) for r in _rows(out)] == [("held-out", 4, "test")]


def test_the_curve_draws_a_test_row_as_one_marker_not_a_line(tmp_path, monkeypatch):
    import matplotlib.axes

    from lorank.layout.run import append_metrics
    from lorank.train.checkpoint_eval import plot_checkpoint_curve

    for step, s, role, v in ((2, "dl19", "dev", 0.5), (4, "dl19", "dev", 0.6), (4, "trec-dl-2022", "test", 0.4),
                             (2, "trec-dl-2022", "test", 0.3)):
        append_metrics(tmp_path, {"step": step, "eval_set": s, "role": role, "ndcg_cut_10": v, "recip_rank_10": v})
    calls = []
    real = matplotlib.axes.Axes.plot

    def spy(self, *args, **kw):
        calls.append((list(args[0]), kw))
        return real(self, *args, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    assert plot_checkpoint_curve(tmp_path) is not None
    test_calls = [(xs, kw) for xs, kw in calls if "trec-dl-2022" in kw.get("label", "")]
    assert len(test_calls) == 2  # one a panel
    # both test scorings (eval.test_steps) as markers, never joined by a line
    assert all(xs == [2, 4] and kw["ls"] == "none" and "test" in kw["label"] for xs, kw in test_calls)
    assert [xs for xs, kw in calls if kw.get("label", "").startswith("dl19")] == [[2, 4], [2, 4]]


def test_test_steps_score_the_listed_saved_checkpoints_after_training_on_their_own_weights(tiny):
    """eval.test_steps: [2, 4] scores checkpoint-2 and the final one on the test set once training has finished, each
    with its own weights (checkpoint-2's run differs from the final model's); the default identity is unchanged."""
    from lorank.train.run import train

    root, dev, held, _ = tiny
    out = root / "steps"
    cfg = _cfg(tiny, out, eval={"sets": [str(dev)], "test_sets": [str(held)], "depth": 12, "test_steps": [2, 4]})
    train(cfg, progress=False)
    test_rows = sorted((r["step"], r["role"]) for r in _rows(out) if r["eval_set"] == "held-out")
    assert test_rows == [(2, "test"), (4, "test")]
    r2 = (out / "runs_trec" / "checkpoint-2.held-out.run").read_text()
    r4 = (out / "runs_trec" / "checkpoint-4.held-out.run").read_text()
    assert r2 != r4  # scored on checkpoint-2's weights, not the final model's
    # the final model's test run equals the one a default (final-only) run writes
    out2 = root / "steps-default"
    train(_cfg(tiny, out2), progress=False)
    assert (out2 / "runs_trec" / "checkpoint-4.held-out.run").read_text().split()[2::6] == r4.split()[2::6]
    assert "test_steps" not in _cfg(tiny, out2).identity()["eval"]
    assert cfg.identity()["eval"]["test_steps"] == [2, 4]


@pytest.mark.precision
def test_a_checkpoint_reranked_after_training_gets_its_in_training_scores(tiny, monkeypatch):
    """On a bf16 machine (LORANK_BF16=1 pins it on any CPU) a checkpoint is loaded for inference with bf16 base
    weights, as its run trained and evaluated it, so ``lorank rerank`` (LoRA merged) gives the very scores of the
    run's own checkpoint evaluation; fp32 weights under bf16 autocast did not (results/score_dtype.json). Where the
    decision is fp32, the weights load in fp32."""
    import torch

    from lorank.data import resolve_eval_set
    from lorank.reranker import Reranker
    from lorank.train.run import train

    root, dev, _, _ = tiny
    out = root / "bf16-run"
    monkeypatch.setenv("LORANK_BF16", "1")
    train(_cfg(tiny, out, dtype="bf16", eval={"sets": [str(dev)], "depth": 12}), progress=False)
    own: dict[str, dict[str, float]] = {}
    for line in (out / "runs_trec" / "checkpoint-4.dev.run").read_text().splitlines():
        q, _, d, _, s, _ = line.split()
        own.setdefault(q, {})[d] = float(s)
    assert {r["weights"] for r in _rows(out)} == {"bf16"}  # the rows say what the forward read
    rs = resolve_eval_set(str(dev))
    rr = Reranker.from_adapter(out / "checkpoint-4")
    assert rr.model.base_model.model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert rr.model.base_model.model.score.modules_to_save.default.weight.dtype == torch.float32  # the head
    rr.scorer.merge_lora = True
    scores = rr.scorer.rerank(rs.queries, rs.passages, rs.run, depth=12)
    assert sum(len(v) for v in scores.values()) == sum(min(12, len(v)) for v in rs.run.values()) > 0
    assert all(scores[q][d] == own[q][d] for q in scores for d in scores[q])
    # a scorer asked for fp32 gets fp32 weights: the weights follow the scorer's own decision
    asked = Reranker.from_adapter(out / "checkpoint-4", bf16=False)
    assert {p.dtype for p in asked.model.parameters()} == {torch.float32} and asked.scorer.precision == "fp32"
    monkeypatch.setenv("LORANK_BF16", "0")
    rr32 = Reranker.from_adapter(out / "checkpoint-4")
    assert {p.dtype for p in rr32.model.parameters()} == {torch.float32}
