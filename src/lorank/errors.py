"""Errors users see. Every one names what went wrong and where."""
from __future__ import annotations

from pathlib import Path


class LorankError(Exception):
    """Base class for every error lorank raises on purpose."""


class DataError(LorankError):
    """Bad input data: names the file, the line (1-based, when known) and the problem."""

    def __init__(self, path: str | Path | None, line: int | None, problem: str):
        self.path = str(path) if path is not None else None
        self.line = line
        self.problem = problem
        where = self.path or "<input>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {problem}")


class ConfigError(LorankError):
    """A bad configuration. `problems` lists every problem found, not only the first."""

    def __init__(self, problems: list[str] | str, source: str | Path | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = str(source) if source is not None else None
        head = f"{self.source}: " if self.source else ""
        if len(self.problems) == 1:
            msg = head + self.problems[0]
        else:
            msg = head + f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(msg)


class ModelNotFoundError(LorankError):
    """The requested model (or the embedded default) cannot be found."""
