"""lorank's reranker as a PyTerrier transformer, for pipelines and ``pt.Experiment``.

``LorankReranker(adapter)`` takes PyTerrier's result frame (``qid, query, docno, text`` [, ``title``]), scores
every row with a lorank :class:`~lorank.reranker.Reranker` (the input encoding, token-budgeted batches and
precision of ``lorank rerank``) and returns the frame with ``score`` and ``rank`` recomputed
(``pt.model.add_ranks``: rank 0 is the best, rows sorted by qid then rank)::

    bm25 >> pt.text.get_text(store, "text") >> LorankReranker("adapters/smollm2-135m-msmarco12k-r8")

``PassageStore`` lends lorank's passages (a :class:`~lorank.data.rerankset.RerankSet`'s ``passages``, e.g. of
``resolve_eval_set("dl19")``) to ``pt.text.get_text``, for sets that have no Terrier index.

PyTerrier is an optional extra (``pip install 'lorank[pyterrier]'``): this module imports it, and no other part
of lorank imports this module. Nothing here needs Java or the network: the transformer, ``pt.text.get_text`` over
a ``PassageStore``, ``pt.io`` and ``pt.Experiment`` are PyTerrier's pure-Python core (``pt.terrier``'s own
retrievers and indexes need Java; this does not start it)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd

from lorank.cli.common import progress

from lorank.reranker import Reranker

INSTALL = "pip install 'lorank[pyterrier]'"

try:
    import pyterrier as pt
except ImportError as e:  # the optional extra is not installed
    raise ImportError(f"lorank.integrations.pyterrier needs PyTerrier, which is not installed: {INSTALL} "
                      f"(or pip install python-terrier)", name="pyterrier") from e

__all__ = ["INSTALL", "LorankReranker", "PassageStore"]

_REQUIRED = ("qid", "query", "docno")


class LorankReranker(pt.Transformer):
    """A lorank reranker in a PyTerrier pipeline: every input row is scored, ``score`` and ``rank`` replaced.

    ``reranker``: a :class:`lorank.reranker.Reranker`, or an adapter folder (a lorank run, checkpoint or exported
    adapter), loaded as ``lorank rerank`` loads it: ``Reranker.from_adapter`` with its LoRA merged into the
    weights for scoring (``merge_lora``), ``allow_pickle``/``device``/``dtype``/``bf16``/``batch_tokens`` passed on.

    ``text_field`` / ``title_field``: the columns holding the passage and its optional title. ``verbose``: lorank's
    progress bar (plain lines where stderr is not a terminal), as ``lorank rerank`` shows it.

    All rows of one call are scored together in lorank's batches (length-sorted, ``batch_tokens`` per batch,
    formed by content: the same pairs give the same scores whatever the frame's order). ``pt.Experiment``'s
    ``batch_size`` splits the topics into several calls; scores stay equal within float tolerance."""

    def __init__(self, reranker: Any, *, text_field: str = "text", title_field: str = "title",
                 verbose: bool = False, merge_lora: bool = True, **load_kw: Any):
        if isinstance(reranker, (str, Path)):
            self.adapter: str | None = str(reranker)
            reranker = Reranker.from_adapter(reranker, **load_kw)
            reranker.scorer.merge_lora = merge_lora
        elif load_kw:
            raise TypeError(f"{', '.join(sorted(load_kw))}: only for an adapter folder; this reranker is loaded")
        else:
            self.adapter = str(getattr(reranker, "meta", {}).get("checkpoint") or "") or None
        self.reranker = reranker
        self.text_field = text_field
        self.title_field = title_field
        self.verbose = verbose

    @classmethod
    def from_adapter(cls, adapter_dir: str | Path, **kw: Any) -> LorankReranker:
        """The transformer over ``Reranker.from_adapter(adapter_dir)`` (same as passing the folder)."""
        return cls(Path(adapter_dir), **kw)

    def __repr__(self) -> str:
        return f"LorankReranker({self.adapter!r})" if self.adapter else "LorankReranker(<Reranker>)"

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """``inp`` (qid, query, docno, text [, title], any other columns) with ``score`` and ``rank`` recomputed."""
        self._check_columns(inp)
        out = inp.copy()
        if len(out) == 0:
            out["score"] = pd.Series(index=out.index, dtype="float64")
            return pt.model.add_ranks(out)
        pairs = list(zip(out["query"].map(str), self._texts(out), self._titles(out)))
        with self._progress(len(pairs)) as tick:
            scores = self.reranker.scorer.score_pairs(pairs, tick)
        out["score"] = scores
        out = pt.model.add_ranks(out)
        return out.sort_values(["qid", "rank"], kind="stable").reset_index(drop=True)

    def _check_columns(self, inp: pd.DataFrame) -> None:
        """A frame lacking the query, docno or text is refused with what to add (PyTerrier's validation error, so
        ``pt.inspect`` reads the columns this transformer needs)."""
        missing = [c for c in (*_REQUIRED, self.text_field) if c not in inp.columns]
        if not missing:
            return
        found = ", ".join(map(str, inp.columns)) or "none"
        if self.text_field in missing and not missing[:-1]:
            what = (f"the frame has no {self.text_field!r} column, and lorank scores the passages' text: fetch it "
                    f"before the reranker, e.g. retriever >> pt.text.get_text(index_or_dataset, "
                    f"{self.text_field!r}) >> reranker (lorank's data: PassageStore(rerank_set.passages))")
        else:
            what = (f"the frame lacks {', '.join(repr(c) for c in missing)}: a reranker takes a result frame "
                    f"(qid, query, docno, {self.text_field}), e.g. the output of a retriever given a topics frame")
        try:
            pt.validate.result_frame(inp, extra_columns=["query", self.text_field])
        except pt.validate.InputValidationError as e:
            raise pt.validate.InputValidationError(f"LorankReranker: {what} (columns found: {found})",
                                                   e.modes) from None
        raise KeyError(f"LorankReranker: {what} (columns found: {found})")

    def _texts(self, frame: pd.DataFrame) -> list[str]:
        texts = frame[self.text_field]
        absent = texts.isna()
        if absent.any():
            rows = frame.loc[absent, ["qid", "docno"]].head(3).itertuples(index=False)
            show = ", ".join(f"docno {d} (qid {q})" for q, d in rows)
            raise ValueError(f"LorankReranker: {int(absent.sum())} of {len(frame)} rows have no {self.text_field!r} "
                             f"(e.g. {show}): the text loader did not find these documents")
        return texts.map(str).tolist()

    def _titles(self, frame: pd.DataFrame) -> list[str]:
        if self.title_field not in frame.columns:
            return [""] * len(frame)
        return frame[self.title_field].fillna("").map(str).tolist()

    def _progress(self, total: int) -> Any:
        import contextlib

        if not self.verbose:
            return contextlib.nullcontext(None)

        return progress("rerank", total)


class PassageStore:
    """lorank's passages as a PyTerrier text source: ``pt.text.get_text(PassageStore(passages), "text")`` adds
    ``text`` (and ``title``, when asked for or with ``'*'``) to a result frame by docno.

    ``passages``: ``{docno: Passage}`` (a RerankSet's ``passages``), or ``{docno: text}``. A docno it does not
    hold is an error naming it (not a silent empty passage)."""

    FIELDS = ("text", "title")

    def __init__(self, passages: Mapping[str, Any]):
        self.passages = passages

    def __len__(self) -> int:
        return len(self.passages)

    def _field(self, docno: str, field: str) -> str:
        p = self.passages[docno]
        if isinstance(p, str):
            return p if field == "text" else ""
        return str(getattr(p, field, "") or "")

    def text_loader(self, fields: Any = "*", *, verbose: bool = False, **_: Any) -> pt.Transformer:
        """PyTerrier's text-loader protocol (``pt.text.HasTextLoader``): a transformer adding ``fields``."""
        names = list(self.FIELDS) if fields == "*" else [fields] if isinstance(fields, str) else list(fields)
        unknown = [f for f in names if f not in self.FIELDS]
        if unknown:
            raise ValueError(f"PassageStore has the fields {', '.join(self.FIELDS)}, not {', '.join(unknown)}")

        def load(frame: pd.DataFrame) -> pd.DataFrame:
            missing = sorted({str(d) for d in frame["docno"] if str(d) not in self.passages})
            if missing:
                raise KeyError(f"PassageStore: {len(missing)} docnos not among its {len(self)} passages, e.g. "
                               f"{', '.join(missing[:3])}")
            out = frame.copy()
            for f in names:
                out[f] = [self._field(str(d), f) for d in out["docno"]]
            return out

        return pt.apply.generic(load)

    def __iter__(self) -> Iterator[dict[str, str]]:
        """The passages as PyTerrier documents (docno, text, title), e.g. to index them."""
        for docno in self.passages:
            yield {"docno": str(docno), **{f: self._field(docno, f) for f in self.FIELDS}}
