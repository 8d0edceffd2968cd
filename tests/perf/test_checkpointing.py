"""Activation checkpointing modes give the plain step's gradients (dropout masks replayed exactly)."""
import pytest
import torch

from lorank.errors import LorankError
from lorank.lora import LoraSpec, apply_lora
from lorank.models.random_init import random_reranker
from lorank.train.trainer import enable_checkpointing


def _grads(shape, mode, dropout):
    torch.manual_seed(0)
    model = apply_lora(random_reranker(shape, pad_token_id=1), LoraSpec(rank=4, dropout=dropout))
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.2)
    assert enable_checkpointing(model, mode) == {True: "full", False: "none"}.get(mode, mode)
    model.train()
    ids = torch.randint(3, 300, (3, 17), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 11:] = 0
    torch.manual_seed(5)
    model(input_ids=ids, attention_mask=mask).logits.pow(2).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("shape", ["tiny-llama", "tiny-gpt-neox"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_checkpointing_modes_give_the_plain_gradients(shape, dropout):
    ref = _grads(shape, "none", dropout)
    for mode in ("selective", True):
        got = _grads(shape, mode, dropout)
        for n in ref:
            assert torch.allclose(ref[n], got[n], atol=1e-6, rtol=1e-5), (mode, n)


def test_selective_policy_keeps_projections_and_recomputes_lora_b():
    from torch.utils.checkpoint import CheckpointPolicy

    from lorank.train.trainer import _selective_policy

    mm = torch.ops.aten.mm.default
    x, w = torch.zeros(10, 64 + 1), torch.zeros(65, 128)
    assert _selective_policy(None, mm, x, w) == CheckpointPolicy.MUST_SAVE  # a projection / LoRA A
    assert _selective_policy(None, mm, torch.zeros(10, 8), torch.zeros(8, 128)) == CheckpointPolicy.PREFER_RECOMPUTE
    assert _selective_policy(None, torch.ops.aten.silu.default, x) == CheckpointPolicy.PREFER_RECOMPUTE


def test_unknown_mode_is_refused():
    with pytest.raises(LorankError, match="selective"):
        enable_checkpointing(random_reranker("tiny-llama"), "partial")
