"""Prefix-cached scoring (lorank.inference.prefix) gives the plain engine's scores, under one precision decision."""
import numpy as np
import pytest

from lorank.lora import LoraSpec, apply_lora
from lorank.models.inputs import PairEncoder
from lorank.models.random_init import random_reranker, tiny_tokenizer
from lorank.inference.engine import Scorer
from lorank.inference.prefix import PrefixScorer


@pytest.mark.precision
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", ["tiny-llama", "tiny-mistral", "tiny-gpt-neox", "tiny-gemma3"])
@pytest.mark.parametrize("peft", [False, True])
def test_prefix_cached_scores_equal_plain_scores(shape, peft, bf16):
    """Gemma 3: its tokenizer's <bos> heads the cached prefix, and a sliding window (16) shorter than the inputs
    (27-87 tokens) masks in three of its four layers, across the cached prefix and the candidate."""
    import torch

    gemma = shape == "tiny-gemma3"
    tok = tiny_tokenizer(bos=gemma)
    extra = {"bos_token_id": tok.bos_token_id, "sliding_window": 16} if gemma else {}
    model = random_reranker(shape, pad_token_id=tok.pad_token_id, **extra)
    if peft:
        model = apply_lora(model, LoraSpec(rank=2, dropout=0.0))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.2)
    enc = PairEncoder(tok)
    passages = [("flea cycle " * n, "") for n in (1, 6, 3, 11)] + [("bread oven", "Title")]
    # like with like: both paths in the same precision (fp32 exact to float tolerance; bf16 to bf16 rounding of a
    # different summation order, on O(1) scores)
    plain = Scorer(model, enc, tok.pad_token_id, bf16=bf16).score_pairs([("how long flea", t, ti) for t, ti in passages])
    cached = PrefixScorer(model, enc, tok.pad_token_id, batch_tokens=40, bf16=bf16).score_query("how long flea",
                                                                                                passages)
    tol = 5e-2 * max(1.0, float(np.abs(plain).max())) if bf16 else 1e-4
    assert np.allclose(plain, cached, atol=tol), (plain, cached)
    assert not np.allclose(plain, plain + 10 * tol, atol=tol)  # the tolerance can fail


@pytest.mark.precision
def test_plain_and_prefix_scorer_share_one_precision_decision(monkeypatch):
    """A Scorer left to decide (bf16=None) hands its decision to the prefix-cached path: --prefix-cache never
    changes the precision (it did: the prefix scorer re-decided with its own default)."""
    tok = tiny_tokenizer()
    model = random_reranker("tiny-llama", pad_token_id=tok.pad_token_id)
    enc = PairEncoder(tok)
    for env, want in (("0", False), ("1", True)):
        monkeypatch.setenv("LORANK_BF16", env)
        sc = Scorer(model, enc, tok.pad_token_id, prefix_cache=True)
        sc.score_pairs([("q", "a passage", "")])
        assert sc.bf16 is want and sc._prefix_scorer.bf16 is want
        assert sc.describe()["precision"] == ("bf16" if want else "fp32")
        assert sc.describe()["reason"] == f"LORANK_BF16={env}"
