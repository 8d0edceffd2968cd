"""Rank windows for hard-negative mining: ``"10-100"`` keeps BM25 ranks 10 to 100 (1-based, both included).

Skipping the very top avoids unjudged positives, which MS MARCO has many of (FlagEmbedding's ``hn_mine``
samples from ranks 10-100 by default; Tevatron's RankLLaMA data from the BM25/RepLLaMA top 200).
"""
from __future__ import annotations

from dataclasses import dataclass

from lorank.errors import ConfigError


@dataclass(frozen=True)
class RankWindow:
    first: int
    last: int

    @classmethod
    def parse(cls, value: "str | tuple[int, int] | list[int] | RankWindow") -> "RankWindow":
        if isinstance(value, RankWindow):
            return value
        if isinstance(value, (tuple, list)):
            if len(value) != 2:
                raise ConfigError(f"a rank window is two ranks [first, last], got {value!r}")
            first, last = value
        else:
            parts = str(value).replace(" ", "").split("-")
            if len(parts) != 2 or not all(p.isdigit() for p in parts):
                raise ConfigError(f"rank window {value!r}: write FIRST-LAST, e.g. 10-100 (1-based ranks, inclusive)")
            first, last = (int(p) for p in parts)
        if not (isinstance(first, int) and isinstance(last, int)) or first < 1 or last < first:
            raise ConfigError(f"rank window {value!r}: need 1 <= first <= last")
        return cls(int(first), int(last))

    def __contains__(self, rank: int) -> bool:
        return self.first <= rank <= self.last

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"
