"""``Scorer(prefix_cache=True)`` gives the plain scores (tiny Llama / Mistral / GPT-NeoX, with a LoRA)."""
import numpy as np
import pytest
import torch

from lorank.lora import LoraSpec, apply_lora
from lorank.models.inputs import PairEncoder
from lorank.models.random_init import random_reranker, tiny_tokenizer
from lorank.inference.engine import Scorer


def _model(shape, tok):
    model = apply_lora(random_reranker(shape, pad_token_id=tok.pad_token_id), LoraSpec(rank=2, dropout=0.1))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    return model


def _plain_scores(pairs):
    """A tiny Llama with a LoRA, its encoder and pad id, and the plain scorer's scores of ``pairs``."""
    tok = tiny_tokenizer()
    model = _model("tiny-llama", tok).eval()
    enc = PairEncoder(tok)
    return model, enc, tok.pad_token_id, Scorer(model, enc, tok.pad_token_id, bf16=False).score_pairs(pairs)


@pytest.mark.parametrize("shape", ["tiny-llama", "tiny-mistral", "tiny-gpt-neox"])
def test_prefix_cache_flag_gives_plain_scores_and_rankings(shape):
    tok = tiny_tokenizer()
    model = _model(shape, tok)
    model.train()  # the scorer must switch dropout off and restore the mode
    enc = PairEncoder(tok)
    queries = {"q1": "how long flea", "q2": "concrete floor cost judgment"}
    pairs = [(queries["q1" if i % 3 else "q2"], "flea cycle host " * (1 + i % 7), "Title" if i % 4 == 0 else "")
             for i in range(23)]
    plain = Scorer(model, enc, tok.pad_token_id, bf16=False).score_pairs(pairs)
    cached_scorer = Scorer(model, enc, tok.pad_token_id, batch_tokens=48, bf16=False, prefix_cache=True)
    cached = cached_scorer.score_pairs(pairs)
    assert model.training
    assert np.allclose(plain, cached, atol=1e-4), np.abs(plain - cached).max()
    for q in queries.values():
        idx = [i for i, p in enumerate(pairs) if p[0] == q]
        assert list(np.argsort(-plain[idx], kind="stable")) == list(np.argsort(-cached[idx], kind="stable"))


def test_prefix_cache_rerank_matches_plain_rerank():
    from lorank.data.records import Passage, RunEntry

    tok = tiny_tokenizer()
    model = _model("tiny-llama", tok).eval()
    enc = PairEncoder(tok)
    passages = {f"d{i}": Passage(f"d{i}", "concrete floor " * (1 + i % 5), "") for i in range(12)}
    run = {"1": [RunEntry("1", f"d{i}", i + 1, 12.0 - i) for i in range(12)],
           "2": [RunEntry("2", f"d{d}", i + 1, 1.0) for i, d in enumerate((3, 5, 7))]}
    queries = {"1": "floor cost", "2": "river fish"}
    a = Scorer(model, enc, tok.pad_token_id, bf16=False).rerank(queries, passages, run, depth=10)
    b = Scorer(model, enc, tok.pad_token_id, bf16=False, prefix_cache=True).rerank(queries, passages, run, depth=10)
    assert a.keys() == b.keys() and all(a[q].keys() == b[q].keys() for q in a)
    assert max(abs(a[q][d] - b[q][d]) for q in a for d in a[q]) < 1e-4


def test_prefix_cache_backs_off_on_out_of_memory(monkeypatch):
    pairs = [("flea", "flea cycle " * (1 + i % 4), "") for i in range(10)]
    model, enc, pad, plain = _plain_scores(pairs)
    sc = Scorer(model, enc, pad, bf16=False, prefix_cache=True, batch_tokens=4096)
    sc.score_pairs(pairs[:1])  # builds the prefix scorer
    body = sc._prefix_scorer.body
    real = body.forward
    calls = {"n": 0}

    def flaky(*a, **kw):
        ids = kw.get("input_ids")
        if ids is not None and ids.shape[0] > 3:
            calls["n"] += 1
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(*a, **kw)

    monkeypatch.setattr(body, "forward", flaky)
    got = sc.score_pairs(pairs)
    assert calls["n"] >= 1 and sc.oom_backoffs >= 1
    assert np.allclose(plain, got, atol=1e-4)


@pytest.mark.parametrize("prefix", [False, True])
def test_merge_lora_gives_the_unmerged_scores(prefix):
    pairs = [("flea cycle", "flea host year " * (1 + i % 5), "") for i in range(9)]
    model, enc, pad, plain = _plain_scores(pairs)
    merged = Scorer(model, enc, pad, bf16=False, prefix_cache=prefix, merge_lora=True)
    got = merged.score_pairs(pairs)
    assert np.allclose(plain, got, atol=1e-4)
    assert any(getattr(m, "merged", False) for m in model.modules() if hasattr(m, "merged_adapters"))
    again = merged.score_pairs(pairs)  # merging once only: scores do not drift
    assert np.array_equal(got, again)
    model.unmerge_adapter()
    assert np.allclose(plain, Scorer(model, enc, pad, bf16=False).score_pairs(pairs), atol=1e-5)
