"""The dense teacher (lorank.teacher): its hard-negative JSONL, the embedding cache, progress logging."""
import json

from lorank.teacher import BiEncoder, teacher_jsonl
from tests.tinydata import make_trec_dir


def _tiny_bert(path):
    from transformers import BertConfig, BertModel

    from lorank.models.random_init import tiny_tokenizer

    cfg = BertConfig(vocab_size=320, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertModel(cfg).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def test_teacher_jsonl_is_a_valid_hardneg_file(tmp_path):
    from lorank.data import iter_hardneg, resolve_eval_set
    from lorank.train.groups import GroupDataset, pools_from_examples

    rs = resolve_eval_set(str(make_trec_dir(tmp_path / "d")))
    out = tmp_path / "teacher.jsonl"
    stats = teacher_jsonl(rs, out, BiEncoder(_tiny_bert(tmp_path / "bert")), depth=12)
    assert stats["queries"] == 6 and stats["positives"] == 18
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(len(r["pos"]) == len(r["pos_scores"]) and len(r["neg"]) == len(r["neg_scores"]) for r in rows)
    pools = pools_from_examples(iter_hardneg(out))
    g = GroupDataset(pools, group_size=4)[0]
    assert g.teacher is not None and len(g.teacher) == 4


def test_encode_with_cache_writes_once_and_reads_back_the_same_embeddings(tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.setenv("LORANK_CACHE", str(tmp_path / "cache"))
    bi = BiEncoder(_tiny_bert(tmp_path / "bert"))
    texts = ["flea cycle", "a river fish", "the bread oven is hot"]
    first = bi.encode(texts, cache=True)
    path = bi.cache_path(texts)
    assert path.is_file() and path.parent == tmp_path / "cache" / "teacher"
    assert np.array_equal(first, bi.encode(texts))  # the cache holds what encoding gives

    def no_encoding(_texts):
        raise AssertionError("encoded although the embeddings are cached")

    monkeypatch.setattr(bi, "_encode", no_encoding)
    assert np.array_equal(bi.encode(texts, cache=True), first)
    assert bi.cache_path(texts[::-1]) != path and bi.cache_path(texts[:2]) != path  # keyed by the texts in order
    bi.max_len = 8
    assert bi.cache_path(texts) != path  # and by the teacher's settings


def test_encoding_logs_its_progress(tmp_path, caplog):
    import logging

    bi = BiEncoder(_tiny_bert(tmp_path / "bert"), batch_size=2, log_every_s=0.0)
    with caplog.at_level(logging.INFO, logger="lorank.teacher"):
        bi.encode(["a b", "c d e", "f", "g h i j", "k"])
    lines = [r.getMessage() for r in caplog.records if "encoded" in r.getMessage()]
    assert [ln.split(" (")[0] for ln in lines] == ["teacher: encoded 2/5 texts", "teacher: encoded 4/5 texts"]
    assert all("s left)" in ln for ln in lines)
