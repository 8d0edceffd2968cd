"""Data: typed records and the validating readers that produce them (see `readers`)."""
from __future__ import annotations

from lorank.data.readers import *  # noqa: F401,F403
from lorank.data.readers import __all__ as _readers_all
from lorank.data.records import Candidate, Passage, Qrel, Query, ReadReport, RunEntry, Triple, TrainingExample

__all__ = [
    *_readers_all,
    "Candidate",
    "Passage",
    "Qrel",
    "Query",
    "ReadReport",
    "RunEntry",
    "Triple",
    "TrainingExample",
]
