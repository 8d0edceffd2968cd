"""``merged_lora``: LoRA merged while inside, the exact base weights (same tensors, same bits) back after."""
import numpy as np
import pytest
import torch

from lorank.lora import LoraSpec, apply_lora
from lorank.models.inputs import PairEncoder
from lorank.lora.merge import merge_by_default, merged_lora
from lorank.lora.sites import lora_layers
from lorank.models.random_init import random_reranker, tiny_tokenizer
from lorank.inference.engine import Scorer

PAIRS = [("flea cycle", "flea host year " * (1 + i % 5), "") for i in range(9)]


def _model(shape="tiny-llama"):
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    model = apply_lora(random_reranker(shape, pad_token_id=tok.pad_token_id), LoraSpec(rank=2, dropout=0.1))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    return model.eval(), PairEncoder(tok), tok.pad_token_id


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("shape", ["tiny-llama", "tiny-gpt-neox"])
def test_scores_as_unmerged_inside_and_the_same_bits_after(shape):
    model, enc, pad = _model(shape)
    plain = Scorer(model, enc, pad, bf16=False).score_pairs(PAIRS)
    before = _snapshot(model)
    tensors = [m.base_layer.weight.data_ptr() for m in lora_layers(model)]
    with merged_lora(model) as n:
        assert n == len(tensors) > 0
        assert all(m.merged for m in lora_layers(model))
        changed = [not torch.equal(before[k], v) for k, v in model.state_dict().items() if "base_layer.weight" in k]
        assert all(changed)  # the deltas are in the weights
        inside = Scorer(model, enc, pad, bf16=False).score_pairs(PAIRS)
    assert np.allclose(plain, inside, atol=1e-4)
    assert not any(m.merged for m in lora_layers(model))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.base_layer.weight.data_ptr() for m in lora_layers(model)] == tensors  # the same storage
    assert np.array_equal(plain, Scorer(model, enc, pad, bf16=False).score_pairs(PAIRS))


def test_an_error_inside_still_restores_the_weights():
    model, _, _ = _model()
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        with merged_lora(model):
            raise RuntimeError("boom")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m.merged for m in lora_layers(model))


def test_a_model_already_merged_or_without_lora_is_left_alone():
    model, _, _ = _model()
    model.merge_adapter()
    before = _snapshot(model)
    with merged_lora(model) as n:
        assert n == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(m.merged for m in lora_layers(model))  # still merged: it was not ours to undo
    base = random_reranker("tiny-llama", pad_token_id=0)
    with merged_lora(base) as n:
        assert n == 0


def test_views_of_the_packed_forwards_fused_weights_stay_views():
    """In training, q/k/v and gate/up weights are views of fused tensors (lorank.models.packed): after a merged
    evaluation the packed forward must read the original weights through the same storage."""
    from lorank.models.packed import install_packed_forward

    model, _, _ = _model()
    packed = install_packed_forward(model)
    q = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    fused = packed.layers[0]["qkv"].weight
    fused_before = fused.detach().clone()
    with merged_lora(model):
        assert not torch.equal(fused, fused_before)  # the merge went through the view into the fused tensor
    assert q.data_ptr() == fused.data_ptr() and torch.equal(fused, fused_before)


def test_merge_by_default_on_cpus_only():
    assert merge_by_default("cpu") and not merge_by_default("cuda:0")
