import csv
import json

import numpy as np
import pytest
import torch

from lorank.analyze.common import effective_rank, read_adapter, stable_rank
from lorank.analyze.weights import weight_stats
from tests.analyze.conftest import save_adapter
from tests.tinydata import save_tiny_model


def _merged_deltas(model_dir, ckpt):
    """Reference: PEFT's own merge, minus the frozen base weights, per module."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    W0 = {n: p.detach().clone() for n, p in base.named_parameters()}
    merged = PeftModel.from_pretrained(base, str(ckpt)).merge_and_unload()
    return {n[: -len(".weight")]: (p.detach() - W0[n], W0[n]) for n, p in merged.named_parameters()
            if n in W0 and not torch.equal(p.detach(), W0[n]) and n.endswith(".weight") and "score" not in n}


@pytest.mark.parametrize("shape,variant", [("tiny-llama", "lora"), ("tiny-llama", "rslora"),
                                           ("tiny-gpt-neox", "lora"), ("tiny-llama", "dylora")])
def test_norms_and_spectra_match_merged_weights(tmp_path, shape, variant):
    model = save_tiny_model(tmp_path / "model", shape=shape)
    ckpt = save_adapter(model, tmp_path / "ck", seed=3, rank=4, alpha=8, variant=variant)
    res = weight_stats(ckpt, tmp_path / "out", plots=False, base_weights=True)
    ref = _merged_deltas(model, ckpt)
    assert res["variant"] == variant  # DyLoRA saves as a plain LoRA: lorank's metadata names it
    rows = {r["module"]: r for r in res["modules"]}
    assert set(rows) == set(ref) and len(rows) == 4 * (7 if shape == "tiny-llama" else 4)
    expect_scaling = 8 / 2 if variant == "rslora" else 8 / 4
    for name, (dW, W0) in ref.items():
        r = rows[name]
        s = torch.linalg.svdvals(dW.double())
        assert r["scaling"] == pytest.approx(expect_scaling)
        assert r["fro"] == pytest.approx(float(dW.double().norm()), rel=1e-5)
        assert r["spectral"] == pytest.approx(float(s[0]), rel=1e-5)
        np.testing.assert_allclose(r["singular_values"], s[:4].numpy(), rtol=1e-4, atol=1e-6)
        assert float(s[4:].max()) < 1e-4 * float(s[0])  # rank r: nothing beyond the r-th value
        assert r["rel_fro"] == pytest.approx(float(dW.norm() / W0.norm()), rel=1e-5)
        assert r["effective_rank"] == pytest.approx(effective_rank(s[:4]), rel=1e-4)
        assert r["stable_rank"] == pytest.approx(float((s ** 2).sum() / s[0] ** 2), rel=1e-4)
        assert 1.0 <= r["effective_rank"] <= 4.0 and 1.0 <= r["stable_rank"] <= 4.0


def test_dora_merged_delta_norm(tmp_path):
    model = save_tiny_model(tmp_path / "model")
    ckpt = save_adapter(model, tmp_path / "ck", seed=4, variant="dora")
    res = weight_stats(ckpt, tmp_path / "out", plots=False, base_weights=True)
    assert res["variant"] == "dora" and "dora_note" in res
    ref = _merged_deltas(model, ckpt)
    for r in res["modules"]:
        assert r["dora_fro"] == pytest.approx(float(ref[r["module"]][0].double().norm()), rel=1e-4)


def test_rank_measures():
    assert effective_rank([1, 1, 1, 1]) == pytest.approx(4.0)
    assert effective_rank([3.0, 0, 0]) == pytest.approx(1.0)
    assert stable_rank([2, 2, 2]) == pytest.approx(3.0)
    assert stable_rank([5, 0]) == pytest.approx(1.0)
    assert effective_rank([0, 0]) == 0.0 and stable_rank([0, 0]) == 0.0


def test_files_table_and_plots_without_base(tiny, tmp_path):
    res = weight_stats(tiny["run"], tmp_path / "o", base_weights=False)  # a run dir -> its last checkpoint
    assert res["adapter"].endswith("checkpoint-2")
    assert all(r["rel_fro"] is None for r in res["modules"])
    out = tmp_path / "o"
    assert json.loads((out / "weights.json").read_text())["summary"]["modules"] == 28
    rows = list(csv.DictReader((out / "weights.csv").open()))
    assert len(rows) == 28 and {"fro", "rel_fro", "effective_rank", "stable_rank"} <= set(rows[0])
    for png in ("weights_heatmaps.png", "weights_spectra.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files
    top = res["summary"]["top_by_fro"]
    assert [t["fro"] for t in top] == sorted((t["fro"] for t in top), reverse=True)


def test_auto_base_records_why_it_was_skipped(tiny, tmp_path):
    import shutil

    ck = tmp_path / "ck"
    shutil.copytree(tiny["a"], ck)
    meta = json.loads((ck / "lorank_checkpoint.json").read_text())
    meta["model_path"] = meta["base_model"] = str(tmp_path / "gone")
    (ck / "lorank_checkpoint.json").write_text(json.dumps(meta))
    res = weight_stats(ck, tmp_path / "o", plots=False)
    assert res["base_note"] and "relative norms skipped" in res["base_note"]
    from lorank.errors import LorankError

    with pytest.raises(LorankError):
        weight_stats(ck, tmp_path / "o", plots=False, base_weights=True)


def test_adapter_reader_refuses_pickle_and_missing_dirs(tiny, tmp_path):
    from lorank.adapters import UnsafeFileError
    from lorank.errors import ConfigError

    with pytest.raises(ConfigError, match="not found"):
        read_adapter(tmp_path / "nope")
    ck = tmp_path / "pk"
    ck.mkdir()
    (ck / "adapter_config.json").write_text((tiny["a"] / "adapter_config.json").read_text())
    (ck / "adapter_model.bin").write_bytes(b"x")
    with pytest.raises(UnsafeFileError):
        read_adapter(ck)
