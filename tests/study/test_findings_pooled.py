"""The findings on several evaluation sets pooled (DL19 + DL20: 97 queries) and on ablations of an external
adapter, which have their own noise gate (synthetic numbers, no training)."""
from __future__ import annotations

import pytest

from lorank.errors import ConfigError
from lorank.report.findings import HOLDS, INCONCLUSIVE, PerQuery, evaluate_findings, pooled
from tests.study.test_findings import REF, STEPS, as_test, by_n, decide, happy_study


def _split(pq: PerQuery, label: str, keep) -> PerQuery:
    """The part of `pq` on the queries `keep` selects, as if it were the set `label` (qids renamed apart)."""
    def sub(s: dict) -> dict:
        return {f"{label}-{q}": v for q, v in s.items() if keep(q)}
    return PerQuery(label, sub(pq.bm25), {r: {st: sub(sc) for st, sc in c.items()} for r, c in pq.checkpoints.items()},
                    {k: sub(v) for k, v in pq.ablations.items()}, pq.ablations_of)


def test_two_sets_pool_into_one_with_every_query():
    df, pq = happy_study()
    a = _split(pq, "dl19", lambda q: int(q[1:]) % 2 == 0)
    b = _split(pq, "dl20", lambda q: int(q[1:]) % 2 == 1)
    both = pooled([a, b])
    assert both.eval_set == "dl19+dl20" and both.labels == ("dl19", "dl20")
    assert len(both.bm25) == len(pq.bm25) and len(both.ablations["full"]) == len(pq.ablations["full"])
    assert len(both.checkpoints[REF][STEPS[-1]]) == len(pq.bm25)
    # the results table names each set: the runs are found on either
    df2 = df.copy()
    df2["eval_set"] = ["dl19" if i % 2 else "dl20" for i in range(len(df2))]
    f = by_n(evaluate_findings(df2, both, REF, test=as_test(both)))
    assert all(f[n]["verdict"] == HOLDS for n in range(1, 6)), {n: f[n]["reason"] for n in f}
    gate = next(v for k, v in f[1]["p_values"].items() if k.startswith("gate"))
    assert gate["n_queries"] == len(pq.bm25) and "dl19+dl20" in next(iter(f[1]["p_values"]))
    with pytest.raises(ConfigError, match="query ids overlap"):
        pooled([a, a])


def test_ablations_of_an_external_adapter_have_their_own_gate():
    df, pq = happy_study()
    pq.ablations_of = "adapter:reference"
    drop = 0.3  # the study's own runs are below BM25 (short training); the external adapter is well above it
    pq.checkpoints = {r: {s: {q: v - drop for q, v in d.items()} for s, d in c.items()} for r, c in pq.checkpoints.items()}
    f = by_n(decide(df, pq))
    for n in (1, 2):  # checkpoint evidence only: behind the failed gate
        assert f[n]["verdict"] == INCONCLUSIVE and "not significantly above BM25" in f[n]["reason"]
        assert f[n]["evidence"]["gate"]["passed"] is False and f[n]["evidence"]["ablation_gate"]["passed"]
    # 3, 4, 5 are decided on the adapter's ablations
    assert f[4]["verdict"] == HOLDS, f[4]["reason"]
    assert f[3]["evidence"]["source"] == "inference-time ablation of adapter:reference"
    assert f[3]["evidence"]["ablations_of"] == "adapter:reference"
    assert f[5]["verdict"] == HOLDS and "trained" not in f[5]["evidence"], f[5]["reason"]
    assert any(k.startswith("gate: adapter:reference full vs BM25") for k in f[4]["p_values"])
    # and the other way round: an adapter below BM25 leaves the ablation-only finding 4 inconclusive
    df, pq = happy_study()
    pq.ablations_of = "adapter:reference"
    pq.ablations = {k: {q: v - drop for q, v in d.items()} for k, d in pq.ablations.items()}
    f = by_n(decide(df, pq))
    assert f[4]["verdict"] == INCONCLUSIVE and "dissected adapter adapter:reference" in f[4]["reason"]
    assert f[4]["evidence"]["verdict_ignoring_gate"] == HOLDS
    assert f[1]["verdict"] == HOLDS and f[3]["evidence"]["source"] == "trained separately"


def test_the_p_values_say_how_many_queries_each_test_paired():
    """A pooled study whose ablations cover one set so far: the table must not read as if all queries were tested."""
    from lorank.report.findings import p_text

    f = {"p_values": {"mha vs LoRA off": {"p_holm": 8.6e-13, "n_queries": 43},
                      "gate": {"p_holm": 4.08e-06, "n_queries": 97}}}
    assert p_text(f) == "mha vs LoRA off: p_adj=8.6e-13 (n=43); gate: p_adj=4.1e-06 (n=97)"
    # a findings.json with confirmatory flags: only the confirmatory tests are listed, study-wide adjusted
    f = {"p_values": {"a": {"p_adj": 0.012, "n_queries": 76, "confirmatory": True},
                      "b": {"p_adj": 0.5, "n_queries": 76, "confirmatory": False}}}
    assert p_text(f) == "a: p_adj=0.012 (n=76)"
    assert p_text({"p_values": {}}) == "-"


def test_the_report_draws_the_pooled_checkpoint_curve_and_names_what_it_leaves_out(tmp_path, monkeypatch):
    """The checkpoint section's pooled curve (finding 1's view): a step's point is the mean over every pooled
    query; a checkpoint evaluated on one set only is left out of it and named."""
    from types import SimpleNamespace

    import lorank.report.trained_sections as sections
    from lorank.report.page import Section
    from lorank.report.trained_sections import _pooled_curve

    _, pq = happy_study()
    a = _split(pq, "dl19", lambda q: int(q[1:]) % 2 == 0)
    b = _split(pq, "dl20", lambda q: int(q[1:]) % 2 == 1)
    del b.checkpoints["r8-mha"][STEPS[0]]  # the first checkpoint of r8-mha scored on dl19 only
    view = pooled([a, b])
    drawn = {}

    def fake(curves, base, title, out, measure="ndcg_cut_10"):
        drawn.update(curves=curves, base=base, title=title)
        out.write_bytes(b"png")
        return out

    monkeypatch.setattr(sections, "pooled_curves", fake)  # where the report section looks it up
    runs = [SimpleNamespace(run_id=r, label=r, model="m") for r in ("r8-all", "r8-mha")]
    ctx = SimpleNamespace(plan=SimpleNamespace(runs=runs, spec=SimpleNamespace(models=["m"])), out=tmp_path)
    ev = Section("Checkpoint evolution", "")
    _pooled_curve(ctx, view, ev)
    assert ev.images == [("dl19+dl20 pooled", tmp_path / "curves_dl19+dl20.png")]
    all_steps = dict(drawn["curves"]["r8-all"])
    assert sorted(all_steps) == STEPS
    last = pq.checkpoints["r8-all"][STEPS[-1]]
    assert all_steps[STEPS[-1]] == pytest.approx(sum(last.values()) / len(last))
    assert drawn["base"] == pytest.approx(sum(pq.bm25.values()) / len(pq.bm25))
    assert [s for s, _ in drawn["curves"]["r8-mha"]] == STEPS[1:]
    assert f"r8-mha step {STEPS[0]}" in ev.text
    assert f"({len(pq.bm25)} queries" in drawn["title"]


def test_the_report_draws_the_dense_curve_pooled_beside_the_checkpoints_with_their_depths(tmp_path, monkeypatch):
    """The runs' dense cheap curve (eval.curve: every N steps, shallower) is drawn pooled beside the saved
    checkpoints, each titled with the depth it was reranked at; a run without a curve is simply not in it."""
    import dataclasses
    from types import SimpleNamespace

    import lorank.report.trained_sections as sections
    from lorank.report.page import Section
    from lorank.report.trained_sections import _pooled_curve

    _, pq = happy_study()
    view = pooled([_split(pq, "dl19", lambda q: int(q[1:]) % 2 == 0), _split(pq, "dl20", lambda q: int(q[1:]) % 2 == 1)])
    dense = {st // 2: {q: v + 0.01 for q, v in sc.items()} for st, sc in view.checkpoints["r8-all"].items()}
    view = dataclasses.replace(view, curve={"r8-all": dense}, depth=50, curve_depth=20)
    drawn = []

    def fake(curves, base, title, out, measure="ndcg_cut_10"):
        drawn.append((title, curves))
        out.write_bytes(b"png")
        return out

    monkeypatch.setattr(sections, "pooled_curves", fake)
    runs = [SimpleNamespace(run_id=r, label=r, model="m") for r in ("r8-all", "r8-mha")]
    ctx = SimpleNamespace(plan=SimpleNamespace(runs=runs, spec=SimpleNamespace(models=["m"])), out=tmp_path)
    ev = Section("Checkpoint evolution", "")
    _pooled_curve(ctx, view, ev)
    assert ev.images == [("dl19+dl20 pooled", tmp_path / "curves_dl19+dl20.png"),
                         ("dl19+dl20 pooled, dense curve", tmp_path / "curves_dense_dl19+dl20.png")]
    (t_ck, _), (t_dense, c_dense) = drawn
    assert t_ck.endswith("BM25 top-50") and t_dense.endswith("BM25 top-20"), (t_ck, t_dense)
    assert list(c_dense) == ["r8-all"] and [s for s, _ in c_dense["r8-all"]] == sorted(dense)
    first = dense[min(dense)]
    assert dict(c_dense["r8-all"])[min(dense)] == pytest.approx(sum(first[q] for q in view.bm25) / len(view.bm25))
