import numpy as np
import pytest
import torch

from lorank.analyze.patching import Site, patch_scores, sweep_configs
from tests.analyze.conftest import randomize_lora

SHAPES = ["tiny-llama", "tiny-gpt-neox"]
SEQS = [list(range(5, 5 + n)) for n in (7, 3, 11, 5, 9, 4)]


def _tiny_peft(shape, layers="all"):
    from lorank.lora import LoraSpec, apply_lora
    from lorank.models.random_init import random_reranker

    pm = apply_lora(random_reranker(shape), LoraSpec(rank=4, alpha=8, dropout=0.0, layers=layers)).eval()
    randomize_lora(pm, seed=7)
    return pm


@pytest.mark.parametrize("shape", SHAPES)
def test_patching_every_layer_restores_the_finetuned_scores_exactly(shape):
    pm = _tiny_peft(shape)
    cfg = sweep_configs(4, range(4), ["layer", "attn", "mlp"], exact_check=True)
    ps = patch_scores(pm, SEQS, pad_id=1, configs=cfg, batch_tokens=24)  # several chunks
    ft, base = ps.scores["finetuned"], ps.scores["base"]
    assert not np.allclose(ft, base, atol=1e-3)
    np.testing.assert_array_equal(ps.scores["layer@3"], ft)           # the last layer's output: bit for bit
    np.testing.assert_allclose(ps.scores["all-blocks"], ft, rtol=0, atol=1e-6)  # every attention + MLP block
    # the reference scores are the model's own: LoRA on, and LoRA off per layer with the trained head
    from lorank.ablate import Mask, ablated
    from lorank.train.collator import pad_chunk

    ids, mask = pad_chunk(SEQS, 1)
    with torch.no_grad():
        np.testing.assert_allclose(ft, pm(input_ids=ids, attention_mask=mask).logits.reshape(-1).numpy(), atol=1e-5)
        with ablated(pm, Mask("off")):
            np.testing.assert_allclose(base, pm(input_ids=ids, attention_mask=mask).logits.reshape(-1).numpy(),
                                       atol=1e-5)
    assert ps.layer_calls < ps.naive_layer_calls  # cached layers were replayed, not recomputed


def _reference_patch(pm, site):
    """Naive patching without any cache: record the fine-tuned activation, overwrite it in a full base run."""
    from lorank.ablate import Mask, ablated
    from lorank.models.arch import arch_for, decoder_layers
    from lorank.train.collator import pad_chunk

    layer = decoder_layers(pm)[site.layer]
    arch = arch_for(pm.config)
    mod = layer if site.kind == "layer" else getattr(layer, arch.attn_block if site.kind == "attn" else arch.mlp_block)
    ids, mask = pad_chunk(SEQS, 1)
    rec = {}
    def keep(m, i, o):
        rec["o"] = o[0] if isinstance(o, tuple) else o  # returns None: the output is left alone

    h = mod.register_forward_hook(keep)
    with torch.no_grad():
        pm(input_ids=ids, attention_mask=mask)
    h.remove()
    h = mod.register_forward_hook(lambda m, i, o: (rec["o"],) + tuple(o[1:]) if isinstance(o, tuple) else rec["o"])
    with torch.no_grad(), ablated(pm, Mask("off")):
        s = pm(input_ids=ids, attention_mask=mask).logits.reshape(-1).numpy()
    h.remove()
    return s


@pytest.mark.parametrize("shape", SHAPES)
def test_cached_patching_equals_naive_patching(shape):
    pm = _tiny_peft(shape)
    sites = [Site("layer", 1), Site("attn", 2), Site("mlp", 0), Site("layer", 0)]
    ps = patch_scores(pm, SEQS, 1, {f"{s.kind}@{s.layer}": [s] for s in sites}, batch_tokens=10_000)
    for s in sites:
        np.testing.assert_allclose(ps.scores[f"{s.kind}@{s.layer}"], _reference_patch(pm, s), atol=1e-5)


def test_patching_below_the_first_lora_layer_changes_nothing():
    pm = _tiny_peft("tiny-llama", layers="2-3")
    cfg = sweep_configs(4, range(4), ["layer", "attn", "mlp"], exact_check=False)
    ps = patch_scores(pm, SEQS, 1, cfg)
    for name in ("layer@0", "layer@1", "attn@0", "mlp@1"):
        np.testing.assert_allclose(ps.scores[name], ps.scores["base"], atol=1e-6)
    assert not np.allclose(ps.scores["layer@2"], ps.scores["base"], atol=1e-4)


def test_patch_config_errors():
    from lorank.errors import ConfigError

    pm = _tiny_peft("tiny-llama")
    with pytest.raises(ConfigError, match="outside"):
        patch_scores(pm, SEQS, 1, {"x": [Site("layer", 4)]})
    with pytest.raises(ConfigError, match="reserved"):
        patch_scores(pm, SEQS, 1, {"base": [Site("layer", 0)]})
    with pytest.raises(ConfigError, match="site"):
        sweep_configs(4, [0], ["resid"])


def test_patch_run_features_equal_the_probe_extractor():
    from lorank.ablate import Mask, ablated
    from lorank.analyze.probes import extract_features

    pm = _tiny_peft("tiny-llama")
    ps = patch_scores(pm, SEQS, 1, {"layer@2": [Site("layer", 2)]}, features=True, batch_tokens=30)
    Xf, sf = extract_features(pm, SEQS, 1)
    with ablated(pm, Mask("off")):
        Xb, sb = extract_features(pm, SEQS, 1)
    np.testing.assert_allclose(ps.features["finetuned"], Xf, rtol=1e-5, atol=1e-4)  # other batch shapes
    np.testing.assert_allclose(ps.features["base"], Xb, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ps.scores["base"], sb, atol=1e-5)
