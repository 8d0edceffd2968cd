"""The ICR per-layer profile (lorank.analyze.icr_profile) and its benchmark script, end to end on a tiny model."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from lorank.data import load_eval_data
from lorank.data.records import RunEntry
from lorank.data.rerankset import RerankSet
from lorank.errors import ConfigError, DataError
from lorank.evaluation import evaluate, holm_adjust, paired_ttest
from lorank.inference.icr import ICRReranker
from lorank.reranker import Reranker
from tests.benchmark_module import load_benchmark
from tests.tinydata import make_trec_dir, save_tiny_model


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("icr_view")
    return save_tiny_model(root / "model"), make_trec_dir(root / "trec-tiny", n_queries=3, n_cands=6)


def test_the_profile_ranks_by_each_layer_and_head_and_writes_json_and_pngs(tiny_set, tmp_path):
    from lorank.analyze import icr_profile

    model, data = tiny_set
    rs = load_eval_data(str(data))
    rr = ICRReranker.from_pretrained(str(model), device="cpu", window=4, stride=2)
    res = icr_profile(rs, tmp_path, reranker=rr, depth=5, heads=True, name="p", record={"role": "dev"})
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved == json.loads(json.dumps(res)) and saved["role"] == "dev"
    assert (tmp_path / "p.png").stat().st_size > 0 and (tmp_path / "p_heads.png").stat().st_size > 0
    assert len(saved["layers"]) == 4 and np.asarray(saved["heads"]).shape == (4, 4)
    assert all(0 <= v <= 1 for v in saved["layers"] + [saved["icr"], saved["first_stage"]])
    assert saved["queries"] == 3 and saved["windows_per_query"]["max"] == 2  # 5 candidates, windows of 4 by 2
    assert saved["settings"]["window"] == 4 and saved["best_layer"] in range(4)
    pq = saved["per_query"]  # each query's value; each list's mean is the figure beside it
    n = len(pq["qids"])
    assert n == 3 and pq["qids"] == sorted(pq["qids"]) and math.fsum(pq["icr"]) / n == saved["icr"]
    assert [math.fsum(v) / n for v in pq["layers"]] == saved["layers"]
    assert np.asarray(pq["heads"]).shape == (4, 4, 3)
    assert [[math.fsum(v) / n for v in row] for row in pq["heads"]] == saved["heads"]
    assert sorted(pq["first_stage"]) == pq["qids"]
    assert math.fsum(pq["first_stage"].values()) / len(pq["first_stage"]) == saved["first_stage"]
    assert "zero_shot" not in saved and "zero_shot" not in pq and list(saved["tests"]) == ["icr_vs_first_stage"]
    with pytest.raises(DataError, match="needs relevance judgements"):
        icr_profile(RerankSet("unjudged", rs.queries, rs.passages, rs.run, None), reranker=rr)


def test_the_benchmark_script_writes_each_set_with_its_command_and_role(tiny_set, tmp_path):
    model, data = tiny_set
    out = load_benchmark("icr_profile").main(["--sets", str(data), "--model", str(model), "--depth", "4",
                                              "--max-queries", "2", "--out-dir", str(tmp_path), "--device", "cpu"])
    saved = json.loads((tmp_path / "icr_trec-tiny.json").read_text())
    assert saved["role"] == "dev" and saved["command"].startswith("python benchmarks/icr_profile.py --sets")
    assert saved["queries"] == 2 and out["trec-tiny"]["icr"] == saved["icr"]
    assert len(saved["per_query"]["qids"]) == 2 and "heads" not in saved["per_query"]  # per head: with --heads only
    assert (tmp_path / "icr_trec-tiny.png").exists() and not (tmp_path / "icr_trec-tiny_heads.png").exists()


def test_the_script_prints_progress_and_replot_redraws_from_the_json_alone(tiny_set, tmp_path, capsys):
    model, data = tiny_set
    script = load_benchmark("icr_profile")
    script.main(["--sets", str(data), "--model", str(model), "--depth", "4", "--max-queries", "2",
                 "--out-dir", str(tmp_path), "--device", "cpu"])
    err = capsys.readouterr().err
    assert "icr trec-tiny: 2 judged queries, 8 candidates" in err  # then a ProgressLines line every 30 s
    png, before = tmp_path / "icr_trec-tiny.png", (tmp_path / "icr_trec-tiny.json").read_bytes()
    png.unlink()
    script.main(["--sets", str(data), "--out-dir", str(tmp_path), "--replot"])  # no model needed
    assert png.exists() and (tmp_path / "icr_trec-tiny.json").read_bytes() == before


def _spy(obj, method: str, seen: list) -> None:
    """Wrap ``obj.method`` so that each call's return value is kept in ``seen``."""
    inner = getattr(obj, method)

    def wrapper(*args, **kw):
        seen.append(inner(*args, **kw))
        return seen[-1]

    setattr(obj, method, wrapper)


def test_the_zero_shot_baseline_scores_icrs_very_candidates_and_is_tested_against_both(tiny_set, tmp_path):
    from lorank.analyze import icr_profile

    model, data = tiny_set
    rs = load_eval_data(str(data))
    # an unjudged query with candidates: neither ICR nor the baseline may score it
    extra = [RunEntry("999", d, i + 1, -float(i)) for i, d in enumerate(list(rs.passages)[:6])]
    rs = RerankSet(rs.name, {**rs.queries, "999": "an unjudged query"}, rs.passages, {**rs.run, "999": extra}, rs.qrels)
    rr = ICRReranker.from_pretrained(str(model), device="cpu", window=4, stride=2)
    zs = Reranker.from_pretrained(str(model), head_init="yes_no", device="cpu")
    icr_seen, zs_seen = [], []
    _spy(rr, "score_run", icr_seen)
    _spy(zs.scorer, "rerank", zs_seen)
    res = icr_profile(rs, tmp_path, reranker=rr, zero_shot=zs, depth=5, name="p")
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved == json.loads(json.dumps(res))
    judged = sorted(q for q in rs.run if rs.qrels.get(q))
    expected = {(q, e.docid) for q in judged for e in rs.run[q][:5]}  # the judged queries x their top 5 of 6
    icr_pairs = {(q, d) for q, r in icr_seen[0].items() for d in r.docids}
    (scores,) = zs_seen
    assert {(q, d) for q, v in scores.items() for d in v} == icr_pairs == expected
    z, pq = saved["zero_shot"], saved["per_query"]
    assert pq["qids"] == judged and z["pairs"] == len(expected) == 15 and z["model"] == saved["model"]
    assert z["precision"] in ("bf16", "fp32") and z["seconds"] >= 0 and z["seconds_per_query"] >= 0
    qrels = {q: rs.qrels[q] for q in judged}
    ev = evaluate(qrels, scores, measures=["ndcg_cut_10", "recip_rank_10"])
    assert z["ndcg_cut_10"] == ev.aggregate["ndcg_cut_10"] and z["recip_rank_10"] == ev.aggregate["recip_rank_10"]
    assert pq["zero_shot"] == [ev.per_query["ndcg_cut_10"][q] for q in judged]
    assert math.fsum(pq["zero_shot"]) / 3 == z["ndcg_cut_10"]
    # MRR@10, binary at grade >= 2, of ICR and of the first stage (its top 5)
    icr_run = {q: r.run() for q, r in icr_seen[0].items()}
    assert saved["icr_recip_rank_10"] == evaluate(qrels, icr_run, measures=["recip_rank_10"]).aggregate["recip_rank_10"]
    first = {q: {e.docid: -i for i, e in enumerate(rs.run[q][:5])} for q in judged}
    assert saved["first_stage_recip_rank_10"] == evaluate(rs.qrels, first, 2, ["recip_rank_10"]).aggregate[
        "recip_rank_10"]
    # three paired tests over the same 3 queries, Holm-adjusted together
    sides = {"icr": pq["icr"], "zero_shot": pq["zero_shot"], "first_stage": [pq["first_stage"][q] for q in judged]}
    tests = saved["tests"]
    assert list(tests) == ["icr_vs_first_stage", "icr_vs_zero_shot", "zero_shot_vs_first_stage"]
    raw = [paired_ttest(sides[t["a"]], sides[t["b"]]) for t in tests.values()]
    for t, p, p_holm in zip(tests.values(), raw, holm_adjust(raw)):
        assert t["n"] == 3 and t["measure"] == "ndcg_cut_10" and t["p"] == p and t["p_holm"] == p_holm
        assert t["mean_a"] == math.fsum(sides[t["a"]]) / 3 and t["delta"] == t["mean_a"] - t["mean_b"]
    assert tests["icr_vs_zero_shot"]["mean_b"] == z["ndcg_cut_10"] and tests["icr_vs_first_stage"]["mean_a"] == res["icr"]
    assert min(t["p_holm"] for t in tests.values()) == min(1.0, 3 * min(raw))  # a family of three


def test_a_zero_shot_baseline_of_another_model_or_a_trained_adapter_is_refused(tiny_set):
    from lorank.analyze import icr_profile

    model, data = tiny_set
    rs = load_eval_data(str(data))
    rr = ICRReranker.from_pretrained(str(model), device="cpu", window=4, stride=2)
    with pytest.raises(ConfigError, match="is not ICR's"):
        icr_profile(rs, reranker=rr, zero_shot=SimpleNamespace(meta={"model": "another model"}), depth=5)
    with pytest.raises(ConfigError, match="trained adapter"):
        icr_profile(rs, reranker=rr, zero_shot=SimpleNamespace(meta={"checkpoint": "/runs/r/checkpoint-9"}), depth=5)


def test_the_script_scores_the_zero_shot_by_default_and_no_zero_shot_leaves_it_out(tiny_set, tmp_path, capsys):
    model, data = tiny_set
    script = load_benchmark("icr_profile")
    args = ["--sets", str(data), "--model", str(model), "--depth", "4", "--max-queries", "2", "--device", "cpu"]
    script.main(args + ["--out-dir", str(tmp_path / "with")])
    saved = json.loads((tmp_path / "with" / "icr_trec-tiny.json").read_text())
    z, pq = saved["zero_shot"], saved["per_query"]
    assert z["pairs"] == 8 and len(pq["zero_shot"]) == 2 and math.fsum(pq["zero_shot"]) / 2 == z["ndcg_cut_10"]
    assert len(saved["tests"]) == 3 and all(t["n"] == 2 for t in saved["tests"].values())
    line = capsys.readouterr().out
    assert "ICR " in line and "zero-shot " in line and "first stage " in line and line.count("Holm") == 3
    script.main(args + ["--out-dir", str(tmp_path / "without"), "--no-zero-shot"])
    bare = json.loads((tmp_path / "without" / "icr_trec-tiny.json").read_text())
    assert "zero_shot" not in bare and "zero_shot" not in bare["per_query"] and "zero-shot" not in capsys.readouterr().out
    (t,) = bare["tests"].values()  # ICR vs the first stage alone: a family of one
    assert (t["a"], t["b"], t["n"]) == ("icr", "first_stage", 2) and t["p_holm"] == t["p"]
    assert bare["icr"] == saved["icr"] and bare["icr_recip_rank_10"] == saved["icr_recip_rank_10"]


def test_replot_draws_the_zero_shot_line_and_an_old_profile_without_it_as_before(tiny_set, tmp_path):
    from lorank.analyze.icr_view import replot_profile

    model, data = tiny_set
    load_benchmark("icr_profile").main(["--sets", str(data), "--model", str(model), "--depth", "4", "--max-queries",
                                        "2", "--device", "cpu", "--out-dir", str(tmp_path / "new")])
    new = json.loads((tmp_path / "new" / "icr_trec-tiny.json").read_text())
    old = {k: v for k, v in new.items() if k not in ("zero_shot", "tests", "tests_method", "icr_recip_rank_10",
                                                      "first_stage_recip_rank_10")}
    old["per_query"] = {k: v for k, v in new["per_query"].items() if k != "zero_shot"}  # as written before issue 44
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "icr_trec-tiny.json").write_text(json.dumps(old))
    (png_old,) = replot_profile(tmp_path / "old" / "icr_trec-tiny.json")
    (png_new,) = replot_profile(tmp_path / "new" / "icr_trec-tiny.json")
    assert png_old.stat().st_size > 0 and png_old.read_bytes() != png_new.read_bytes()  # the baseline's line
    no_line = dict(new, zero_shot=None)  # the same figure as the old profile's: nothing else moved
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "icr_trec-tiny.json").write_text(json.dumps(no_line))
    assert replot_profile(tmp_path / "none" / "icr_trec-tiny.json")[0].read_bytes() == png_old.read_bytes()
