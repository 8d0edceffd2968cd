"""The forward changes made for GPUs, checked on CPU: mask-free right-padded chunks, width buckets, and
PEFT's input cast switched off under autocast."""
import pytest
import torch

from lorank.lora import LoraSpec, apply_lora
from lorank.models.random_init import random_reranker
from lorank.train.collator import pad_chunk
from lorank.lora.sites import disable_input_cast
from lorank.train.trainer import causal_mask_arg


@pytest.mark.parametrize("shape", ["tiny-llama", "tiny-mistral", "tiny-gpt-neox"])
def test_right_padded_chunk_scores_equal_without_the_padding_mask(shape):
    # what causal_mask_arg relies on when it drops the mask on CUDA
    torch.manual_seed(0)
    model = random_reranker(shape, pad_token_id=1).eval()
    seqs = [torch.randint(3, 200, (n,)).tolist() for n in (3, 17, 40, 9)]
    ids, mask = pad_chunk(seqs, 1, 16)
    assert ids.shape == (4, 48) and int(mask.sum()) == 69
    with torch.no_grad():
        masked = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.reshape(-1)
        unmasked = model(input_ids=ids, attention_mask=None, use_cache=False).logits.reshape(-1)
        alone = torch.cat([model(input_ids=torch.tensor([s]), use_cache=False).logits.reshape(-1) for s in seqs])
    torch.testing.assert_close(unmasked, masked, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unmasked, alone, atol=1e-5, rtol=1e-5)


def test_causal_mask_arg_keeps_the_mask_on_cpu():
    mask = torch.ones(2, 3, dtype=torch.long)
    assert causal_mask_arg(mask) is mask


def test_pad_chunk_rounds_width_up_to_the_multiple():
    ids, mask = pad_chunk([[5, 6, 7], [5]], 0, 16)
    assert ids.shape == (2, 16) and mask.tolist()[0][:4] == [1, 1, 1, 0] and int(mask.sum()) == 4
    assert pad_chunk([[5] * 16], 0, 16)[0].shape == (1, 16)
    assert pad_chunk([[5, 6, 7]], 0)[0].shape == (1, 3)


def test_disabling_peft_input_cast_keeps_outputs_under_autocast():
    torch.manual_seed(0)
    model = apply_lora(random_reranker("tiny-llama", pad_token_id=1).to(torch.bfloat16), LoraSpec(rank=4, dropout=0.0))
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.data = p.data.float()  # fp32 adapter on a bf16 base, as lorank trains on GPUs
            if "lora_B" in name:
                p.data.normal_(0, 0.1)  # B != 0, so the adapter contributes
    ids = torch.randint(3, 200, (2, 12))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = model(input_ids=ids, use_cache=False).logits.float()
        n = disable_input_cast(model)
        after = model(input_ids=ids, use_cache=False).logits.float()
    assert n == sum(1 for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "_cast_input_dtype")) > 0
    assert all(not m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled"))
    torch.testing.assert_close(after, before, atol=2e-2, rtol=2e-2)
