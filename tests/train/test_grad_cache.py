import pytest
import torch
from transformers import TrainingArguments

from lorank.lora import LoraSpec, apply_lora
from lorank.models.inputs import PairEncoder
from lorank.models.random_init import random_reranker, tiny_tokenizer
from lorank.train.collator import GroupCollator
from lorank.train.groups import GroupDataset, QueryPool
from lorank.data.records import Passage
from lorank.train.losses import get_loss
from lorank.train.trainer import RerankTrainer


def _grads(grad_cache: bool, dropout: float, tmp_path, ga: int = 1):
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    model = apply_lora(random_reranker("tiny-llama", pad_token_id=tok.pad_token_id), LoraSpec(rank=2, dropout=dropout))
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.2)
    pools = [QueryPool(f"q{i}", f"flea cycle {i}", [Passage("p", "flea cycle year " * (i + 1))],
                       [Passage(f"n{j}", "bread oven " * (j + 1)) for j in range(6)]) for i in range(2)]
    batch = GroupCollator(PairEncoder(tok), tok.pad_token_id, chunk_tokens=40)([g for g in GroupDataset(pools, 4)])
    assert len(batch["chunks"]) > 1
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], gradient_accumulation_steps=ga)
    tr = RerankTrainer(model=model, args=args, loss_fn=get_loss("contrastive"), grad_cache=grad_cache,
                       data_collator=lambda x: x)
    tr.current_gradient_accumulation_steps = ga
    torch.manual_seed(1)
    loss = tr.training_step(model, batch)
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("dropout,ga", [(0.0, 1), (0.3, 1), (0.0, 2)])
def test_grad_cache_gives_the_plain_steps_gradients(tmp_path, dropout, ga):
    l1, g1 = _grads(False, dropout, tmp_path, ga)
    l2, g2 = _grads(True, dropout, tmp_path, ga)
    assert abs(l1 - l2) < 1e-5
    for n in g1:
        assert torch.allclose(g1[n], g2[n], atol=1e-5, rtol=1e-4), n


@pytest.mark.parametrize("grad_cache", [False, True])
def test_nonfinite_loss_stops_or_is_skipped_and_counted(tmp_path, grad_cache):
    from lorank.train.trainer import NonFiniteLossError

    tok = tiny_tokenizer()
    model = apply_lora(random_reranker("tiny-llama", pad_token_id=tok.pad_token_id), LoraSpec(rank=2, dropout=0.0))
    pools = [QueryPool("q", "flea", [Passage("p", "flea cycle")], [Passage(f"n{j}", "bread " * (j + 1)) for j in range(4)])]
    batch = GroupCollator(PairEncoder(tok), tok.pad_token_id)([g for g in GroupDataset(pools, 4)])
    nan_loss = lambda s, t=None, temperature=1.0: s.sum() * float("nan")  # noqa: E731
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    tr = RerankTrainer(model=model, args=args, loss_fn=nan_loss, grad_cache=grad_cache, data_collator=lambda x: x)
    tr.current_gradient_accumulation_steps = 1
    with pytest.raises(NonFiniteLossError, match="checkpoint is intact"):
        tr.training_step(model, batch)
    tr.skip_nonfinite = True
    model.zero_grad()
    tr.training_step(model, batch)
    assert tr.skipped_batches == 1
    assert all(p.grad is None or torch.all(p.grad == 0) for p in model.parameters() if p.requires_grad)
