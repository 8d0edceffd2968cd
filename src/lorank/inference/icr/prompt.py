"""ICR's prompt: every candidate of a window in one prompt, each marked ``[i]``, then the instruction and the
query; the token span of each document and the query part, exact by construction.

The template is the authors' ``instruct`` one (Chen et al., "Attention in Large Language Models Yields Efficient
Zero-Shot Re-Rankers", ICLR 2025; their ``InContextReranker._prepare_input_for_document_retrieval``)::

    {chat prefix} Here are some paragraphs:\\n\\n[1] {doc 1}\\n\\n[2] {doc 2} ... \\n\\n
    {instruction}\\n\\nQuery: {query}{chat suffix}

The *context* is everything up to and including the separator after the last document; the *query part* is the
rest (instruction, ``Query:``, the query, the chat suffix). ICR averages the attention of the query part's tokens
(all of them, as the authors do: ``query_start_idx`` is the instruction's first token), so the content-free
calibration query (``N/A``) shares the instruction and differs only in the query's own tokens.

Where this departs from the authors' code, and why:

- **Tokenized piece by piece** (the chat prefix with the header, each separator, each marker, each document, the
  instruction, the query with the chat suffix), and the ids concatenated, as :class:`lorank.models.PairEncoder`
  does: the spans are exact by construction. The authors tokenize the whole string and recover the spans by
  re-tokenizing prefixes (and check the lengths); a BPE merge across a piece boundary can make the two token
  sequences differ at that boundary.
- **A document's span is its text only**: the authors count the ``[i] `` marker's tokens in the document's span;
  here the marker is outside it, so the score is the attention to the document's own text.
- **The chat wrap comes from the tokenizer's chat template** (a user turn, with the generation prompt), where the
  authors hard-code Mistral's ``[INST]``/``[/INST]`` and Llama 3's headers; a tokenizer without a chat template
  (a base model) gets no wrap. For SmolLM2-Instruct the template adds its default system turn.
- Documents are cut to ``doc_max_words`` words split on spaces (the authors' ``--truncate_by_space 300`` on BEIR,
  after RankGPT); a title goes before the text on its own line, as theirs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from lorank.errors import ConfigError

HEAD = " Here are some paragraphs:"
SEPARATOR = "\n\n"
QUERY_LABEL = "Query:"
#: the authors' two instructions: ``IE`` for retrieval-style queries, ``QA`` for questions (they use QA on
#: TREC-COVID, FiQA, Touche, DBPedia and NQ, IE elsewhere)
INSTRUCTIONS = {
    "IE": "Please find information that are relevant to the following query in the paragraphs above.",
    "QA": "Please answer the following question based on the information in the paragraphs above.",
}
_SENTINEL = "@@LORANK_ICR_CONTENT@@"


@dataclass(frozen=True)
class ICRPrompt:
    """How ICR's prompt is written: the instruction (``task``: ``IE`` or ``QA``), whether to wrap it in the
    tokenizer's chat template (``chat``), the cut of each document (``doc_max_words``, None: no cut) and the
    content-free calibration query (the authors' ``N/A``)."""

    task: str = "IE"
    chat: bool = True
    doc_max_words: int | None = 300
    calibration_query: str = "N/A"

    def __post_init__(self) -> None:
        problems = []
        if self.task not in INSTRUCTIONS:
            problems.append(f"ICR task {self.task!r}: use one of {', '.join(INSTRUCTIONS)}")
        if self.doc_max_words is not None and (isinstance(self.doc_max_words, bool) or self.doc_max_words < 1):
            problems.append(f"doc_max_words must be a whole number >= 1 (or None: no cut), got {self.doc_max_words!r}")
        if not str(self.calibration_query).strip():
            problems.append("the calibration query must not be empty (the authors use 'N/A')")
        if problems:
            raise ConfigError(problems)


@dataclass
class Context:
    """The token ids before the query part, and where each document's text and marker sit in them (``[start,
    end)``, one pair per document, in prompt order)."""

    ids: list[int]
    spans: list[tuple[int, int]]
    markers: list[tuple[int, int]]


def chat_wrap(tokenizer: Any) -> tuple[str, str]:
    """The text a user turn goes between in the tokenizer's chat template (with the generation prompt after it);
    ``("", "")`` for a tokenizer without a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return "", ""
    text = tokenizer.apply_chat_template([{"role": "user", "content": _SENTINEL}], add_generation_prompt=True,
                                         tokenize=False)
    before, found, after = text.partition(_SENTINEL)
    if not found:
        raise ConfigError("the tokenizer's chat template drops the user's message: use ICRPrompt(chat=False)")
    return before, after


def doc_text(text: str, title: str = "", max_words: int | None = None) -> str:
    """A candidate as ICR shows it: the text cut to ``max_words`` space-separated words, the title on the line
    before it when there is one."""
    if max_words is not None:
        text = " ".join(text.split(" ")[:max_words])
    return (f"{title}\n{text}" if title else text).strip()


class PromptBuilder:
    """Token ids of ICR's prompt for one tokenizer (see the module docstring)."""

    def __init__(self, tokenizer: Any, prompt: ICRPrompt | None = None):
        self.tok = tokenizer
        self.prompt = prompt or ICRPrompt()
        before, self.suffix = chat_wrap(tokenizer) if self.prompt.chat else ("", "")
        with_special = tokenizer("x").input_ids
        bare = tokenizer("x", add_special_tokens=False).input_ids
        bos = list(with_special[: len(with_special) - len(bare)]) if with_special[-len(bare):] == bare else []
        head = self.ids(before + HEAD)
        #: the chat prefix and the header, after the tokenizer's BOS unless the chat prefix already holds it
        self.head = head if head[: len(bos)] == bos else bos + head
        self.sep = self.ids(SEPARATOR)
        self.instruction = self.ids(INSTRUCTIONS[self.prompt.task]) + self.sep + self.ids(QUERY_LABEL)
        self._markers: dict[int, list[int]] = {}

    def ids(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False).input_ids)

    def marker(self, i: int) -> list[int]:
        """The ids of the ``i``-th document's marker, ``[i]`` (1-based, as the authors number them)."""
        if i not in self._markers:
            self._markers[i] = self.ids(f"[{i}]")
        return self._markers[i]

    def document(self, text: str, title: str = "") -> list[int]:
        """A candidate's ids as it follows its marker (a space, then :func:`doc_text`)."""
        return self.ids(" " + doc_text(text, title, self.prompt.doc_max_words))

    def context(self, documents: Sequence[list[int]]) -> Context:
        """The context for the documents' ids (:meth:`document`), in prompt order."""
        ids = list(self.head)
        spans, markers = [], []
        for i, doc in enumerate(documents, start=1):
            ids += self.sep
            start = len(ids)
            ids += self.marker(i)
            markers.append((start, len(ids)))
            ids += doc
            spans.append((markers[-1][1], len(ids)))
        ids += self.sep
        return Context(ids, spans, markers)

    def query_part(self, query: str) -> list[int]:
        """The ids after the context: the instruction, ``Query:``, the query and the chat suffix."""
        return self.instruction + self.ids(" " + query.strip() + self.suffix)

    def context_length(self, lengths: Sequence[int]) -> int:
        """The number of context tokens for documents of these token lengths, in any order (the markers are
        numbered by position, so their lengths do not depend on the order)."""
        markers = sum(len(self.marker(i)) for i in range(1, len(lengths) + 1))
        return len(self.head) + sum(lengths) + markers + (len(lengths) + 1) * len(self.sep)
