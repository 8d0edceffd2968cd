"""FastDropout: the right drop rate and scale, exact replay under checkpointing and grad_cache, eval = identity."""
import pytest
import torch

from lorank.lora import LoraSpec, apply_lora
from lorank.models.random_init import random_reranker
from lorank.lora.dropout import FastDropout, use_fast_dropout
from lorank.train.trainer import enable_checkpointing


def test_drop_rate_scale_and_gradient():
    torch.manual_seed(0)
    d = FastDropout(0.1).train()
    x = torch.randn(300, 301, requires_grad=True)
    y = d(x)
    keep = y != 0
    assert abs((1 - keep.float().mean().item()) - 0.1) < 0.005
    scale = 1 / (1 - round(0.1 * 65536) / 65536)
    assert torch.allclose(y[keep], x.detach()[keep] * scale)
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.allclose(x.grad, g * keep * scale)
    assert torch.equal(d.eval()(x), x)
    assert torch.equal(FastDropout(0.0).train()(x), x)
    with pytest.raises(ValueError):
        FastDropout(1.0)


def test_mask_lanes_are_unbiased():
    torch.manual_seed(1)
    y = FastDropout(0.5).train()(torch.ones(4, 100_000))
    # every 16-bit lane of the 64-bit words drops ~half: no lane is stuck (a 63-bit draw would bias the top one)
    for lane in range(4):
        frac = (y.reshape(-1)[lane::4] == 0).float().mean().item()
        assert abs(frac - 0.5) < 0.01, (lane, frac)


def _lora_grads(mode, fast):
    torch.manual_seed(0)
    model = apply_lora(random_reranker("tiny-llama", pad_token_id=1), LoraSpec(rank=4, dropout=0.3))
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.2)
    if fast:
        assert use_fast_dropout(model) == 4 * 7  # 4 layers x 7 projections
    enable_checkpointing(model, mode)
    model.train()
    ids = torch.randint(3, 300, (3, 15), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(7)
    model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.pow(2).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_fast_dropout_replays_exactly_under_checkpointing():
    ref = _lora_grads("none", True)
    for mode in ("selective", "full"):
        got = _lora_grads(mode, True)
        assert all(torch.allclose(ref[n], got[n], atol=1e-6, rtol=1e-5) for n in ref), mode
    assert any(not torch.allclose(ref[n], g) for n, g in _lora_grads("none", False).items())  # other masks


def test_fast_dropout_with_grad_cache_gives_the_plain_steps_gradients(tmp_path):
    from transformers import TrainingArguments

    from lorank.data.records import Passage
    from lorank.models.inputs import PairEncoder
    from lorank.models.random_init import tiny_tokenizer
    from lorank.train.collator import GroupCollator
    from lorank.train.groups import GroupDataset, QueryPool
    from lorank.train.losses import get_loss
    from lorank.train.trainer import RerankTrainer

    tok = tiny_tokenizer()
    pools = [QueryPool(f"q{i}", f"flea cycle {i}", [Passage("p", "flea cycle year " * (i + 1))],
                       [Passage(f"n{j}", "bread oven " * (j + 1)) for j in range(6)]) for i in range(2)]
    batch = GroupCollator(PairEncoder(tok), tok.pad_token_id, chunk_tokens=40)(list(GroupDataset(pools, 4)))
    out = []
    for gc in (False, True):
        torch.manual_seed(0)
        model = apply_lora(random_reranker("tiny-llama", pad_token_id=tok.pad_token_id), LoraSpec(rank=2, dropout=0.3))
        use_fast_dropout(model)
        args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
        tr = RerankTrainer(model=model, args=args, loss_fn=get_loss("contrastive"), grad_cache=gc, data_collator=lambda x: x)
        tr.current_gradient_accumulation_steps = 1
        torch.manual_seed(1)
        tr.training_step(model, batch)
        out.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert all(torch.allclose(out[0][n], out[1][n], atol=1e-5, rtol=1e-4) for n in out[0])
