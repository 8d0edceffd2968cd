"""A study that evaluates and ablates on two eval sets (as paper-smollm2-cpu does on DL19 and DL20) and pools them
for its findings: the report pools each ablation sweep and the final checkpoints' comparison over both sets' queries
too, draws one ablation figure per set with the set in its name and title (the second set's used to overwrite the
first's), and removes PNGs an older report left behind."""
from __future__ import annotations


import pytest
import yaml

from lorank.report import build_report
from lorank.study import build_plan, load_spec, run_study
from tests.study.test_external_adapter import _export_tiny_adapter
from tests.tinydata import make_trec_dir, save_tiny_model


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("pooled")
    a = make_trec_dir(root / "data" / "seta", n_queries=3, n_cands=6, seed=1)
    b = make_trec_dir(root / "data" / "setb", n_queries=4, n_cands=6, seed=2, first_qid=200)
    model = save_tiny_model(root / "model")
    adapter = _export_tiny_adapter(root, model, a)
    spec = {
        "name": "tiny-pooled", "models": [str(model)],
        "train": {"data": [{"kind": "trec", "path": str(a)}], "group_size": 4, "batch_queries": 1, "max_steps": 1,
                  "checkpoints": {"steps": "1"}, "eval": {"sets": [str(a), str(b)], "depth": 6}},
        "lora": {"rank": 2, "alpha": 4, "dropout": 0.0}, "grid": [{"rank": [2, 4]}],
        "adapters": {"ref": str(adapter)},
        "ablations": [{"adapter": "ref", "sweeps": ["components"], "eval": str(a), "depth": 6},
                      {"adapter": "ref", "sweeps": ["components"], "eval": str(b), "depth": 6}],
        "report": {"reference": {"rank": 2, "components": "all"}, "findings_sets": [str(a), str(b)]},
    }
    f = root / "spec.yaml"
    f.write_text(yaml.safe_dump(spec))
    out = root / "out"
    (out / "report").mkdir(parents=True)
    (out / "report" / "ablation_adapter_ref_components.png").write_bytes(b"an older report's figure")
    res = run_study(f, out)
    assert not res.failed, res.outcomes
    build_report(out)
    return f, out, a, b


def test_each_sweep_is_pooled_over_both_sets(two_sets):
    from lorank.ablate.run import MEASURES
    from lorank.data import load_qrels, load_run
    from lorank.report.pooled_ablations import pooled_sweeps
    from lorank.evaluation import compare

    f, out, a, b = two_sets
    plan = build_plan(load_spec(out / "study.yaml"), out / "study.yaml", check_data=False)
    (ps,) = pooled_sweeps(plan, out)
    assert (ps.subject, ps.sweep, ps.sets, ps.queries, ps.depths) == ("adapter:ref", "components", ["seta", "setb"],
                                                                      7, [6])
    assert ps.where == "seta + setb pooled (dev), 7 queries x top-6" and not ps.left_out
    assert [r["config"] for r in ps.rows] == ["full", "none", "mha-only", "mlp-only"]
    # by hand: the per-query values of both sets' TREC runs, the mean over all 7 queries, the paired test
    per_set = {}
    for s, d in (("seta", a), ("setb", b)):
        step_dir = next(p for p in (out / "ablations" / "adapter-ref").iterdir() if s in (p / "ablations.json").read_text())
        qrels = load_qrels(d / "qrels.txt")
        runs = {c: {q: {e.docid: e.score for e in es} for q, es in load_run(step_dir / "runs" / "components" /
                                                                             f"{c}.run").items()}
                for c in ("full", "none", "mha-only", "mlp-only")}
        per_set[s] = compare(qrels, runs, baseline="full", measures=list(MEASURES))
    for row in ps.rows:
        vals = [v for s in per_set.values() for v in s.results[row["config"]].per_query["ndcg_cut_10"].values()]
        assert len(vals) == 7 and row["ndcg_cut_10"] == pytest.approx(sum(vals) / 7, abs=1e-4)


def test_the_report_shows_the_pooled_and_each_sets_figure_and_drops_stale_pngs(two_sets):
    f, out, a, b = two_sets
    rep = out / "report"
    pngs = sorted(p.name for p in rep.glob("ablation_*.png"))
    assert pngs == ["ablation_adapter_ref_components_pooled.png", "ablation_adapter_ref_seta_components.png",
                    "ablation_adapter_ref_setb_components.png"]
    md = (rep / "tables.md").read_text(encoding="utf-8")
    assert "components on" in md and "seta + setb pooled (dev), 7 queries x top-6; paired over all of them" in md
    assert "seta (dev), 3 queries x top-6" in md and "setb (dev), 4 queries x top-6" in md


def test_the_final_checkpoints_are_compared_on_both_sets_pooled(two_sets):
    from lorank.data import load_qrels, load_run
    from lorank.report.context import load_context
    from lorank.report.trained_sections import final_comparisons
    from lorank.evaluation import evaluate

    f, out, a, b = two_sets
    ctx = load_context(out)
    assert ctx.compare_sets == ["seta", "setb"] and ctx.compare_label == "seta+setb"
    finals = final_comparisons(ctx)
    assert set(finals) == {r.run_id for r in ctx.plan.runs}
    for rid, row in finals.items():  # by hand: the mean over the 7 queries of both sets' last checkpoints
        vals = []
        for s, d in (("seta", a), ("setb", b)):
            run = {q: {e.docid: e.score for e in es}
                   for q, es in load_run(out / "runs" / rid / "runs_trec" / f"checkpoint-1.{s}.run").items()}
            vals += list(evaluate(load_qrels(d / "qrels.txt"), run, rel_threshold=2).per_query["ndcg_cut_10"].values())
        assert len(vals) == 7 and row["ndcg_cut_10"] == pytest.approx(sum(vals) / 7, abs=1e-9)
    bm = ctx.first_stage["seta+setb"]
    per_set = [ctx.first_stage[s]["ndcg_cut_10"] for s in ("seta", "setb")]
    assert bm["ndcg_cut_10"] == pytest.approx((3 * per_set[0] + 4 * per_set[1]) / 7, abs=1e-9)
    md = (out / "report" / "tables.md").read_text(encoding="utf-8")
    assert "rank: final checkpoints on seta+setb" in md
