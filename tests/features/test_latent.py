"""The latent features are PEFT's lora_A output at the last real token, computed by hand here."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lorank.features.latent import extract_latent
from lorank.lora.sites import latent_modules

SEQS = [list(range(5, 5 + n)) for n in (7, 3, 11, 5, 9)]


def _tiny_peft(shape="tiny-llama", rank=4):
    from lorank.lora import LoraSpec, apply_lora
    from lorank.models.random_init import random_reranker
    from tests.analyze.conftest import randomize_lora

    pm = apply_lora(random_reranker(shape), LoraSpec(rank=rank, alpha=8, dropout=0.3)).eval()
    randomize_lora(pm, seed=7)
    return pm


def _module(pm, layer, proj):
    from lorank.models.arch import arch_for

    arch = arch_for(pm.config)
    for name, mod in pm.named_modules():
        if hasattr(mod, "lora_A") and arch.parse(name) == (layer, proj):
            return mod
    raise KeyError((layer, proj))


@pytest.mark.parametrize("shape,targets", [("tiny-llama", [(0, "up_proj"), (2, "down_proj"), (3, "q_proj")]),
                                           ("tiny-gpt-neox", [(1, "dense_h_to_4h"), (3, "query_key_value")])])
def test_features_equal_A_times_the_module_input_at_the_last_token(shape, targets):
    pm = _tiny_peft(shape)
    # one padded batch holds all five sequences of different lengths
    scores, acts = extract_latent(pm, SEQS, pad_id=1, targets=targets, batch_tokens=10_000)
    for key in targets:
        mod = _module(pm, *key)
        A = mod.lora_A["default"].weight.detach()  # (r, in)
        for i, s in enumerate(SEQS):
            seen = {}
            h = mod.register_forward_hook(lambda m, inp, out: seen.__setitem__("x", inp[0].detach()))
            with torch.no_grad():
                logit = pm(input_ids=torch.tensor([s])).logits.reshape(-1)[0]
            h.remove()
            by_hand = (A @ seen["x"][0, -1]).numpy()
            np.testing.assert_allclose(acts[key][i], by_hand, rtol=1e-4, atol=1e-5)
            assert scores[i] == pytest.approx(float(logit), abs=1e-4)
    assert acts[targets[0]].shape == (len(SEQS), 4)
    assert np.abs(acts[targets[0]]).max() > 1e-3  # not trivially zero


def test_a_merged_adapter_is_refused_and_the_model_mode_is_restored():
    from lorank.errors import ConfigError

    pm = _tiny_peft()
    pm.train()
    extract_latent(pm, SEQS[:2], pad_id=1, targets=[(0, "up_proj")])
    assert pm.training
    pm.merge_adapter()
    with pytest.raises(ConfigError, match="merged"):
        latent_modules(pm)
