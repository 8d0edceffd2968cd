"""Ablation masks and sweeps (lorank.ablate) on tiny random LoRA models: masking everything or nothing, layer
masks, cached and merged sweeps against naive scoring, DoRA refusals, low-rank truncation."""
import numpy as np
import pytest
import torch

from lorank.ablate import Mask, ablated
from lorank.lora import LoraSpec, apply_lora
from lorank.lora.sites import lora_sites
from lorank.models.arch import backbone, decoder_layers
from lorank.models.random_init import random_reranker

SHAPES = ["tiny-llama", "tiny-mistral", "tiny-gpt-neox"]


def _trained(shape, variant="lora"):
    base = random_reranker(shape)
    torch.manual_seed(1)
    with torch.no_grad():
        base.score.weight.normal_(0, 0.5)
    pm = apply_lora(base, LoraSpec(rank=4, alpha=8, dropout=0.0, variant=variant)).eval()
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n or "lora_A" in n:
                p.normal_(0, 0.3)
            if "modules_to_save" in n:
                p.normal_(0, 0.5)  # the trained head differs from the original
    return pm


IDS = torch.randint(3, 300, (3, 9))


def scores(m):
    with torch.no_grad():
        return m(input_ids=IDS).logits.reshape(-1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("variant", ["lora", "dora"])
def test_masking_everything_gives_base_with_trained_head(shape, variant):
    pm = _trained(shape, variant)
    full = scores(pm)
    with ablated(pm, Mask("off")):
        masked = scores(pm)
    # reference: the same model with every LoRA layer's delta removed by hand, head kept
    for s in lora_sites(pm):
        s.module.enable_adapters(False)
    ref = scores(pm)
    for s in lora_sites(pm):
        s.module.enable_adapters(True)
    assert torch.equal(masked, ref)
    assert not torch.allclose(masked, full)
    assert torch.equal(scores(pm), full)  # removal restores bit for bit


@pytest.mark.parametrize("shape", SHAPES)
def test_masking_nothing_and_truncating_at_full_rank_give_the_full_model(shape):
    pm = _trained(shape)
    full = scores(pm)
    with ablated(pm, Mask("scale", factor=1.0)):
        assert torch.equal(scores(pm), full)
    with ablated(pm, Mask("truncate", rank=4)):
        assert torch.allclose(scores(pm), full, atol=1e-5)
    with ablated(pm, Mask("truncate", rank=1)):
        assert not torch.allclose(scores(pm), full, atol=1e-4)
    assert torch.equal(scores(pm), full)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_layer_mask_leaves_lower_layers_unchanged(shape):
    pm = _trained(shape)
    layers = decoder_layers(pm)
    outs = {}

    def hook(i):
        def f(mod, inp, out):
            outs.setdefault(i, []).append((out[0] if isinstance(out, tuple) else out).detach().clone())
        return f

    hs = [layers[i].register_forward_hook(hook(i)) for i in range(len(layers))]
    scores(pm)
    with ablated(pm, Mask("off", layers=[2])):
        scores(pm)
    for h in hs:
        h.remove()
    assert torch.equal(outs[0][0], outs[0][1]) and torch.equal(outs[1][0], outs[1][1])
    assert not torch.equal(outs[2][0], outs[2][1])


def test_keep_only_mha_equals_switching_off_mlp_and_masks_compose():
    pm = _trained("tiny-llama")
    with ablated(pm, Mask("keep", components=["mha"])):
        a = scores(pm)
    with ablated(pm, Mask("off", components=["mlp"])):
        b = scores(pm)
    with ablated(pm, Mask("off", components=["mlp"]), Mask("off", projections=["attn.q"], layers="0-1")):
        c = scores(pm)
    assert torch.equal(a, b)
    assert not torch.equal(b, c)
    assert backbone(pm) is not None


def test_dora_refuses_fractional_scaling():
    from lorank.errors import ConfigError

    pm = _trained("tiny-llama", "dora")
    with pytest.raises(ConfigError, match="DoRA"):
        with ablated(pm, Mask("scale", factor=0.5)):
            pass


@pytest.mark.parametrize("shape", SHAPES)
def test_cached_sweep_scores_equal_naive_scores(shape):
    from lorank.ablate.engine import score_configs
    from lorank.ablate.sweeps import BASE, build_sweep

    pm = _trained(shape)
    seqs = [list(range(5, 5 + n)) for n in (4, 9, 7, 12, 3)]
    cfgs = [BASE] + build_sweep("layers-leave-one-out", pm) + build_sweep("components", pm)
    cached = score_configs(pm, seqs, 1, cfgs, use_cache=True)
    naive = score_configs(pm, seqs, 1, cfgs, use_cache=False)
    for name in naive.scores:
        assert np.allclose(cached.scores[name], naive.scores[name], atol=1e-6), name
    assert cached.layer_calls < naive.layer_calls


@pytest.mark.parametrize("shape", SHAPES)
def test_merged_sweep_scores_equal_unmerged_and_leave_the_weights_as_they_were(shape):
    """Every kind of configuration (off, keep, scale, truncate; cached from a layer, or whole) merged into the
    weights scores as the LoRA path does (fp32), and the model comes back bit for bit, unmerged."""
    from lorank.ablate.engine import Config, score_configs
    from lorank.ablate.sweeps import BASE, build_sweep

    pm = _trained(shape)
    seqs = [list(range(5, 5 + n)) for n in (4, 9, 7, 12, 3)]
    cfgs = [BASE] + [c for sw in ("components", "projections", "layer-windows", "rank-truncation",
                                   "layers-leave-one-out") for c in build_sweep(sw, pm, window=1)]
    cfgs.append(Config("half", [Mask("scale", layers=[1], factor=0.5)]))
    before = {k: v.clone() for k, v in pm.state_dict().items()}
    plain = score_configs(pm, seqs, 1, cfgs, merge_lora=False, batch_tokens=24)
    merged = score_configs(pm, seqs, 1, cfgs, merge_lora=True, batch_tokens=24)
    assert merged.merged and not plain.merged
    assert score_configs(pm, seqs, 1, cfgs[:2], batch_tokens=24).merged  # the default on a CPU
    for name in plain.scores:
        np.testing.assert_allclose(merged.scores[name], plain.scores[name], atol=1e-4, err_msg=name)
    assert not np.allclose(merged.scores["none"], merged.scores["full"])  # the configurations do differ
    after = pm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(s.module.merged for s in lora_sites(pm))


def test_dora_sweeps_are_scored_unmerged():
    from lorank.ablate.engine import score_configs
    from lorank.ablate.sweeps import BASE, build_sweep

    pm = _trained("tiny-llama", "dora")
    cfgs = [BASE] + build_sweep("components", pm)
    assert not score_configs(pm, [[5, 6, 7]], 1, cfgs).merged
    with pytest.raises(ValueError, match="DoRA"):
        score_configs(pm, [[5, 6, 7]], 1, cfgs, merge_lora=True)


@pytest.mark.parametrize("out,inn,r", [(48, 20, 4), (20, 48, 4), (16, 16, 8), (10, 3, 8)])
def test_low_rank_svd_truncates_like_the_svd_of_the_product(out, inn, r):
    from lorank.lora.factors import delta_svd

    torch.manual_seed(0)
    B, A = torch.randn(out, r), torch.randn(r, inn)
    U, S, Vh = delta_svd(B, A)
    U2, S2, Vh2 = torch.linalg.svd(B.double() @ A.double(), full_matrices=False)
    n = min(out, inn, r)
    assert torch.allclose(S[:n], S2[:n], atol=1e-10)
    for k in range(1, n + 1):
        assert torch.allclose((U[:, :k] * S[:k]) @ Vh[:k], (U2[:, :k] * S2[:k]) @ Vh2[:k], atol=1e-9), k
