import numpy as np
import pytest

from lorank.lora import LoraSpec, apply_lora
from lorank.models.inputs import PairEncoder
from lorank.models.random_init import random_reranker, tiny_tokenizer
from lorank.score.engine import Scorer
from lorank.score.prefix import PrefixScorer


@pytest.mark.parametrize("shape", ["tiny-llama", "tiny-mistral", "tiny-gpt-neox"])
@pytest.mark.parametrize("peft", [False, True])
def test_prefix_cached_scores_equal_plain_scores(shape, peft):
    import torch

    tok = tiny_tokenizer()
    model = random_reranker(shape, pad_token_id=tok.pad_token_id)
    if peft:
        model = apply_lora(model, LoraSpec(rank=2, dropout=0.0))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.2)
    enc = PairEncoder(tok)
    passages = [("flea cycle " * n, "") for n in (1, 6, 3, 11)] + [("bread oven", "Title")]
    plain = Scorer(model, enc, tok.pad_token_id, bf16=False).score_pairs([("how long flea", t, ti) for t, ti in passages])
    cached = PrefixScorer(model, enc, tok.pad_token_id, batch_tokens=40).score_query("how long flea", passages)
    assert np.allclose(plain, cached, atol=1e-4), (plain, cached)
