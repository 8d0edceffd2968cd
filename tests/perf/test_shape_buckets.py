"""Issue 13, CPU side: bucketed batch shapes (forced on here; on by default only on CUDA) give the unbucketed
path's losses, gradients and scores."""
import pytest
import torch
from transformers import TrainingArguments

from lorank.data.records import Passage
from lorank.lora import LoraSpec, apply_lora
from lorank.models.inputs import PairEncoder
from lorank.models.random_init import random_reranker, tiny_tokenizer
from lorank.inference.engine import Scorer
from lorank.train.collator import (GroupCollator, bucket_rows, bucket_width, length_chunks, pad_chunk,
                                   shape_buckets_for)
from lorank.train.groups import GroupDataset, QueryPool
from lorank.train.losses import get_loss
from lorank.train.trainer import RerankTrainer


def test_ladders():
    assert [bucket_width(n) for n in (1, 16, 17, 100, 128, 129, 160, 161, 196, 256, 257, 513)] == \
        [16, 16, 32, 112, 128, 160, 160, 192, 224, 256, 320, 640]
    assert [bucket_rows(n) for n in range(1, 14)] == [1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12, 12, 16]
    assert len({bucket_width(n) for n in range(1, 257)}) == 12  # few shapes for passage-length inputs
    for n in range(1, 600):
        assert bucket_width(n) >= n and bucket_rows(n) >= n and bucket_width(n) % 16 == 0
        assert bucket_rows(n) <= max(n, 1.5 * n + 1)
    with pytest.raises(ValueError):
        bucket_rows(0)
    with pytest.raises(ValueError):
        bucket_width(0)
    assert shape_buckets_for("cpu") is False and shape_buckets_for("cuda") is True


def test_bucketed_chunks_keep_the_budget_for_the_padded_shape():
    import random

    rng = random.Random(0)
    lens = [rng.randint(5, 196) for _ in range(128)]
    for budget in (512, 4096, 16384):
        chunks = length_chunks(lens, budget, bucketed=True)
        assert sorted(i for c in chunks for i in c) == list(range(128))
        for c in chunks:
            shape = (bucket_rows(len(c)), bucket_width(max(lens[i] for i in c)))
            assert shape[0] * shape[1] <= budget or len(c) == 1
    ids, mask = pad_chunk([[5, 6, 7], [5] * 20, [9]], 1, bucketed=True)
    assert ids.shape == (3, 32)
    ids, mask = pad_chunk([[5, 6, 7]] * 5, 1, bucketed=True)
    assert ids.shape == (6, 16) and (ids[5] == 1).all() and mask[5].tolist() == [1] + [0] * 15
    assert int(mask[:5].sum()) == 15


def _setup(tmp_path, bucketed, dropout=0.0, grad_cache=False):
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    model = apply_lora(random_reranker("tiny-llama", pad_token_id=tok.pad_token_id), LoraSpec(rank=2, dropout=dropout))
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.2)
    pools = [QueryPool(f"q{i}", f"flea cycle {i}", [Passage("p", "flea cycle year " * (i + 1))],
                       [Passage(f"n{j}", "bread oven " * (j + 1)) for j in range(6)]) for i in range(3)]
    batch = GroupCollator(PairEncoder(tok), tok.pad_token_id, chunk_tokens=300, bucketed=bucketed)(
        [g for g in GroupDataset(pools, 5)])
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    tr = RerankTrainer(model=model, args=args, loss_fn=get_loss("contrastive"), grad_cache=grad_cache,
                       data_collator=lambda x: x)
    tr.current_gradient_accumulation_steps = 1
    return tok, model, batch, tr


def _repad(batch, tok):
    """The same chunks, each padded to the bucketed shape (dummy rows included)."""
    for c in batch["chunks"]:
        seqs = [row[: int(m.sum())].tolist() for row, m in zip(c["input_ids"], c["attention_mask"])]
        c["input_ids"], c["attention_mask"] = pad_chunk(seqs, tok.pad_token_id, bucketed=True)
    batch["padded_tokens"] = sum(c["input_ids"].numel() for c in batch["chunks"])
    return batch


@pytest.mark.parametrize("grad_cache", [False, True])
@pytest.mark.parametrize("mode", ["collator", "repad"])
def test_bucketed_training_step_gives_the_same_loss_and_gradients(tmp_path, grad_cache, mode):
    out = {}
    for bucketed in (False, True):
        tok, model, batch, tr = _setup(tmp_path, bucketed and mode == "collator", grad_cache=grad_cache)
        if bucketed:
            if mode == "repad":
                batch = _repad(batch, tok)
                assert any(c["input_ids"].shape[0] > c["index"].numel() for c in batch["chunks"])  # dummy rows
            assert batch["padded_tokens"] > out[False][2]  # the bucketing did something
        loss = tr.training_step(model, batch)
        out[bucketed] = (loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad},
                         batch["padded_tokens"])
    assert abs(out[False][0] - out[True][0]) < 1e-5
    for n, g in out[False][1].items():
        torch.testing.assert_close(out[True][1][n], g, atol=1e-5, rtol=1e-4)


def test_bucketed_scoring_gives_the_same_scores():
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    model = random_reranker("tiny-llama", pad_token_id=tok.pad_token_id)
    seqs = [torch.randint(3, 300, (n,)).tolist() for n in (3, 5, 9, 17, 17, 30, 33, 41, 60, 7, 12)]
    plain = Scorer(model, None, tok.pad_token_id, batch_tokens=128, bf16=False)
    plain.shape_buckets = False
    bucketed = Scorer(model, None, tok.pad_token_id, batch_tokens=128, bf16=False)
    bucketed.shape_buckets = True
    a, b = plain.score_ids(seqs), bucketed.score_ids(seqs)
    assert a.shape == b.shape == (len(seqs),)
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), atol=1e-5, rtol=1e-5)


def test_deferred_nonfinite_check_stops_before_a_save(tmp_path):
    from lorank.train.callbacks import NonFiniteGuard
    from lorank.train.trainer import NonFiniteLossError

    tok, model, batch, tr = _setup(tmp_path, False)
    tr.loss_fn = lambda s, t=None, temperature=1.0: s.sum() * float("nan")
    tr.defer_nonfinite_check = True  # what CUDA does: no host sync in the step
    tr.training_step(model, batch)  # does not stop here
    guard = next(c for c in tr.callback_handler.callbacks if isinstance(c, NonFiniteGuard))

    class Ctl:
        should_save = should_log = should_training_stop = False

    class State:
        global_step, max_steps = 1, 10

    guard.on_step_end(None, State, Ctl)  # neither a save nor a log: nothing read yet
    Ctl.should_save = True
    with pytest.raises(NonFiniteLossError, match="step 1; training stopped. The last saved checkpoint is intact"):
        guard.on_step_end(None, State, Ctl)


def test_deferred_check_passes_finite_losses(tmp_path):
    tok, model, batch, tr = _setup(tmp_path, False)
    tr.defer_nonfinite_check = True
    tr.training_step(model, batch)
    assert int(tr._first_bad_step) == -1
    tr.check_finite()
