"""benchmarks/train_msmarco12k.py end to end on a tiny run: the curve from the run's checkpoints and from an exported
adapter kept elsewhere (``--adapter STEP=DIR``), the shipped step at its own depth (``--headline-step``), and the
evaluator's refusal to mix depths for one checkpoint."""
import json
import shutil
import sys

import pytest
import torch

from lorank.train.config import EvalSpec
from lorank.errors import ConfigError
from lorank.train.config import TrainConfig
from tests.benchmark_module import load_benchmark
from tests.tinydata import make_trec_dir, save_tiny_model



def _bench():
    return load_benchmark("train_msmarco12k")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from lorank.export import export_adapter
    from lorank.train.run import train

    root = tmp_path_factory.mktemp("bench12k")
    data = make_trec_dir(root / "data")
    model = save_tiny_model(root / "model")
    train(TrainConfig.from_dict({
        "model": str(model), "dtype": "fp32", "data": [{"kind": "trec", "path": str(data)}], "group_size": 4,
        "batch_queries": 2, "max_steps": 4, "lr": 1e-3, "lora": {"rank": 2, "alpha": 4, "dropout": 0.0},
        "checkpoints": {"steps": "2,4"}, "eval": {"sets": []}, "output_dir": str(root / "run")}), progress=False)
    # checkpoint-2 survives only as an exported adapter (as the curve's checkpoints do across machines)
    export_adapter(root / "run" / "checkpoint-2", root / "kept" / "checkpoint-2")
    shutil.rmtree(root / "run" / "checkpoint-2")
    return root, data


def test_curve_from_kept_adapters_and_the_headline_at_its_own_depth(tiny, monkeypatch):
    root, data = tiny
    out = root / "train.json"
    monkeypatch.setattr(sys, "argv", [
        "train_msmarco12k.py", "--run", str(root / "run"), "--sets", str(data), "--depth", "6",
        "--adapter", f"2={root / 'kept' / 'checkpoint-2'}", "--headline-step", "4", "--headline-depth", "12",
        "--out", str(out), "--note", "trained in one call"])
    assert _bench().main() == 0
    res = json.loads(out.read_text())
    assert res["notes"] == ["trained in one call"] and res["headline"]["training_queries_seen"] == 4 * 2
    assert [c["step"] for c in res["checkpoints"]] == [2, 4] and res["checkpoints_depth"] == [6]
    head = res["headline"]
    assert head["step"] == 4 and head["depth"] == 12 and res["best_dev_step"] == 4
    label = data.name
    assert res["best_dev_ndcg_cut_10"] == head["sets"][label]["ndcg_cut_10"]
    assert res["chosen_on"] == {"set": label, "role": "dev"} and "best_ndcg_cut_10" not in res
    assert head["vs_bm25"][label] and (root / "run" / "eval-top12" / "runs_trec" / f"checkpoint-4.{label}.run").is_file()
    # the top-6 and top-12 rankings are different evaluations, kept apart
    rows6 = [json.loads(x) for x in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {r["depth"] for r in rows6} == {6}
    # each evaluation records the precision it was scored in (runs scored on different CPUs can differ)
    assert {r["precision"] for r in rows6} <= {"bf16", "fp32"} and len(rows6) == 2
    assert all(c[label]["precision"] == rows6[0]["precision"] for c in res["checkpoints"])
    # each checkpoint: queries seen and its p-values against BM25
    assert [c["training_queries_seen"] for c in res["checkpoints"]] == [2 * 2, 4 * 2]
    assert all(0 <= c[label]["p_ndcg_cut_10_vs_bm25"] <= 1 for c in res["checkpoints"])
    assert (out.with_suffix(".png")).stat().st_size > 10_000


def test_a_checkpoint_evaluated_at_another_depth_is_an_error_not_a_skip(tiny):
    from lorank.reranker import Reranker
    from lorank.train.checkpoint_eval import CheckpointEvaluator

    root, data = tiny
    ev_dir = root / "mixed"
    rr = Reranker.from_adapter(root / "run" / "checkpoint-4")
    ev = CheckpointEvaluator(rr.encoder, int(rr.tokenizer.pad_token_id), EvalSpec(sets=[str(data)], depth=6), ev_dir)
    assert len(ev(rr.model, 4)) == 1
    assert ev(rr.model, 4) == []  # the same depth: done, skipped
    ev12 = CheckpointEvaluator(rr.encoder, int(rr.tokenizer.pad_token_id), EvalSpec(sets=[str(data)], depth=12), ev_dir)
    with pytest.raises(ConfigError, match="already evaluated at depth 6, not 12"):
        ev12(rr.model, 4)


@pytest.mark.parametrize("bf16,tol", [(False, {"rtol": 1e-4, "atol": 1e-5}), (True, {"rtol": 0, "atol": 2e-2})])
def test_merged_evaluation_scores_as_the_unmerged_one(tiny, bf16, tol):
    """In both precisions, whatever the CPU (auto would pick bf16 on an AMX CPU and fp32 on an AVX2 one); in bf16
    the merged weights are rounded once more than the LoRA path's, hence the bf16-sized tolerance."""
    import numpy as np

    from lorank.reranker import Reranker
    from lorank.train.checkpoint_eval import CheckpointEvaluator

    root, data = tiny
    spec = EvalSpec(sets=[str(data)], depth=12, bf16=bf16)
    runs = {}
    for merge in (False, True):
        rr = Reranker.from_adapter(root / "run" / "checkpoint-4", dtype="fp32")
        before = {k: v.clone() for k, v in rr.model.state_dict().items()}
        ev = CheckpointEvaluator(rr.encoder, int(rr.tokenizer.pad_token_id), spec, root / f"merge-{merge}-{bf16}",
                                 merge_lora=merge)
        rows = ev(rr.model, 4)
        assert len(rows) == 1 and rows[0]["lora_merged"] is merge
        merged = [bool(m.merged_adapters) for m in rr.model.modules() if hasattr(m, "lora_A")]
        assert merged and not any(merged)  # merged while it scored only
        after = rr.model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)  # the exact weights back, bit for bit
        lines = (root / f"merge-{merge}-{bf16}" / "runs_trec" / f"checkpoint-4.{data.name}.run").read_text().split("\n")
        runs[merge] = {tuple(x.split()[:3]): float(x.split()[4]) for x in lines if x}
    assert runs[True].keys() == runs[False].keys()
    keys = sorted(runs[False])
    np.testing.assert_allclose([runs[True][k] for k in keys], [runs[False][k] for k in keys], **tol)


@pytest.mark.parametrize("first", ["dl22", "dl22-splade", "trec-dl-2022"])
def test_the_benchmark_refuses_to_choose_a_checkpoint_on_a_test_set(tmp_path, first):
    """The best checkpoint is chosen on the first of --sets: a test set there is refused before anything is read."""
    with pytest.raises(SystemExit, match=rf"--sets: {first} is a test set of the evaluation protocol; the first of "
                                         r"--sets chooses the best checkpoint and must be a dev set"):
        _bench().collect(tmp_path / "no-run", [first, "dl19"], [], out=tmp_path / "out.json")


def test_two_dev_sets_choose_the_checkpoint_pooled_each_query_once(tiny, tmp_path, monkeypatch):
    """The protocol's dev set is DL19 + DL20 as one: with two dev sets the checkpoint is chosen on their pooled
    queries (a query-weighted mean, not the mean of the two sets' means), with paired tests against BM25 over them."""
    root, data = tiny
    other = make_trec_dir(tmp_path / "other", n_queries=3, n_cands=6, seed=7, first_qid=500)
    run = tmp_path / "run"
    shutil.copytree(root / "run", run, ignore=shutil.ignore_patterns("metrics.jsonl", "runs_trec", "eval-top*"))
    out = tmp_path / "train.json"
    monkeypatch.setattr(sys, "argv", ["train_msmarco12k.py", "--run", str(run), "--sets", f"{data},{other}",
                                      "--depth", "6", "--out", str(out)])
    assert _bench().main() == 0
    res = json.loads(out.read_text())
    a, b = data.name, other.name
    assert res["chosen_on"] == {"sets": [a, b], "role": "dev", "pooled": True}
    for ck in res["checkpoints"]:
        p = ck["pooled"]
        assert p["sets"] == [a, b] and p["queries"] == len({ln.split()[0] for d in (data, other)
                                                           for ln in (d / "qrels.txt").read_text().splitlines()})
        # each query once: the pooled mean weighs the sets by their queries
        w = {a: len({ln.split()[0] for ln in (data / "qrels.txt").read_text().splitlines()}),
             b: len({ln.split()[0] for ln in (other / "qrels.txt").read_text().splitlines()})}
        expect = (w[a] * ck[a]["ndcg_cut_10"] + w[b] * ck[b]["ndcg_cut_10"]) / (w[a] + w[b])
        assert p["ndcg_cut_10"] == pytest.approx(expect, abs=1e-4)
        assert {t["measure"] for t in p["tests"]} == {"ndcg_cut_10", "recip_rank_10"}
        assert all(t["n_queries"] == p["queries"] for t in p["tests"]) and p["first_stage"]["ndcg_cut_10"] > 0
    best = max(res["checkpoints"], key=lambda c: c["pooled"]["ndcg_cut_10"])
    assert res["best_dev_step"] == best["step"] and res["best_dev_ndcg_cut_10"] == best["pooled"]["ndcg_cut_10"]
