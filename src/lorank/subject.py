"""The subject of a dissection: the reranker under study and the candidates it is dissected on, resolved once.

``ablate``, ``probe``, ``patch`` and ``extract_features`` take a :class:`Subject` (what to dissect) and only
their own parameters (how). :func:`resolve_subject` builds it at the edge, once: the CLI
(:func:`lorank.cli.common.cli_subject`), a study step (:mod:`lorank.study.worker`,
:func:`lorank.analyze.run_analysis`), a script.

It sits beside :mod:`lorank.reranker`, below ``ablate/``, ``analyze/`` and ``features/``: it needs only the data
readers and the reranker.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorank.data.rerankset import RerankSet
from lorank.data.sources import load_eval_data
from lorank.errors import ConfigError, DataError

if TYPE_CHECKING:  # torch + transformers: loaded only when a verb first needs the model
    from lorank.reranker import Reranker


@dataclass
class Subject:
    """A reranker and its candidates (queries, first-stage run, passages, qrels where judged).

    The reranker is the one given (``loaded``), else it is loaded from ``adapter`` (a run or checkpoint folder) the
    first time a verb asks for it: a feature table of BM25 columns alone never loads a model. ``source``,
    ``qrels_file`` and ``data_root`` say where the candidates came from, as given (for the verbs' records):
    ``source`` is the evaluation set's name or folder, None when the candidates were given as files or as a
    :class:`RerankSet`."""

    candidates: RerankSet
    adapter: str | Path | None = None
    allow_pickle: bool = False
    source: Any = None
    qrels_file: str | Path | None = None
    data_root: str | Path | None = None
    loaded: Reranker | None = field(default=None, repr=False)

    @property
    def has_model(self) -> bool:
        """Whether there is a reranker to dissect (loaded, or an adapter to load it from)."""
        return self.loaded is not None or self.adapter is not None

    @property
    def reranker(self) -> Reranker:
        """The reranker: the one given, else loaded from ``adapter`` once, on first use."""
        if self.loaded is None:
            if self.adapter is None:
                raise ConfigError("no reranker to dissect: give an adapter (or a loaded Reranker)")
            from lorank.reranker import Reranker  # torch + transformers: only when a model is needed

            self.loaded = Reranker.from_adapter(self.adapter, allow_pickle=self.allow_pickle)
        return self.loaded

    @property
    def checkpoint(self) -> str:
        """The checkpoint the reranker was loaded from (its metadata), else the adapter as given."""
        return self.reranker.meta.get("checkpoint", str(self.adapter))

    @property
    def name(self) -> Any:
        """How the records name the candidates: the evaluation set as given (``dl19``, a folder), else the set's
        own name."""
        return self.source if self.source is not None else self.candidates.name

    def judged(self) -> RerankSet:
        """The candidates, which must have relevance judgements (the analyses that score against them)."""
        if not self.candidates.qrels:
            raise DataError(self.candidates.name, None, "this analysis needs relevance judgements (qrels)")
        return self.candidates


def resolve_subject(adapter: str | Path | None = None, eval_set: Any = None, queries: str | Path | None = None,
                    run: str | Path | None = None, collection: str | Path | None = None,
                    qrels: str | Path | None = None, data_root: str | Path | None = None,
                    allow_pickle: bool = False, reranker: Reranker | None = None) -> Subject:
    """The subject of a dissection. Candidates: ``eval_set`` (a name such as ``dl19``, a TREC-DL-style folder
    under ``data_root`` or given as a path, or a :class:`RerankSet`), or the three files ``queries``, ``run``
    and ``collection``; ``qrels`` replaces the set's own judgements (:func:`lorank.data.load_eval_data`). Reranker:
    ``reranker`` when already loaded (``adapter`` then only names it in the records), else ``adapter`` (a lorank
    run folder, its last complete checkpoint, or a checkpoint folder), loaded when a verb first needs the model;
    ``allow_pickle`` allows a pickle-based adapter (unsafe). The candidates are read here, the model is not."""
    candidates = load_eval_data(eval_set, queries, run, collection, qrels, data_root, require_qrels=False)
    return Subject(candidates, adapter, allow_pickle, None if hasattr(eval_set, "run") else eval_set, qrels,
                   data_root, reranker)
