"""DyLoRA (issue 44, lorank.lora.dylora) on tiny random models: the rank per step is a function of the seed and the
step; the forward at b = k is the rank-k LoRA (A, B cut to k at alpha/k); which factors get a gradient in the
``full`` and ``frozen`` modes; a saved DyLoRA adapter is a plain PEFT LoRA whose ``rank-prefix`` ablation gives the
rank-k LoRA's scores; a few training steps through ``lorank.train`` record the variant and the ranks drawn."""
import json

import numpy as np
import pytest
import torch

from lorank.ablate import Mask, ablated
from lorank.ablate.engine import score_configs
from lorank.ablate.sweeps import build_sweep
from lorank.lora import LoraSpec, apply_lora
from lorank.lora.dylora import DyLoraTruncation, prefix_factors, sample_rank
from lorank.lora.sites import lora_sites
from lorank.models.random_init import random_reranker
from tests.tinydata import make_trec_dir, save_tiny_model

R, ALPHA = 8, 16
IDS = torch.randint(3, 300, (3, 9))


def _dylora(shape="tiny-llama", seed=1):
    torch.manual_seed(seed)
    pm = apply_lora(random_reranker(shape), LoraSpec(rank=R, alpha=ALPHA, dropout=0.0, variant="dylora")).eval()
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_A" in n or "lora_B" in n:
                p.normal_(0, 0.3)
    return pm


def _rank_k_lora(pm, k, shape="tiny-llama"):
    """A plain PEFT LoRA of rank k (alpha as given: scale alpha/k) holding the first k components of ``pm``."""
    torch.manual_seed(1)
    small = apply_lora(random_reranker(shape), LoraSpec(rank=k, alpha=ALPHA, dropout=0.0)).eval()
    big = dict(pm.named_parameters())
    with torch.no_grad():
        for n, p in small.named_parameters():
            src = big[n]
            if "lora_A" in n:
                p.copy_(src[:k])
            elif "lora_B" in n:
                p.copy_(src[:, :k])
            else:
                p.copy_(src)
    return small


def _scores(m):
    with torch.no_grad():
        return m(input_ids=IDS).logits.reshape(-1)


def _train_lora_only(pm, trunc):
    """Dropout-free model in eval mode except the LoRA factors, which truncate only in training mode."""
    pm.eval()
    for mod in trunc.patched:
        mod.train()


def test_the_rank_per_step_depends_on_the_seed_and_step_alone():
    a = [sample_rank(42, s, 32) for s in range(1, 2001)]
    assert a == [sample_rank(42, s, 32) for s in range(1, 2001)]
    assert a != [sample_rank(43, s, 32) for s in range(1, 2001)]
    assert min(a) == 1 and max(a) == 32
    counts = np.bincount(a, minlength=33)[1:]
    assert counts.min() > 2000 / 32 * 0.5  # uniform over 1..32, roughly


@pytest.mark.parametrize("shape", ["tiny-llama", "tiny-gpt-neox"])
@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_dylora_at_rank_k_is_the_lora_truncated_to_k(shape, k):
    pm = _dylora(shape)
    full = _scores(pm)
    trunc = DyLoraTruncation(pm)
    _train_lora_only(pm, trunc)
    trunc.set_rank(k)
    at_k = _scores(pm)
    ref = _scores(_rank_k_lora(pm, k, shape))
    torch.testing.assert_close(at_k, ref, rtol=1e-5, atol=1e-5)
    if k < R:
        assert not torch.allclose(at_k, full)
    pm.eval()  # outside training the adapter is the rank-r LoRA
    assert torch.equal(_scores(pm), full)
    with ablated(pm, Mask("prefix", rank=k)):  # the ablation's truncation is the same
        torch.testing.assert_close(_scores(pm), ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(_scores(pm), full)
    trunc.remove()
    assert torch.equal(_scores(pm), full)


@pytest.mark.parametrize("mode", ["full", "frozen"])
def test_which_factors_a_step_at_rank_b_updates(mode):
    pm = _dylora()
    trunc = DyLoraTruncation(pm, mode)
    _train_lora_only(pm, trunc)
    b = 3
    trunc.set_rank(b)
    pm(input_ids=IDS).logits.sum().backward()
    site = lora_sites(pm)[0].module
    ga, gb = site.lora_A["default"].weight.grad, site.lora_B["default"].weight.grad
    rows_a = (ga.abs().sum(1) > 0).tolist()
    cols_b = (gb.abs().sum(0) > 0).tolist()
    want = [i < b for i in range(R)] if mode == "full" else [i == b - 1 for i in range(R)]
    assert rows_a == want and cols_b == want


def test_prefix_factors_rescale_to_alpha_over_k():
    A, B = torch.randn(8, 5), torch.randn(6, 8)
    a, b, f = prefix_factors(A, B, 2)
    assert f == 4.0 and torch.equal(a[:2], A[:2]) and not a[2:].any() and not b[:, 2:].any()
    torch.testing.assert_close(f * ALPHA / 8 * (b @ a), ALPHA / 2 * (B[:, :2] @ A[:2]))


@pytest.mark.parametrize("merge", [False, True])
def test_the_rank_prefix_sweep_of_a_saved_dylora_adapter_gives_the_rank_k_loras(tmp_path, merge):
    from peft import PeftModel

    pm = _dylora()
    pm.save_pretrained(tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == R and cfg["lora_alpha"] == ALPHA  # a plain PEFT LoRA
    torch.manual_seed(1)
    loaded = PeftModel.from_pretrained(random_reranker("tiny-llama"), tmp_path / "ckpt").eval()
    configs = build_sweep("rank-prefix", loaded)
    assert [c.name for c in configs] == ["prefix 1", "prefix 2", "prefix 4"]
    seqs = [list(map(int, row)) for row in IDS]
    sc = score_configs(loaded, seqs, 0, configs, merge_lora=merge)
    for k in (1, 2, 4):
        tol = 1e-4 if merge else 1e-5
        np.testing.assert_allclose(sc.scores[f"prefix {k}"], _scores(_rank_k_lora(pm, k)).numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(sc.scores["full"], _scores(pm).numpy(), rtol=1e-4, atol=1e-4)


def test_a_few_dylora_training_steps(tmp_path):
    from lorank.adapters import read_checkpoint_meta, read_peft_config
    from lorank.train.config import TrainConfig
    from lorank.train.run import train

    dev, model = make_trec_dir(tmp_path / "dev"), save_tiny_model(tmp_path / "model")
    out = tmp_path / "run"
    cfg = TrainConfig.from_dict({
        "model": str(model), "dtype": "fp32", "data": [{"kind": "trec", "path": str(dev)}], "group_size": 4,
        "batch_queries": 2, "max_steps": 4, "lr": 1e-3, "seed": 7,
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0, "variant": "dylora"},
        "checkpoints": {"steps": "4"}, "eval": {"sets": [], "test_sets": []}, "output_dir": str(out)})
    train(cfg, progress=False)
    summary = json.loads((out / "train_summary.json").read_text())
    drawn = [sample_rank(7, s, 4) for s in range(1, 5)]
    assert summary["dylora_ranks"] == {str(b): drawn.count(b) for b in sorted(set(drawn))}
    assert summary["execution"]["forward"] == "hf"
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["execution"]["forward_reason"].startswith("auto: lora.variant: dylora")
    ck = out / "checkpoint-4"
    assert read_peft_config(ck)["r"] == 4  # loads as a plain LoRA
    assert read_checkpoint_meta(ck)["lora"]["variant"] == "dylora"
    assert read_checkpoint_meta(ck)["lora"]["dylora"] == {"mode": "full"}
