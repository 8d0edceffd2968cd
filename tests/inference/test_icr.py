"""In-context reranking (lorank.inference.icr) on tiny random models: the prompt's document spans, the query rows of
the attention against one eager forward, the calibration by the content-free query, the windows of a query's
candidates, and the errors of bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lorank.errors import ConfigError, DataError
from lorank.inference.icr import ICRPrompt, ICRReranker
from lorank.inference.icr.attention import document_scores, eager_attention, query_attention, token_mask
from lorank.inference.icr.prompt import PromptBuilder, doc_text
from lorank.inference.icr.windows import window_ranges
from lorank.models.arch import backbone
from lorank.models.random_init import random_reranker, tiny_tokenizer
from tests.analyze.conftest import one_torch_thread

PASSAGES = ["flea cycle host year", "concrete floor cost judgment", "river fish water tree leaf",
            "bread flour oven", "engine car wheel road", "music song guitar", "court law judgment"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return random_reranker("tiny-llama", pad_token_id=tok.pad_token_id)


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat-template"])
def test_each_span_holds_its_document_text_and_nothing_else(tok, chat):
    """Every span starts at the document's first token and ends at its last, right after its marker and right
    before the next separator: a span shifted by one token fails."""
    t = tiny_tokenizer()
    if chat:
        t.chat_template = CHATML
    b = PromptBuilder(t, ICRPrompt(chat=chat))
    texts = PASSAGES + ["a title\nanswer question"]
    docs = [b.document(p) for p in PASSAGES] + [b.document("answer question", "a title")]
    ctx = b.context(docs)
    ids = ctx.ids
    assert t.decode(ids[: len(b.head)]).startswith("<|im_start|>user\n" if chat else " Here are some paragraphs:")
    previous_end = 0
    for i, ((s, e), (ms, me), want, text) in enumerate(zip(ctx.spans, ctx.markers, docs, texts), start=1):
        assert ids[s:e] == want and t.decode(ids[s:e]) == " " + text
        first, last = t.decode(ids[s:s + 1]), t.decode(ids[e - 1:e])
        assert first and (" " + text).startswith(first)  # " flea..." or, with the tiny vocabulary, " " alone
        assert last.strip() and text.endswith(last)
        assert t.decode(ids[ms:me]) == f"[{i}]" and me == s  # the marker ends where the text begins, outside the span
        assert t.decode(ids[s - 1:s]).endswith("]") and t.decode(ids[e:e + len(b.sep)]) == "\n\n"
        assert previous_end <= ms < me <= s < e
        previous_end = e
    assert len(ids) == b.context_length([len(d) for d in docs])
    part = t.decode(b.query_part("flea host"))
    assert part.startswith("Please find information") and ("flea host<|im_end|>" in part if chat
                                                            else part.endswith("Query: flea host"))


def test_a_one_hot_attention_on_each_span_scores_each_document_once(tok):
    """The scorer reads the spans the prompt wrote: attention on a document's first and last token (and nowhere
    else) gives that document 2 and no other document anything."""
    b = PromptBuilder(tok)
    ctx = b.context([b.document(p) for p in PASSAGES])
    att = torch.zeros(2, 3, len(ctx.ids))
    for s, e in ctx.spans:
        att[:, :, s] = 1.0
        att[:, :, e - 1] += 1.0
    for ms, me in ctx.markers:
        att[:, :, ms:me] = 5.0  # markers are not the documents' text
    scores = document_scores(att, None, ctx.spans)
    assert all(e - s > 1 for s, e in ctx.spans)
    assert np.allclose(scores, 2.0)  # every layer and head of every document: its first and last token


def test_calibration_subtracts_the_content_free_attention_and_drops_outlier_tokens():
    """A hand-built (layers, heads, tokens) attention: the calibrated score per layer and head is the query's
    attention minus N/A's over the document's tokens; a token 2 std below its document's mean is dropped."""
    L, H, n = 2, 3, 14
    rng = np.random.default_rng(0)
    calib = torch.tensor(rng.uniform(0, 0.1, (L, H, n)))
    delta = torch.zeros(L, H, n, dtype=torch.float64)
    # (not constant within a document: the mask keeps tokens strictly above mean - 2 std, as the authors')
    delta[0, 1, 2:6] = torch.tensor([0.5, 0.4, 0.6, 0.5])  # document 0: tokens 2..5
    delta[1, 2, 6:14] = torch.linspace(0.2, 0.3, 8)  # document 1: tokens 6..13, one outlier below
    delta[:, :, 13] = -1.0
    att = calib + delta
    spans = [(2, 6), (6, 14)]
    plain = document_scores(att, calib, spans, mask=False)
    assert plain.shape == (2, L, H)
    assert np.allclose(plain[0], delta[:, :, 2:6].sum(-1))
    assert np.allclose(plain[1], delta[:, :, 6:14].sum(-1))
    masked = document_scores(att, calib, spans)
    assert np.allclose(masked[0], plain[0])  # no outlier in document 0: nothing dropped
    assert np.allclose(masked[1], delta[:, :, 6:13].sum(-1))  # token 13 dropped, in every layer and head
    assert token_mask(torch.tensor([1.0])).all()  # a one-token document keeps its token
    uncalibrated = document_scores(att, None, spans)
    assert np.allclose(uncalibrated[0], att[:, :, 2:6].sum(-1))
    with pytest.raises(ValueError, match="not inside"):
        document_scores(att, calib, [(10, 20)])


@pytest.mark.parametrize("shape,overrides", [("tiny-llama", {}), ("tiny-gemma3", {}), ("tiny-gpt-neox", {}),
                                              ("tiny-gemma3", {"sliding_window": 16})],
                         ids=["llama", "gemma3", "gpt-neox", "gemma3-window-16"])
def test_the_query_rows_equal_those_of_one_eager_forward_over_the_whole_prompt(tok, shape, overrides):
    """Also where Gemma 3's local layers see only their last 16 keys (their cache keeps only those)."""
    m = random_reranker(shape, pad_token_id=tok.pad_token_id, **overrides)
    body = backbone(m)
    b = PromptBuilder(tok)
    ctx = b.context([b.document(p) for p in PASSAGES[:4]])
    parts = [b.query_part("N/A"), b.query_part("how long flea host cycle")]
    got = query_attention(body, ctx.ids, parts, bf16=False)
    assert body.config._attn_implementation == "sdpa"  # the model's own kernel is back
    n = len(ctx.ids)
    for part, g in zip(parts, got):
        with torch.no_grad(), eager_attention(body):
            full = body(input_ids=torch.tensor([ctx.ids + part]), output_attentions=True).attentions
        want = torch.stack([a[0, :, n:, :n].float().mean(1) for a in full])
        assert g.shape == want.shape == (len(full), full[0].shape[1], n)
        assert torch.allclose(g, want, atol=1e-5), (g - want).abs().max()


def test_calibrating_with_the_query_itself_leaves_nothing(tok, model):
    """The score is the query's attention minus the calibration query's: calibrating a query by itself gives 0
    everywhere, and uncalibrated scores are the positive attention mass."""
    same = ICRReranker(model, tok, ICRPrompt(calibration_query="flea host"), bf16=False).score("flea host", PASSAGES)
    assert np.array_equal(same.layer_head, np.zeros_like(same.layer_head))
    raw = ICRReranker(model, tok, calibrate=False, bf16=False).score("flea host", PASSAGES)
    assert (raw.layer_head > 0).all()
    cal = ICRReranker(model, tok, bf16=False).score("flea host", PASSAGES)
    assert not np.allclose(cal.window_scores, raw.window_scores)


def test_the_layers_and_heads_add_up_to_the_icr_score(tok, model):
    r = ICRReranker(model, tok, bf16=False).score("flea host", PASSAGES, docids=[f"d{i}" for i in range(7)])
    assert r.windows == 1 and r.layer_head.shape == (7, 4, 4) and list(r.run()) == [f"d{i}" for i in range(7)]
    assert np.allclose(sum(r.layer(layer) for layer in range(4)), r.scores)
    assert np.allclose(r.scores, r.window_scores)  # one window: the merged scores are the ICR scores


def test_windows_cover_every_candidate_and_the_run_keeps_their_ranking(tok, model, monkeypatch):
    import lorank.inference.icr.reranker as mod

    seen = []
    real = mod.query_attention

    def spy(body, context, parts, bf16):
        seen.append(len(context) + max(len(p) for p in parts))
        return real(body, context, parts, bf16)

    monkeypatch.setattr(mod, "query_attention", spy)
    r = ICRReranker(model, tok, window=3, stride=1, bf16=False).score("flea host", PASSAGES)
    assert r.windows == len(window_ranges(7, 3, 1)) == len(seen) == 5
    assert sorted(set(r.block)) == list(range(5)) and (r.block >= 0).all()
    assert np.bincount(r.block).tolist() == [1, 1, 1, 1, 3]  # stride 1 a window, the last window all 3
    order = np.argsort(-r.scores, kind="stable")
    assert list(r.block[order]) == sorted(r.block, reverse=True)  # blocks stacked, later windows on top
    # automatic window: as many as fit max_tokens, every prompt within it
    seen.clear()
    b = PromptBuilder(tok)
    budget = b.context_length([len(b.document(p)) for p in PASSAGES[:4]]) + len(b.query_part("flea host")) + 1
    auto = ICRReranker(model, tok, max_tokens=budget, bf16=False).score("flea host", PASSAGES)
    assert 2 <= auto.window_size < 7 and auto.windows > 1 and max(seen) <= budget
    assert auto.stride == auto.window_size // 2


def test_bad_input_is_refused_with_a_clear_error(tok, model):
    with pytest.raises(ConfigError, match="window must be a whole number >= 2"):
        ICRReranker(model, tok, window=1)
    with pytest.raises(ConfigError, match="stride .* must be smaller than the window"):
        ICRReranker(model, tok, window=4, stride=4)
    with pytest.raises(ConfigError, match="ICR task 'XX'"):
        ICRPrompt(task="XX")
    with pytest.raises(ConfigError, match="calibration query must not be empty"):
        ICRPrompt(calibration_query=" ")
    with pytest.raises(DataError, match="empty query"):
        ICRReranker(model, tok).score("  ", PASSAGES)
    with pytest.raises(ConfigError, match="cannot fit 2 of this query's candidates in max_tokens=40"):
        ICRReranker(model, tok, max_tokens=40).score("flea host", PASSAGES)
    with pytest.raises(ConfigError, match="window of 7 candidates takes .* over max_tokens=60"):
        ICRReranker(model, tok, window=7, max_tokens=60).score("flea host", PASSAGES)
    with pytest.raises(ConfigError, match="depth must be a whole number"):
        ICRReranker(model, tok).score_run({}, {}, {}, depth=0)
    assert ICRReranker(model, tok).score("flea", []).scores.shape == (0,)


def test_documents_are_cut_by_words_and_titled_as_the_paper():
    assert doc_text("a b c d", "T", max_words=2) == "T\na b"
    assert doc_text(" a b ", "", max_words=None) == "a b"


def test_the_reranker_is_lorank_icrreranker():
    import lorank

    assert lorank.ICRReranker is ICRReranker


def test_a_run_names_the_query_whose_candidates_do_not_fit_or_whose_text_is_missing(tok, model):
    from lorank.data.records import Passage, RunEntry

    passages = {f"d{i}": Passage(f"d{i}", t) for i, t in enumerate(PASSAGES)}
    run = {"q1": [RunEntry("q1", f"d{i}", i + 1, float(7 - i)) for i in range(7)]}
    with pytest.raises(ConfigError, match="query 'q1': ICR cannot fit 2"):
        ICRReranker(model, tok, max_tokens=40).score_run({"q1": "flea"}, passages, run)
    with pytest.raises(DataError, match="query 'q1' has candidates but no text"):
        ICRReranker(model, tok).score_run({}, passages, run)
    out = ICRReranker(model, tok, window=4, stride=2, bf16=False).rerank({"q1": "flea"}, passages, run, depth=5)
    assert set(out["q1"]) == set(passages)  # 5 reranked, 2 below them in first-stage order
    assert min(out["q1"][d] for d in ("d0", "d1", "d2", "d3", "d4")) > out["q1"]["d5"] > out["q1"]["d6"]
