"""First-stage BM25 retrieval with bm25s.

Each passage is indexed as `title + " " + text`. Tokenisation is bm25s's (lower-cased
`\\b\\w\\w+\\b` words, English stopwords removed, Snowball English stemming via PyStemmer when
installed). Defaults k1=0.9, b=0.4 are Anserini's, with the Lucene BM25 variant.
Results per query: the top `k` documents by BM25 score, ranked with trec_eval's rule (score
descending, ties by docid descending); documents that share no term with the query (score 0)
are not returned, as a Lucene index would not return them.
"""
from __future__ import annotations

import importlib.util
import logging
from typing import Mapping

import numpy as np

from lorank.data.records import Passage, RunEntry
from lorank.errors import ConfigError

__all__ = ["METHODS", "bm25_retrieve", "make_stemmer", "pystemmer_available"]

log = logging.getLogger(__name__)

METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")


def pystemmer_available() -> bool:
    return importlib.util.find_spec("Stemmer") is not None


def make_stemmer(stemmer: str | None):
    """A PyStemmer stemmer for `stemmer` ("english", ...); "auto": english when PyStemmer is
    installed, none otherwise; None / "none": no stemming."""
    if stemmer is None or stemmer == "none":
        return None
    if stemmer == "auto":
        if not pystemmer_available():
            log.warning("PyStemmer is not installed: BM25 runs without stemming "
                        "(pip install PyStemmer for the standard English stemmer)")
            return None
        stemmer = "english"
    if not pystemmer_available():
        raise ConfigError(f"stemmer {stemmer!r} needs PyStemmer: pip install PyStemmer")
    import Stemmer

    try:
        return Stemmer.Stemmer(stemmer)
    except KeyError:
        raise ConfigError(f"unknown stemmer {stemmer!r}; PyStemmer knows "
                          f"{', '.join(Stemmer.algorithms())}") from None


def bm25_retrieve(
    corpus: Mapping[str, Passage],
    queries: Mapping[str, str],
    k: int = 100,
    k1: float = 0.9,
    b: float = 0.4,
    method: str = "lucene",
    stemmer: str | None = "auto",
    stopwords: str | list[str] | None = "en",
    include_title: bool = True,
    tag: str = "bm25",
) -> dict[str, list[RunEntry]]:
    """BM25 top-`k` for every query: `{qid: [RunEntry, ...]}` in rank order (ranks 1..n).

    `corpus` maps docid to `Passage`; `queries` maps qid to text. `stemmer`: "auto" (English
    Snowball when PyStemmer is installed), a PyStemmer language name, or None.
    """
    import bm25s

    problems = []
    if k <= 0:
        problems.append(f"k must be positive, got {k}")
    if k1 < 0:
        problems.append(f"k1 must be >= 0, got {k1}")
    if not 0.0 <= b <= 1.0:
        problems.append(f"b must be in [0, 1], got {b}")
    if method not in METHODS:
        problems.append(f"unknown BM25 method {method!r}; choose one of {', '.join(METHODS)}")
    if not corpus:
        problems.append("the corpus is empty")
    if problems:
        raise ConfigError(problems)

    docids = list(corpus)
    texts = []
    for d in docids:
        p = corpus[d]
        texts.append(f"{p.title} {p.text}" if include_title and p.title else p.text)
    stem = make_stemmer(stemmer)
    stem_fn = stem.stemWords if stem is not None else None

    corpus_tokens = bm25s.tokenize(texts, stopwords=stopwords, stemmer=stem_fn, show_progress=False)
    retriever = bm25s.BM25(k1=k1, b=b, method=method)
    retriever.index(corpus_tokens, show_progress=False)

    qids = list(queries)
    query_tokens = bm25s.tokenize([queries[q] for q in qids], stopwords=stopwords, stemmer=stem_fn,
                                  return_ids=False, show_progress=False)
    docid_arr = np.array(docids, dtype=object)
    run: dict[str, list[RunEntry]] = {}
    for qid, toks in zip(qids, query_tokens):
        known = [t for t in toks if t in retriever.vocab_dict]
        if not known:
            run[qid] = []
            continue
        scores = np.asarray(retriever.get_scores(known), dtype=np.float64)
        hit = np.flatnonzero(scores > 0)
        if hit.size > k:
            # keep everything tied with the k-th score, then cut after the deterministic sort
            kth = np.partition(scores[hit], hit.size - k)[hit.size - k]
            hit = hit[scores[hit] >= kth]
        cand = sorted(((float(scores[i]), docid_arr[i]) for i in hit), key=lambda x: x[1], reverse=True)
        cand.sort(key=lambda x: x[0], reverse=True)
        run[qid] = [RunEntry(qid, d, r, s, tag) for r, (s, d) in enumerate(cand[:k], start=1)]
    return run
