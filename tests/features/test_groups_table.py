"""The feature-group grammar and the validated reading of feature tables."""
from __future__ import annotations

import pandas as pd
import pytest

from lorank.errors import ConfigError, DataError
from lorank.features.groups import latent_targets, parse_group, parse_groups, select_columns
from lorank.features.table import read_table, write_table
from lorank.models.arch import GPT_NEOX, LLAMA_LIKE

ALL = {(layer, p) for layer in range(4) for p in LLAMA_LIKE.projections}


def test_grammar_selects_layers_projections_and_parts():
    g = parse_group("mlp:L1-2:up,down:norm")
    assert (g.kind, g.layers, g.projections, g.part) == ("mlp", frozenset({1, 2}), ("up", "down"), "norm")
    t = latent_targets(parse_groups(["mlp:L1-2:up,down:norm", "mha:L3:q"]), LLAMA_LIKE, ALL)
    assert t == {(1, "up_proj"): "norm", (2, "up_proj"): "norm", (1, "down_proj"): "norm",
                 (2, "down_proj"): "norm", (3, "q_proj"): "both"}
    assert set(latent_targets(parse_groups("mlp"), LLAMA_LIKE, ALL)) == {k for k in ALL if k[1] in LLAMA_LIKE.mlp}
    assert set(latent_targets(parse_groups("lora:L0"), LLAMA_LIKE, ALL)) == {k for k in ALL if k[0] == 0}
    # aliases across families: mlp.up is dense_h_to_4h in GPT-NeoX
    neox = {(0, p) for p in GPT_NEOX.projections}
    assert set(latent_targets(parse_groups("mlp:up"), GPT_NEOX, neox)) == {(0, "dense_h_to_4h")}
    assert [x.kind for x in parse_groups(["bm25+score", "mlp"])] == ["bm25", "score", "mlp"]


@pytest.mark.parametrize("text,needle", [
    ("bm26", "unknown feature group 'bm26'"), ("mlp:L5-2", "empty layer range"), ("bm25:L1", "takes no selectors"),
    ("mlp:q", "'q' is not a mlp projection"), ("mlp:L9", "selects no LoRA module"), ("", "empty feature group"),
    ("mlp:L5-x", "bad layer selector")])
def test_bad_groups_are_named_with_the_grammar(text, needle):
    with pytest.raises(ConfigError, match=needle):
        latent_targets(parse_groups([text]), LLAMA_LIKE, ALL)


def test_select_columns_follows_the_same_grammar():
    cols = ["qid", "docid", "grade", "bm25_score", "bm25_rank", "score", "lora.L1.up_proj.a0", "lora.L1.up_proj.norm",
            "lora.L2.q_proj.a0", "lora.L5.down_proj.a0"]
    assert select_columns(parse_groups("bm25+score"), cols) == ["bm25_score", "bm25_rank", "score"]
    assert select_columns(parse_groups("mlp"), cols) == ["lora.L1.up_proj.a0", "lora.L1.up_proj.norm",
                                                          "lora.L5.down_proj.a0"]
    assert select_columns(parse_groups("mlp:L0-3:norm"), cols) == ["lora.L1.up_proj.norm"]
    assert select_columns(parse_groups("mha"), cols) == ["lora.L2.q_proj.a0"]
    assert select_columns(parse_groups("lora:up"), cols) == ["lora.L1.up_proj.a0", "lora.L1.up_proj.norm"]
    neox = ["lora.L0.dense_h_to_4h.a0", "lora.L0.dense_4h_to_h.a0", "lora.L0.dense.a0"]
    comps = {p: GPT_NEOX.component_of(p) for p in GPT_NEOX.projections}
    assert select_columns(parse_groups("mlp:up"), neox, comps, GPT_NEOX) == ["lora.L0.dense_h_to_4h.a0"]
    assert select_columns(parse_groups("mha"), neox, comps, GPT_NEOX) == ["lora.L0.dense.a0"]


def _df():
    return pd.DataFrame({"qid": ["1", "1", "2"], "docid": ["a", "b", "a"], "bm25_score": [3.0, 2.0, 1.0],
                         "score": [0.1, 0.2, 0.3]})


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tables_round_trip(tmp_path, suffix):
    p = write_table(tmp_path / f"f{suffix}", _df(), {"eval_set": "x"})
    df = read_table(p)
    assert list(df["qid"]) == ["1", "1", "2"] and df["score"].tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert (tmp_path / f"f{suffix}.meta.json").is_file()


def test_bad_feature_files_give_clear_errors(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("qid,bm25_score\n1,3.0\n")
    with pytest.raises(DataError, match=r"bad\.csv: missing column\(s\) docid"):
        read_table(p)
    p.write_text("qid,docid,bm25_score,score\n1,a,3.0,0.1\n1,b,x7,0.2\n")
    with pytest.raises(DataError, match=r"bad\.csv: column 'bm25_score' is not numeric .*'x7' at line 3"):
        read_table(p)
    p.write_text("qid,docid,score\n1,a,0.1\n1,b,0.2\n1,a,0.3\n")
    with pytest.raises(DataError, match=r"bad\.csv: 2 rows share a \(qid, docid\) key, e\.g\. \(1, a\) at lines 2, 4"):
        read_table(p)
    p.write_text("qid,docid,score\n1,a,0.1\n")
    with pytest.raises(DataError, match=r"bad\.csv: missing column\(s\) bm25_score"):
        read_table(p, need=["bm25_score"])
    with pytest.raises(DataError, match="feature table not found"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(DataError, match="unknown feature table format '.txt'"):
        read_table(tmp_path / "t.txt")
    (tmp_path / "c.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"c\.parquet: cannot read the feature table"):
        read_table(tmp_path / "c.parquet")
