"""A reranking evaluation set in memory, and the loader for a TREC DL style folder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lorank.errors import DataError
from lorank.data.beir import load_beir
from lorank.data.records import Passage, RunEntry
from lorank.data.trec import load_qrels, load_run
from lorank.data.tsv import load_collection, load_queries


@dataclass
class RerankSet:
    """Queries, their first-stage candidates (`run`, best first), the passages and the qrels.

    Every docid in `run` is a key of `passages`; `qrels` is None when the set has no judgements.
    """

    name: str
    queries: dict[str, str]
    passages: dict[str, Passage]
    run: dict[str, list[RunEntry]]
    qrels: dict[str, dict[str, int]] | None = None

    @property
    def qids(self) -> list[str]:
        """The queries that have candidates, in query-file order."""
        return [q for q in self.queries if q in self.run]

    def candidates(self, qid: str, depth: int | None = None) -> list[Passage]:
        """The candidate passages of `qid`, best first, the first `depth` of them when given."""
        try:
            entries = self.run[qid]
        except KeyError:
            raise KeyError(f"query {qid!r} has no candidates in {self.name!r}") from None
        if depth is not None:
            entries = entries[:depth]
        return [self.passages[e.docid] for e in entries]

    def subset(self, max_queries: int | None) -> "RerankSet":
        """The first `max_queries` judged queries (sorted by qid; deterministic), with their candidates,
        passages and qrels only; the whole set when `max_queries` is None or covers it."""
        qids = sorted(q for q in self.qids if self.qrels is None or self.qrels.get(q))
        if max_queries is None or max_queries >= len(qids):
            return self
        if max_queries < 1:
            raise ValueError("max_queries must be >= 1")
        keep = qids[:max_queries]
        run = {q: self.run[q] for q in keep}
        docids = {e.docid for q in keep for e in run[q]}
        return RerankSet(f"{self.name}[:{max_queries}q]", {q: self.queries[q] for q in keep},
                         {d: self.passages[d] for d in docids}, run,
                         None if self.qrels is None else {q: self.qrels[q] for q in keep if q in self.qrels})


def load_trec_dl_dir(
    directory: str | Path, name: str | None = None, lenient: bool = False, warn: bool = True
) -> RerankSet:
    """Load a TREC DL style folder: `queries.tsv`, `collection.tsv`, its first-stage run and, if present,
    `qrels.txt`. The run is `bm25.run` when there is one, else the folder's single `*.run` file (`splade.run` in
    the `trec-dl-20XX-splade` folders; :func:`first_stage_run`). The run is checked against the queries and the
    collection, the qrels against the queries."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(directory, None, "evaluation set folder not found")
    queries = load_queries(directory / "queries.tsv", lenient, warn=warn)
    passages = load_collection(directory / "collection.tsv", lenient, warn=warn)
    run = load_run(first_stage_run(directory), lenient, warn=warn, known_qids=queries, known_docids=passages)
    qrels_path = directory / "qrels.txt"
    qrels = load_qrels(qrels_path, lenient, warn=warn, known_qids=queries) if qrels_path.exists() else None
    return RerankSet(name or directory.name, queries, passages, run, qrels)


def first_stage_run(directory: str | Path) -> Path:
    """The first-stage run of a TREC DL style folder: `bm25.run` if present, else the single `*.run` file
    (`splade.run`). No run, or several without a `bm25.run`, is a :class:`DataError` naming the folder and files."""
    directory = Path(directory)
    bm25 = directory / "bm25.run"
    if bm25.is_file():
        return bm25
    runs = sorted(p for p in directory.glob("*.run") if p.is_file())
    if len(runs) == 1:
        return runs[0]
    if not runs:
        raise DataError(directory, None, "no first-stage run: the folder has neither bm25.run nor another *.run file")
    raise DataError(directory, None, f"several candidate first-stage runs and no bm25.run: "
                                     f"{', '.join(p.name for p in runs)}; keep one, or name the one to use bm25.run")


def load_beir_rerank_set(
    directory: str | Path, run: str | Path, split: str = "test", lenient: bool = False, warn: bool = True
) -> RerankSet:
    """A BEIR folder's `split` (its judged queries, the corpus, the qrels) with a first-stage TREC `run` over it,
    e.g. the BM25 run of :func:`lorank.retrieve.retrieve_beir`. The run is checked against the split's queries
    and the corpus: a query of another split, or a docid not in the corpus, is an error naming the run's line."""
    ds = load_beir(directory, split=split, lenient=lenient, warn=warn)
    candidates = load_run(run, lenient, warn=warn, known_qids=ds.queries, known_docids=ds.corpus)
    return RerankSet(f"{ds.name}-{split}", ds.queries, ds.corpus, candidates, ds.qrels)
