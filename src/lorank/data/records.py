"""Plain typed records every reader yields and every later stage consumes."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Query:
    qid: str
    text: str


@dataclass(frozen=True, slots=True)
class Passage:
    pid: str
    text: str
    title: str = ""


@dataclass(frozen=True, slots=True)
class RunEntry:
    """One line of a TREC run: `qid Q0 docid rank score tag`."""

    qid: str
    docid: str
    rank: int
    score: float
    tag: str = "lorank"


@dataclass(frozen=True, slots=True)
class Qrel:
    """One judgement: `qid iter docid grade`."""

    qid: str
    docid: str
    grade: int


@dataclass(frozen=True, slots=True)
class Candidate:
    """A first-stage candidate with its text (top1000 / rank_llm style)."""

    qid: str
    query: str
    docid: str
    text: str
    rank: int | None = None
    score: float | None = None
    title: str = ""


@dataclass(frozen=True, slots=True)
class Triple:
    """An MS MARCO training triple."""

    query: str
    positive: str
    negative: str


@dataclass(slots=True)
class TrainingExample:
    """One query with its positives and negatives (Tevatron JSONL / hard-negative JSONL).

    Scores are optional teacher scores aligned with the passages, used by distillation losses.
    """

    query: str
    positives: list[Passage]
    negatives: list[Passage]
    qid: str | None = None
    positive_scores: list[float] | None = None
    negative_scores: list[float] | None = None


@dataclass(slots=True)
class ReadReport:
    """What a lenient read skipped: counted and reported, never silently dropped."""

    path: str
    read: int = 0
    skipped: int = 0
    problems: list[str] = field(default_factory=list)
    text_tabs: int = 0                # lines whose last column held TABs, read as part of its text
    text_tab_lines: list[int] = field(default_factory=list)

    def skip(self, line: int | None, problem: str, keep: int = 20) -> None:
        self.skipped += 1
        if len(self.problems) < keep:
            self.problems.append(f"{self.path}:{line}: {problem}" if line is not None else f"{self.path}: {problem}")

    def summary(self) -> str:
        s = f"{self.path}: read {self.read}, skipped {self.skipped}"
        if self.problems:
            s += " (first problems: " + "; ".join(self.problems[:3]) + ")"
        if self.text_tabs:
            s += f", {self.text_tabs} lines with TABs inside their last column read as text"
        return s
