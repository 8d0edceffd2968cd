"""LambdaMART on feature tables: splits by query, a planted feature recovered, the CLI verbs end to end."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lorank.features.table import write_table
from lorank.ltr.model import fit_ranker
from lorank.ltr.split import group_sizes, split_queries, split_rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_query_split_never_leaks_a_query(seed):
    rng = np.random.default_rng(seed)
    qids = [f"q{rng.integers(0, 37)}" for _ in range(900)]
    tr, va = split_rows(qids, valid_frac=0.25, seed=seed)
    q = np.asarray(qids)
    assert not set(q[tr]) & set(q[va])
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(len(qids)))
    assert len(set(q[va])) == round(0.25 * len(set(qids)))
    a, b = split_queries(qids, 0.25, seed)
    assert set(a) | set(b) == set(qids) and not set(a) & set(b)
    order, sizes = group_sizes(q[tr])
    assert sizes.sum() == len(tr) and all(len(set(g)) == 1 for g in np.split(q[tr][order], np.cumsum(sizes)[:-1]))


def test_the_ranker_refuses_a_leaking_split():
    from lorank.errors import ConfigError

    X, y, q = np.zeros((4, 1)), np.array([0, 1, 0, 1]), np.array(["a", "a", "b", "b"])
    with pytest.raises(ConfigError, match="both the training and the validation"):
        fit_ranker(X, y, q, np.array([0, 1, 2]), np.array([3]))


PLANTED = "lora.L3.up_proj.a1"


def _planted_table(n_queries, per_query=20, n_noise=12, seed=0, qid_offset=0):
    """Relevance is a step function of one latent column; BM25 and everything else is noise."""
    rng = np.random.default_rng(seed)
    n = n_queries * per_query
    cols = {"qid": [str(qid_offset + i // per_query) for i in range(n)], "docid": [f"d{i}" for i in range(n)],
            "bm25_score": rng.normal(size=n), "bm25_rank": np.tile(np.arange(1, per_query + 1), n_queries),
            "score": rng.normal(size=n)}
    for j in range(n_noise):
        cols[f"lora.L{j % 4}.{'gate_proj' if j % 2 else 'down_proj'}.a{j}"] = rng.normal(size=n)
    signal = rng.normal(size=n)
    cols[PLANTED] = signal
    grade = np.digitize(signal, [0.5, 1.2, 1.8])  # 0..3
    cols["grade"] = grade
    return pd.DataFrame(cols)


def test_lambdamart_recovers_a_planted_feature(tmp_path):
    from lorank.ltr.run import ltr

    tr, te = _planted_table(40, seed=0), _planted_table(15, seed=1, qid_offset=1000)
    write_table(tmp_path / "train.csv", tr, {"eval_set": "planted-train"})
    write_table(tmp_path / "test.csv", te, {"eval_set": "planted-test"})
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("".join(f"{q} 0 {d} {g}\n" for q, d, g in zip(te["qid"], te["docid"], te["grade"])))
    res = ltr(tmp_path / "train.csv", tmp_path / "test.csv", tmp_path / "out", test_qrels=qrels,
              grid={"num_leaves": [7], "learning_rate": [0.1]})
    rows = {r["row"]: r for r in res["rows"]}
    assert set(rows) == {"BM25", "reranker", "LTR(bm25+score)", "LTR(bm25+mlp)", "LTR(all)"}
    for name in ("LTR(bm25+mlp)", "LTR(all)"):
        imp = rows[name]["importance"]
        assert imp["top_columns"][0]["column"] == PLANTED
        assert imp["top_columns"][0]["gain_fraction"] > 0.5
        assert imp["by_layer"]["3"]["up_proj"] > 0.5 and max(imp["by_projection"], key=imp["by_projection"].get) == "up_proj"
        assert rows[name]["ndcg_cut_10"] > 0.9
        assert rows[name]["vs_BM25"]["ndcg_cut_10"]["significant"]
    assert rows["BM25"]["ndcg_cut_10"] < 0.6 and rows["LTR(bm25+score)"]["ndcg_cut_10"] < 0.7
    assert res["training"]["train_queries"] + res["training"]["valid_queries"] == 40
    assert (tmp_path / "out" / "runs" / "LTR_all.run").is_file()
    assert (tmp_path / "out" / "ltr_importance.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "out" / "ltr.json").read_text())
    assert saved["rows"][0]["row"] == "BM25"


def test_ltr_input_errors(tmp_path):
    from lorank.errors import ConfigError, DataError
    from lorank.ltr.run import ltr, parse_rows

    tr = _planted_table(6, per_query=5, seed=0)
    write_table(tmp_path / "train.csv", tr)
    write_table(tmp_path / "test.csv", tr.drop(columns=[PLANTED]))
    with pytest.raises(ConfigError, match="cannot tell the test qrels"):
        ltr(tmp_path / "train.csv", tmp_path / "test.csv", tmp_path / "o")
    qrels = tmp_path / "q.txt"
    qrels.write_text("".join(f"{q} 0 {d} {g}\n" for q, d, g in zip(tr["qid"], tr["docid"], tr["grade"])))
    with pytest.raises(DataError, match=r"test\.csv: row LTR\(bm25\+mlp\): 1 feature column\(s\) .* missing here, "
                                        r"e\.g\. lora\.L3\.up_proj\.a1"):
        ltr(tmp_path / "train.csv", tmp_path / "test.csv", tmp_path / "o", test_qrels=qrels)
    with pytest.raises(ConfigError, match="unknown feature group 'bm2'"):
        parse_rows(["bm2+mlp"])
    # a row whose groups the tables lack is skipped and reported, not silently dropped
    res = ltr(tmp_path / "train.csv", tmp_path / "train.csv", tmp_path / "o", test_qrels=qrels,
              rows=["bm25", "mha"], grid={"num_leaves": [7], "learning_rate": [0.1]}, plots=False)
    assert res["skipped_rows"] == [{"row": "LTR(mha)", "reason": "the training table has no column of groups 'mha'"}]


def _invoke(*args):
    from lorank.cli import app

    res = CliRunner().invoke(app, [str(a) for a in args])
    res.text = " ".join(res.output.split())
    return res


def test_cli_features_and_ltr_on_a_tiny_setup(tiny_ltr, tmp_path):
    for role in ("train", "test"):
        res = _invoke("features", "--adapter", tiny_ltr["adapter"], "--eval", tiny_ltr[role], "--out",
                      tmp_path / f"{role}.parquet", "-g", "bm25+score", "-g", "mlp:L1-2", "-g", "mha:L3:q:norm",
                      "--depth", 8)
        assert res.exit_code == 0, res.output + repr(res.exception)
    n_q = 10
    df = pd.read_parquet(tmp_path / "train.parquet")
    assert len(df) == n_q * 8 and not df.duplicated(["qid", "docid"]).any()
    latent = [c for c in df.columns if c.startswith("lora.")]
    # mlp:L1-2 -> 2 layers x 3 projections x (4 + norm); mha:L3:q:norm -> one norm
    assert len(latent) == 2 * 3 * 5 + 1 and "lora.L3.q_proj.norm" in latent
    meta = json.loads((tmp_path / "train.parquet.meta.json").read_text())
    assert meta["pairs"] == 80 and meta["latent_modules"] == 7 and meta["groups"] == ["bm25", "score", "mlp:L1-2",
                                                                                       "mha:L3:q:norm"]
    res = _invoke("ltr", "--train", tmp_path / "train.parquet", "--test", tmp_path / "test.parquet",
                  "--out", tmp_path / "ltr", "--row", "bm25", "--row", "reranker", "--row", "mlp=mlp",
                  "--row", "all")
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "LTR(all)" in res.text and "Δ nDCG vs BM25" in res.text
    out = json.loads((tmp_path / "ltr" / "ltr.json").read_text())
    assert [r["row"] for r in out["rows"]] == ["BM25", "reranker", "mlp", "LTR(all)"]
    assert out["test"]["judged_queries"] == 6 and out["rows"][3]["features"] == 2 + 1 + 31
    # clear errors: a bad group, a bad table
    res = _invoke("features", "--adapter", tiny_ltr["adapter"], "--eval", tiny_ltr["test"], "--out",
                  tmp_path / "x.csv", "-g", "mlp:L7")
    assert res.exit_code == 2 and "selects no LoRA module" in res.text
    (tmp_path / "bad.csv").write_text("qid,docid\n1,a\n1,a\n")
    res = _invoke("ltr", "--train", tmp_path / "bad.csv", "--test", tmp_path / "test.parquet", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "bad.csv: 2 rows share a (qid, docid) key" in res.text


def test_real_dl19_bm25_row_matches_the_known_first_stage(shared_data, tmp_path, monkeypatch):
    """BM25 through features -> ltr on the real DL20/DL19 tables: the README's DL19 BM25 figures."""
    from lorank.features.extract import extract_features
    from lorank.ltr.run import ltr
    from lorank.subject import resolve_subject

    monkeypatch.setenv("LORANK_DATA", str(shared_data))
    m = extract_features(resolve_subject(eval_set="dl19", data_root=shared_data), tmp_path / "dl19.csv", groups=["bm25"])
    assert m["queries"] == 43 and m["pairs"] == 4300 and m["source"] == "dl19" and "adapter" not in m
    extract_features(resolve_subject(eval_set="dl20", data_root=shared_data), tmp_path / "dl20.parquet", groups=["bm25"])
    res = ltr(tmp_path / "dl20.parquet", tmp_path / "dl19.csv", tmp_path / "o", rows=["bm25", "x=bm25"],
              grid={"num_leaves": [7], "learning_rate": [0.1]}, plots=False)
    bm25 = res["rows"][0]
    assert bm25["ndcg_cut_10"] == pytest.approx(0.5058, abs=5e-5) and bm25["recip_rank_10"] == pytest.approx(0.7024, abs=5e-5)
    assert res["test"]["judged_queries"] == 43 and res["qrels"] == "dl19"
