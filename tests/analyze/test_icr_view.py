"""The ICR per-layer profile (lorank.analyze.icr_profile) and its benchmark script, end to end on a tiny model."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lorank.data import load_eval_data
from lorank.data.rerankset import RerankSet
from lorank.errors import DataError
from lorank.inference.icr import ICRReranker
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
