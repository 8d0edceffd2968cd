"""Tiny synthetic TREC-DL-style folders and tiny saved models for fast end-to-end tests."""
from __future__ import annotations

import random
from pathlib import Path

WORDS = ("flea cycle host year concrete floor cost judgment court law river fish water tree leaf "
         "engine car wheel road bread flour oven music song guitar").split()


def make_trec_dir(root: Path, n_queries: int = 6, n_cands: int = 12, seed: int = 0, first_qid: int = 100) -> Path:
    """queries.tsv, collection.tsv, bm25.run, qrels.txt: the relevant passages repeat the query's words. Query ids
    count from `first_qid` (two sets to pool need different ones, as DL19's and DL20's are)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    q_lines, c_lines, r_lines, j_lines = [], [], [], []
    pid = 0
    for q in range(n_queries):
        qwords = rng.sample(WORDS, 2)
        qid = f"{first_qid + q}"
        q_lines.append(f"{qid}\t{' '.join(qwords)}")
        for c in range(n_cands):
            pid += 1
            rel = c < 3
            words = (qwords * 3 if rel else []) + rng.sample(WORDS, 4)
            rng.shuffle(words)
            c_lines.append(f"{pid}\t{' '.join(words)}")
            r_lines.append(f"{qid} Q0 {pid} {c + 1} {20.0 - c} bm25")
            if c < 8:
                j_lines.append(f"{qid} 0 {pid} {3 if rel else 0}")
    (root / "queries.tsv").write_text("\n".join(q_lines) + "\n")
    (root / "collection.tsv").write_text("\n".join(c_lines) + "\n")
    (root / "bm25.run").write_text("\n".join(r_lines) + "\n")
    (root / "qrels.txt").write_text("\n".join(j_lines) + "\n")
    return root


def save_tiny_model(root: Path, shape: str = "tiny-llama", bos: bool = False, **overrides) -> Path:
    """A random-init model of `shape` (:data:`lorank.models.random_init.SHAPES`; `overrides`: config fields, e.g.
    ``num_hidden_layers=6``) and the tiny tokenizer (`bos`: one that puts ``<bos>`` first, as Gemma's does), saved
    to `root` as a local model folder."""
    from lorank.models.random_init import random_reranker, tiny_tokenizer

    tok = tiny_tokenizer(bos=bos)
    if bos:
        overrides.setdefault("bos_token_id", tok.bos_token_id)
    model = random_reranker(shape, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **overrides)
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return root
