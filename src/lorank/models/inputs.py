"""Turn (query, passage) pairs into token ids, the way the study does it.

Template: ``query: {query} document: {title} {passage}`` + EOS. The query part and the document
part are tokenized separately and concatenated, so every candidate of one query shares exactly the
same token prefix (which the scorer reuses as a KV cache). Truncation cuts the passage before the
query: the query gets at most ``query_max_len`` tokens, the passage what is left of ``max_len``.
Nothing is cut silently: every encoder counts the inputs it cut into the process-wide :data:`TRUNCATION`, and the
command line prints the count once, at the end of a command (:func:`truncation_note`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lorank.errors import ConfigError


@dataclass(frozen=True)
class InputFormat:
    query_template: str = "query: {query}"
    doc_template: str = " document: {title} {passage}"
    max_len: int = 196
    query_max_len: int = 32
    append_eos: bool = True

    def __post_init__(self) -> None:
        problems = []
        if "{query}" not in self.query_template:
            problems.append(f"query_template {self.query_template!r} must contain '{{query}}'")
        if "{passage}" not in self.doc_template:
            problems.append(f"doc_template {self.doc_template!r} must contain '{{passage}}'")
        if self.max_len < 8:
            problems.append(f"max_len must be >= 8, got {self.max_len}")
        if not 1 <= self.query_max_len < self.max_len:
            problems.append(f"query_max_len must be in [1, max_len), got {self.query_max_len}")
        if problems:
            raise ConfigError(problems)


@dataclass
class TruncationTally:
    """How many encoded pairs had their passage cut to fit ``max_len``, and how many distinct queries were cut to
    ``query_max_len``, in this process (every :class:`PairEncoder` adds to the one :data:`TRUNCATION`)."""

    pairs: int = 0
    passages_cut: int = 0
    queries: int = 0
    queries_cut: int = 0
    limits: set[tuple[int, int]] = field(default_factory=set)

    def reset(self) -> None:
        self.pairs = self.passages_cut = self.queries = self.queries_cut = 0
        self.limits.clear()


TRUNCATION = TruncationTally()


def truncation_note(tally: TruncationTally = TRUNCATION) -> str | None:
    """One line saying what was cut, or None when nothing was."""
    if not (tally.passages_cut or tally.queries_cut):
        return None
    lims = " / ".join(f"max_len {m}, query_max_len {q}" for m, q in sorted(tally.limits))
    parts = []
    if tally.passages_cut:
        parts.append(f"{tally.passages_cut:,} of {tally.pairs:,} encoded passages were cut to fit")
    if tally.queries_cut:
        parts.append(f"{tally.queries_cut:,} of {tally.queries:,} queries were cut")
    return "; ".join(parts) + f" ({lims} tokens)"


class PairEncoder:
    """Tokenizes pairs with a cache of query prefixes. Returns plain lists of ids (no padding)."""

    def __init__(self, tokenizer: Any, fmt: InputFormat | None = None):
        self.tok = tokenizer
        self.fmt = fmt or InputFormat()
        with_special = tokenizer("x").input_ids
        bare = tokenizer("x", add_special_tokens=False).input_ids
        # tokens the tokenizer adds before the text (e.g. Llama-3 <|begin_of_text|>); none for SmolLM2/Pythia
        self.bos: list[int] = list(with_special[: len(with_special) - len(bare)]) if with_special[-len(bare):] == bare else []
        self.eos: list[int] = [tokenizer.eos_token_id] if (self.fmt.append_eos and tokenizer.eos_token_id is not None) else []
        self._qcache: dict[str, list[int]] = {}

    def query_ids(self, query: str) -> list[int]:
        ids = self._qcache.get(query)
        if ids is None:
            text = self.fmt.query_template.format(query=query)
            full = self.tok(text, add_special_tokens=False).input_ids
            ids = self.bos + full[: self.fmt.query_max_len]
            TRUNCATION.queries += 1
            TRUNCATION.queries_cut += len(full) > self.fmt.query_max_len
            if len(self._qcache) < 100_000:
                self._qcache[query] = ids
        return ids

    def doc_text(self, passage: str, title: str = "") -> str:
        tpl = self.fmt.doc_template
        if not title:  # "document: {title} {passage}" -> "document: {passage}", no double space
            tpl = tpl.replace("{title} ", "").replace(" {title}", "").replace("{title}", "")
        return tpl.format(title=title, passage=passage)

    def doc_ids(self, passage: str, title: str = "", budget: int | None = None) -> list[int]:
        ids = self.tok(self.doc_text(passage, title), add_special_tokens=False).input_ids
        if budget is None:
            return ids
        TRUNCATION.pairs += 1
        TRUNCATION.limits.add((self.fmt.max_len, self.fmt.query_max_len))
        TRUNCATION.passages_cut += len(ids) > budget
        return ids[:budget]

    def encode(self, query: str, passage: str, title: str = "") -> list[int]:
        q = self.query_ids(query)
        budget = max(self.fmt.max_len - len(q) - len(self.eos), 1)
        return q + self.doc_ids(passage, title, budget) + self.eos

    def encode_doc_suffix(self, query: str, passage: str, title: str = "") -> tuple[list[int], list[int]]:
        """(shared query prefix, this candidate's suffix incl. EOS) — used by the prefix-cached scorer."""
        q = self.query_ids(query)
        budget = max(self.fmt.max_len - len(q) - len(self.eos), 1)
        return q, self.doc_ids(passage, title, budget) + self.eos
