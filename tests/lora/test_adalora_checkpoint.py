"""A saved AdaLoRA checkpoint (issue 44) read back outside training, on a tiny random model: it loads through
``Reranker.from_adapter`` and scores as the model that saved it (fp32); the sweeps that switch deltas off
(``components``, ``layer-windows``) give the scores of the deltas zeroed by hand; the weights view's delta is PEFT's
``B (E*A) * alpha / ranknum``; what AdaLoRA's three factors do not support (rank truncation and prefix, latent
features) is refused by name; a config whose rank pattern does not fit is refused before PEFT reads it."""
import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from lorank.ablate.engine import score_configs
from lorank.ablate.sweeps import build_sweep
from lorank.errors import ConfigError
from lorank.lora import LoraSpec, apply_lora
from lorank.lora.adalora import orth_penalty, update_budget
from lorank.models.loading import load_reranker
from lorank.reranker import Reranker
from tests.tinydata import save_tiny_model

IDS = torch.randint(3, 300, (5, 9), generator=torch.Generator().manual_seed(3))
QUERY, PASSAGES = "what is low rank adaptation", ["low rank adaptation of language models", "a cat sat on a mat",
                                                   "budget allocation of singular values", "x", "ranking passages"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(the AdaLoRA model after a tiny budget schedule, its tokenizer, its saved checkpoint folder)."""
    root = tmp_path_factory.mktemp("adalora")
    lm = load_reranker(str(save_tiny_model(root / "model")), dtype="fp32")
    torch.manual_seed(0)
    spec = LoraSpec(rank=6, alpha=8, dropout=0.0, variant="adalora",
                    adalora={"target_r": 2, "tinit": 2, "tfinal": 3, "deltaT": 1})
    pm = apply_lora(lm.model, spec, total_step=8)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    pm.train()
    for step in range(8):
        loss = pm(input_ids=IDS).logits.square().mean() + orth_penalty(pm)
        loss.backward()
        opt.step()
        update_budget(pm, step)
        opt.zero_grad()
    pm.eval()
    with warnings.catch_warnings():  # PEFT warns about the zero-size factors of the modules pruned to rank 0
        warnings.simplefilter("ignore")
        pm.save_pretrained(root / "ckpt")
    return pm, lm.tokenizer, root / "ckpt"


def _scores(m):
    with torch.no_grad():
        return m(input_ids=IDS).logits.reshape(-1).double().numpy()


def test_a_saved_adalora_checkpoint_loads_and_scores_as_at_the_end_of_training(saved):
    pm, tok, ckpt = saved
    cfg = json.loads((ckpt / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "ADALORA" and cfg["rank_pattern"]
    assert any(not any(v) for v in cfg["rank_pattern"].values()), "a module pruned to rank 0 (zero-size factors)"
    live = Reranker(pm, tok, bf16=False).score(QUERY, PASSAGES)
    loaded = Reranker.from_adapter(ckpt, bf16=False)
    np.testing.assert_allclose(loaded.score(QUERY, PASSAGES), live, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_scores(loaded.model), _scores(pm), rtol=1e-5, atol=1e-6)


def _zeroed(pm, keep):
    """Scores of ``pm`` with the singular values of every module ``keep(layer, name)`` rejects set to zero."""
    saved_e = {}
    with torch.no_grad():
        for name, mod in pm.named_modules():
            if hasattr(mod, "lora_E") and "default" in mod.lora_E:
                layer = int(name.split(".layers.")[1].split(".")[0])
                if not keep(layer, name):
                    saved_e[name] = mod.lora_E["default"].detach().clone()
                    mod.lora_E["default"].zero_()
        out = _scores(pm)
        for name, mod in pm.named_modules():
            if name in saved_e:
                mod.lora_E["default"].copy_(saved_e[name])
    return out


@pytest.mark.parametrize("merge", [False, True])
def test_the_sweeps_that_switch_deltas_off_work_on_adalora(saved, merge):
    pm, _, ckpt = saved
    model = Reranker.from_adapter(ckpt, bf16=False).model
    seqs = [list(map(int, row)) for row in IDS]
    configs = build_sweep("components", model) + build_sweep("layer-windows", model, window=2)
    assert [c.name for c in configs] == ["mha-only", "mlp-only", "only L0-1", "only L1-2", "only L2-3"]
    sc = score_configs(model, seqs, 0, configs, merge_lora=merge)
    want = {"mha-only": lambda layer, n: ".self_attn." in n, "mlp-only": lambda layer, n: ".mlp." in n,
            "only L0-1": lambda layer, n: layer <= 1, "only L1-2": lambda layer, n: 1 <= layer <= 2,
            "only L2-3": lambda layer, n: layer >= 2}
    tol = 1e-4 if merge else 1e-5
    for name, keep in want.items():
        np.testing.assert_allclose(sc.scores[name], _zeroed(pm, keep), rtol=tol, atol=tol)
    np.testing.assert_allclose(sc.scores["full"], _scores(pm), rtol=tol, atol=tol)
    np.testing.assert_allclose(_scores(model), _scores(pm), rtol=1e-5, atol=1e-6)  # restored after the sweep


def test_factor_surgery_and_latent_features_are_refused_on_adalora(saved):
    from lorank.ablate import Mask, ablated
    from lorank.lora.sites import latent_modules

    _, _, ckpt = saved
    model = Reranker.from_adapter(ckpt, bf16=False).model
    before = _scores(model)
    for sweep in ("rank-truncation", "rank-prefix"):
        with pytest.raises(ConfigError, match=f"the {sweep} sweep is not supported for AdaLoRA"):
            build_sweep(sweep, model)
    with pytest.raises(ConfigError, match="not supported for AdaLoRA"):
        with ablated(model, Mask("off", components=["mlp"]), Mask("truncate", rank=1)):
            pass
    np.testing.assert_array_equal(_scores(model), before)  # the mask before the refused one was put back
    with pytest.raises(ConfigError, match=r"latent LoRA features \(A x\) is not supported for AdaLoRA"):
        latent_modules(model)


def test_the_weights_view_reads_adaloras_delta_with_its_singular_values(saved, tmp_path):
    from lorank.analyze import weight_stats
    from lorank.analyze.common import read_adapter

    pm, _, ckpt = saved
    af = read_adapter(ckpt)
    assert af.variant == "adalora"
    live = {}
    for name, mod in pm.named_modules():
        if hasattr(mod, "lora_E") and "default" in mod.lora_E:
            layer = int(name.split(".layers.")[1].split(".")[0])
            live[(layer, name.rsplit(".", 1)[-1])] = mod.get_delta_weight("default").detach().double()
    assert set(af.modules) == set(live)
    for key, mod in af.modules.items():
        torch.testing.assert_close(mod.scaling * (mod.B.double() @ mod.A.double()), live[key], rtol=1e-5,
                                   atol=1e-7)
    res = weight_stats(ckpt, tmp_path / "w", base_weights=False, plots=False)
    assert res["variant"] == "adalora" and res["scaling_rule"].startswith("alpha/init_r")
    by_key = {(r["layer"], r["projection"]): r for r in res["modules"]}
    for key, delta in live.items():
        assert by_key[key]["fro"] == pytest.approx(float(delta.norm()), rel=1e-5, abs=1e-9)
        assert by_key[key]["rank"] == af.modules[key].rank


def test_an_adalora_config_that_does_not_fit_its_weights_is_refused(saved, tmp_path):
    from lorank.adapters import read_peft_config

    _, _, ckpt = saved
    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    cfg = json.loads((ckpt / "adapter_config.json").read_text())
    key = next(k for k, v in cfg["rank_pattern"].items() if any(v))
    cfg["rank_pattern"][key] = [True] * len(cfg["rank_pattern"][key])
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="singular values, its rank_pattern in adapter_config.json keeps 6"):
        Reranker.from_adapter(bad)
    cfg["rank_pattern"][key] = [True, False]
    cfg.pop("init_r")
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="field 'init_r' is missing"):
        read_peft_config(bad)
    cfg["init_r"] = 6
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"must be a list of 6 booleans \(init_r\)"):
        read_peft_config(bad)
