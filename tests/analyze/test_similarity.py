import json

import numpy as np
import pytest
import torch

from lorank.lora.factors import LoraModule
from lorank.analyze.similarity import compare_adapters, phi_grid, random_baseline


def test_an_adapter_is_fully_similar_to_itself(tiny, tmp_path):
    for side in ("right", "left"):
        res = compare_adapters(tiny["a"], tiny["a"], tmp_path / side, side=side, plots=side == "right")
        assert res["summary"]["modules"] == 28
        for r in res["modules"]:
            assert r["phi_full"] == pytest.approx(1.0, abs=1e-9)
            assert r["phi_top1"] == pytest.approx(1.0, abs=1e-9)
            assert r["delta_cosine"] == pytest.approx(1.0, abs=1e-9)
        np.testing.assert_allclose(res["grid_module"]["phi"], np.ones((4, 4)), atol=1e-6)
    assert (tmp_path / "right" / "compare_heatmaps.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "right" / "compare_grid.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "right" / "compare.json").read_text())
    assert saved["side"] == "right" and len(saved["grid_module"]["phi"]) == 4


def test_two_independent_random_adapters_sit_at_the_random_baseline(tiny, tmp_path):
    res = compare_adapters(tiny["a"], tiny["b"], tmp_path, plots=False)
    s = res["summary"]
    # r = 4 in d = 64 or 128: E phi(4,4) = 4/d; the mean over 28 modules is close to it
    assert s["mean_phi_full"] == pytest.approx(s["mean_random_full"], abs=0.02)
    assert s["mean_phi_full"] < 0.15 and abs(s["mean_delta_cosine"]) < 0.05
    for r in res["modules"]:
        assert r["random_full"] == pytest.approx(4 / r["dim"])


def test_phi_grid_against_the_random_expectation_in_high_dimension():
    g = torch.Generator().manual_seed(0)
    d, ra, rb, reps = 400, 8, 6, 400
    Ua = torch.linalg.qr(torch.randn(reps, d, ra, generator=g, dtype=torch.float64))[0]
    Ub = torch.linalg.qr(torch.randn(reps, d, rb, generator=g, dtype=torch.float64))[0]
    acc = np.mean([phi_grid(Ua[k], Ub[k]) for k in range(reps)], axis=0)
    expect = np.array([[random_baseline(i, j, d) for j in range(1, rb + 1)] for i in range(1, ra + 1)])
    np.testing.assert_allclose(acc, expect, rtol=0.25)  # phi(1,1): sd of the mean ~7%


def test_shared_directions_show_up_in_the_grid():
    """B2 A2 shares A's top-2 row space with B1 A1, plus 2 new directions: phi(2, j) = 1 for j >= 2."""
    g = torch.Generator().manual_seed(1)
    d, r = 64, 4
    A1 = torch.randn(r, d, generator=g)
    B1 = torch.diag(torch.tensor([8.0, 4.0, 2.0, 1.0])) @ torch.eye(r)
    m1 = LoraModule("m", 0, "q_proj", "mha", A1, torch.cat([B1, torch.zeros(10, r)]), 1.0)
    from lorank.lora.factors import low_rank_svd

    V1 = low_rank_svd(m1).V
    P = V1[:, :2].float()
    new = torch.randn(2, d, generator=g) * 0.1
    new = new - (new @ P) @ P.T  # new directions orthogonal to the shared ones
    A2 = torch.cat([P.T * torch.tensor([[9.0], [5.0]]), new])
    m2 = LoraModule("m", 0, "q_proj", "mha", A2, torch.cat([torch.eye(r), torch.zeros(10, r)]), 1.0)
    from lorank.analyze.similarity import module_similarity

    res = module_similarity(m1, m2, "right")
    assert res["grid"][1, 1] == pytest.approx(1.0, abs=1e-6)
    assert res["grid"][0, 0] == pytest.approx(1.0, abs=1e-6)
    assert res["phi_full"] < 0.75


def test_compare_errors(tiny, tmp_path):
    from lorank.errors import ConfigError

    with pytest.raises(ConfigError, match="side"):
        compare_adapters(tiny["a"], tiny["b"], tmp_path, side="up")
    with pytest.raises(ConfigError, match="no LoRA module"):
        compare_adapters(tiny["a"], tiny["b"], tmp_path, module="L9.q_proj")
    res = compare_adapters(tiny["a"], tiny["b"], tmp_path, module="1.attn.v", plots=False)
    assert res["grid_module"]["projection"] == "v_proj" and res["grid_module"]["layer"] == 1


def test_adapters_of_two_models_are_refused_by_their_shapes(tiny, tmp_path):
    """A tiny Gemma 3's adapter beside a tiny Llama's: one hidden size (64) and Llama-style projection names, so the
    family check passes, but q_proj writes 4 heads x 24 (96) in Gemma, 64 in the Llama: a clear error, not torch's
    "mat1 and mat2 shapes cannot be multiplied" from the delta cosine, on either side."""
    from lorank.errors import ConfigError
    from tests.analyze.conftest import save_adapter
    from tests.tinydata import save_tiny_model

    gemma = save_adapter(save_tiny_model(tmp_path / "gemma", "tiny-gemma3"), tmp_path / "g" / "checkpoint-1", seed=3)
    for side in ("right", "left"):
        with pytest.raises(ConfigError, match=r"layers\.0\.self_attn\.q_proj: the two adapters' deltas differ in "
                                              r"shape \(96x64 vs 64x64\): adapters of different models"):
            compare_adapters(gemma, tiny["a"], tmp_path / side, side=side, plots=False)


@pytest.mark.parametrize("ra, rb", [(1, 32), (8, 8), (32, 1)])
def test_the_grid_plot_keeps_its_labels_inside_the_figure(tmp_path, monkeypatch, ra, rb):
    # A rank-1 adapter against a rank-32 one gives a one-row grid; its axis labels once fell off the PNG.
    import lorank.analyze.similarity as sim

    figs = []

    def keep(fig, path):
        fig.canvas.draw()
        figs.append(fig)
        return path

    monkeypatch.setattr(sim, "save_figure", keep)
    sel = {"grid": np.random.default_rng(0).random((ra, rb)), "layer": 1, "projection": "up_proj", "dim": 576}
    name = "smollm2-135m-r32-all-s42-0e62ec/checkpoint-1000"
    sim.plot_grid(sel, tmp_path / "g.png", name, name, "right")
    fig = figs[0]
    box = fig.bbox
    renderer = fig.canvas.get_renderer()
    for text in [fig.axes[0].yaxis.label, fig.axes[0].xaxis.label, fig.axes[0].title, fig.axes[1].yaxis.label]:
        ext = text.get_window_extent(renderer)
        assert ext.x0 >= box.x0 - 1 and ext.x1 <= box.x1 + 1, text.get_text()
        assert ext.y0 >= box.y0 - 1 and ext.y1 <= box.y1 + 1, text.get_text()


def test_adapters_of_two_models_of_one_shape_are_refused_by_their_bases(tiny, tmp_path):
    """Two models can share every delta shape; the bases the adapters name (hub ids, or lorank's names for them)
    tell them apart. A base lorank cannot name (a local folder) is not guessed at: the shapes decide alone."""
    import json
    import shutil

    from lorank.errors import ConfigError

    def based(src, name, **meta):
        d = tmp_path / name / "checkpoint-1"
        shutil.copytree(src, d)
        f = d / "lorank_checkpoint.json"
        f.write_text(json.dumps({**json.loads(f.read_text()), **meta}))
        return d

    smol = based(tiny["a"], "smol", base_model="smollm2-135m")  # lorank's name: HuggingFaceTB/SmolLM2-135M-Instruct
    other = based(tiny["b"], "other", base_model="org/another-model")
    same = based(tiny["b"], "same", base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(ConfigError, match=r"smol/checkpoint-1 was trained on HuggingFaceTB/SmolLM2-135M-Instruct, "
                                          r".*other/checkpoint-1 on org/another-model: adapters of different models"):
        compare_adapters(smol, other, tmp_path / "x", plots=False)
    assert compare_adapters(smol, same, tmp_path / "y", plots=False)["summary"]["modules"] > 0
    assert compare_adapters(tiny["a"], other, tmp_path / "z", plots=False)["summary"]["modules"] > 0  # a local base
