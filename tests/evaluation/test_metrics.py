import json
import math
import random

import pytest

from lorank.data.records import RunEntry
from lorank.errors import ConfigError, DataError
from lorank.evaluation import DEFAULT_MEASURES, compare, evaluate



from tests.shared_paths import SHARED  # noqa: E402


from tests.shared_paths import needs_data  # noqa: E402


def _entries(qid, docs):
    return [RunEntry(qid, d, i + 1, s) for i, (d, s) in enumerate(docs)]


def load(year):
    from lorank.data import load_qrels, load_run

    d = SHARED / f"trec-dl-{year}"
    return load_qrels(d / "qrels.txt"), load_run(d / "bm25.run")


@needs_data
def test_dl19_bm25_matches_reference():
    qrels, run = load(2019)
    res = evaluate(qrels, run)
    assert set(res.aggregate) == set(DEFAULT_MEASURES)
    assert round(res.aggregate["ndcg_cut_10"], 4) == 0.5058
    assert round(res.aggregate["recip_rank_10"], 4) == 0.7024
    assert round(res.aggregate["recall_100"], 4) == 0.4910
    assert round(res.aggregate["map"], 4) == 0.2476
    assert res.num_queries == 43 and res.missing_queries == [] and res.ignored_queries == []


@needs_data
def test_dl20_bm25_matches_reference():
    qrels, run = load(2020)
    res = evaluate(qrels, run)
    assert round(res.aggregate["ndcg_cut_10"], 4) == 0.4796
    assert round(res.aggregate["recip_rank_10"], 4) == 0.6533
    assert res.num_queries == 54


@needs_data
def test_real_run_is_order_independent():
    # DL20's run has tied scores, so this also checks that tie-breaking does not depend on input order
    qrels, run = load(2020)
    ref = evaluate(qrels, run, per_query=True)
    rng = random.Random(0)
    shuffled = {q: rng.sample(v, len(v)) for q, v in reversed(list(run.items()))}
    res = evaluate(qrels, shuffled, per_query=True)
    assert res.aggregate == ref.aggregate
    assert res.per_query == ref.per_query


def test_ties_broken_by_docid_descending_like_trec_eval():
    qrels = {"q": {"a": 2}}
    res = evaluate(qrels, {"q": {"a": 1.0, "b": 1.0}})
    assert res.aggregate["recip_rank_10"] == 0.5  # 'b' before 'a'
    # every back-end sees the same ranking: nDCG agrees with the rank-2 position
    assert res.aggregate["ndcg_cut_10"] == pytest.approx(1 / math.log2(3))


def test_scores_rank_not_the_rank_column():
    qrels = {"q": {"a": 2}}
    run = {"q": [RunEntry("q", "a", 1, 0.1), RunEntry("q", "b", 2, 0.9)]}
    assert evaluate(qrels, run).aggregate["recip_rank_10"] == 0.5


def test_synthetic_order_independence_with_ties():
    rng = random.Random(1)
    qrels = {f"q{i}": {f"d{j}": rng.choice([0, 1, 2, 3]) for j in range(0, 30, 3)} for i in range(8)}
    run = {q: [(f"d{j}", float(rng.choice([1, 2, 3]))) for j in range(30)] for q in qrels}
    ref = evaluate(qrels, run, per_query=True)
    for _ in range(5):
        shuffled = {q: rng.sample(run[q], len(run[q])) for q in rng.sample(list(run), len(run))}
        res = evaluate(qrels, shuffled, per_query=True)
        assert res.aggregate == ref.aggregate and res.per_query == ref.per_query


def test_run_shapes_agree():
    qrels = {"q1": {"a": 3, "b": 1}, "q2": {"c": 2}}
    docs = {"q1": [("b", 3.0), ("x", 2.0), ("a", 1.0)], "q2": [("c", 5.0)]}
    as_pairs = evaluate(qrels, docs)
    as_dict = evaluate(qrels, {q: dict(v) for q, v in docs.items()})
    as_entries = evaluate(qrels, {q: _entries(q, v) for q, v in docs.items()})
    assert as_pairs.aggregate == as_dict.aggregate == as_entries.aggregate


def test_judged_queries_without_results_count_as_zero():
    qrels = {"q1": {"a": 2}, "q2": {"b": 2}}
    run = {"q1": {"a": 1.0}, "q3": {"z": 1.0}}
    res = evaluate(qrels, run, per_query=True)
    assert res.aggregate["ndcg_cut_10"] == 0.5
    assert res.aggregate["recip_rank_10"] == 0.5
    assert res.per_query["map"] == {"q1": 1.0, "q2": 0.0}
    assert res.missing_queries == ["q2"]
    assert res.ignored_queries == ["q3"]
    assert res.num_queries == 2


def test_empty_run_scores_zero():
    res = evaluate({"q1": {"a": 2}}, {})
    assert all(v == 0.0 for v in res.aggregate.values())


def test_rel_threshold_applies_to_binary_measures_only():
    qrels = {"q": {"a": 1, "b": 2}}
    run = {"q": {"a": 2.0, "b": 1.0}}
    r2 = evaluate(qrels, run, rel_threshold=2)
    r1 = evaluate(qrels, run, rel_threshold=1)
    assert r2.aggregate["recip_rank_10"] == 0.5 and r1.aggregate["recip_rank_10"] == 1.0
    assert r1.aggregate["ndcg_cut_10"] == r2.aggregate["ndcg_cut_10"] < 1.0  # graded gains
    assert r2.measures["recip_rank_10"] == "RR(rel=2)@10"


def test_other_measure_names():
    qrels = {"q": {"a": 2, "b": 2}}
    run = {"q": {"x": 3.0, "a": 2.0, "b": 1.0}}
    res = evaluate(qrels, run, measures=["P_1", "P_3", "nDCG@20", "success_1", "recall_2", "ndcg_cut_10"])
    assert res.aggregate["P_1"] == 0.0
    assert res.aggregate["P_3"] == pytest.approx(2 / 3)
    assert res.aggregate["recall_2"] == 0.5
    assert res.aggregate["success_1"] == 0.0
    assert res.aggregate["nDCG@20"] == res.aggregate["ndcg_cut_10"]
    with pytest.raises(ConfigError):
        evaluate(qrels, run, measures=["no_such_measure"])
    with pytest.raises(ConfigError):
        evaluate(qrels, run, measures=["map", "map"])


def test_bad_inputs_are_clean_errors():
    with pytest.raises(DataError, match="listed twice"):
        evaluate({"q": {"a": 1}}, {"q": [("a", 1.0), ("a", 2.0)]})
    with pytest.raises(DataError, match="not finite"):
        evaluate({"q": {"a": 1}}, {"q": {"a": float("nan")}})
    with pytest.raises(DataError, match="qrels are empty"):
        evaluate({}, {"q": {"a": 1.0}})


def test_to_dict_is_json_and_per_query_on_request():
    res = evaluate({"q": {"a": 2}}, {"q": {"a": 1.0}})
    assert "per_query" not in res.to_dict()
    d = json.loads(json.dumps(res.to_dict(per_query=True)))
    assert d["per_query"]["ndcg_cut_10"] == {"q": 1.0}
    assert d["aggregate"]["map"] == 1.0


def _rr_run(rank_of_rel):
    """A run whose only relevant document 'r' sits at `rank_of_rel` (None: not retrieved)."""
    docs = [f"n{i:02d}" for i in range(12)]
    if rank_of_rel is not None:
        docs.insert(rank_of_rel - 1, "r")
    return {d: float(100 - i) for i, d in enumerate(docs)}


def test_compare_hand_checked_pvalue_and_holm():
    qrels = {q: {"r": 2} for q in ("q1", "q2", "q3")}
    base = {"q1": _rr_run(3), "q2": _rr_run(6), "q3": _rr_run(None)}  # RR 1/3, 1/6, 0
    better = {q: _rr_run(2) for q in qrels}  # RR 1/2 everywhere: differences 1/6, 1/3, 1/2
    res = compare(qrels, {"base": base, "better": better, "same": dict(base)}, measures=["recip_rank_10"])
    assert res.baseline == "base"
    c = res.get("better", "recip_rank_10")
    p = 1 - math.sqrt(6 / 7)  # t = 2*sqrt(3) with 2 degrees of freedom
    assert c.p_value == pytest.approx(p, rel=1e-9)
    assert c.delta == pytest.approx(0.5 - 1 / 6)
    assert c.p_adjusted == pytest.approx(2 * p)  # Holm with m = 2; the other p is 1
    assert not c.significant
    same = res.get("same", "recip_rank_10")
    assert same.p_value == 1.0 and same.p_adjusted == 1.0 and not same.significant and same.delta == 0


def test_compare_identical_runs_not_significant_and_baseline_choice():
    qrels = {f"q{i}": {"a": 2, "b": 1} for i in range(5)}
    run = {q: {"a": 1.0, "b": 2.0, "c": 3.0} for q in qrels}
    res = compare(qrels, {"x": run, "y": run}, baseline="y")
    assert res.baseline == "y"
    assert [c.run for c in res.comparisons] == ["x"] * 4
    assert all(c.p_value == 1.0 and not c.significant for c in res.comparisons)
    with pytest.raises(ConfigError):
        compare(qrels, {"x": run}, baseline="nope")
    single = compare(qrels, {"x": run})
    assert single.comparisons == []
    json.dumps(res.to_dict())


@needs_data
def test_compare_real_runs_significant():
    qrels, run = load(2019)
    top5 = {q: v[:5] for q, v in run.items()}
    res = compare(qrels, {"bm25": run, "top5": top5})
    c = res.get("top5", "recall_100")
    assert c.delta < 0 and c.p_value < 1e-6 and c.significant


def test_run_names():
    from lorank.evaluation import run_names

    assert run_names(["a/x.run", "b/x.run", "c.run"]) == ["a/x.run", "b/x.run", "c.run"]
    assert run_names(["d/trec-dl-2019/bm25.run", "d/trec-dl-2020/bm25.run"]) == [
        "trec-dl-2019/bm25.run", "trec-dl-2020/bm25.run"]
    with pytest.raises(ConfigError):
        run_names(["a/x.run", "a/x.run"])


def test_evaluate_files_python_twin(tmp_path):
    from lorank.evaluation import evaluate_files

    (tmp_path / "q.txt").write_text("1 0 a 2\n2 0 c 2\n")
    (tmp_path / "r1.run").write_text("1 Q0 a 1 2.0 x\n2 Q0 c 1 1.0 x\n")
    (tmp_path / "r2.run").write_text("1 Q0 b 1 2.0 x\n1 Q0 a 2 1.0 x\n")
    out = tmp_path / "res.json"
    res = evaluate_files(tmp_path / "q.txt", [tmp_path / "r1.run", tmp_path / "r2.run"], per_query=True,
                         json_out=out)
    assert res.results["r1.run"].aggregate["recip_rank_10"] == 1.0
    assert res.results["r2.run"].aggregate["recip_rank_10"] == 0.25
    d = json.loads(out.read_text())
    assert d["runs"]["r2.run"]["per_query"]["recip_rank_10"] == {"1": 0.5, "2": 0.0}
    assert d["runs"]["r2.run"]["missing_queries"] == ["2"]
    assert [c["run"] for c in d["comparisons"]] == ["r2.run"] * 4
    assert list(tmp_path.glob(".*.tmp")) == []
