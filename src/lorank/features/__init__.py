"""Feature tables for learning to rank (issue 17): first-stage BM25, the reranker's score and the latent LoRA
activations ``A x`` of the adapted projections, per (query, candidate).

``lorank.features`` is both this package and the extraction function (of a :class:`lorank.subject.Subject`):
``lorank.features(lorank.resolve_subject(adapter, "dl19"), out="dl19.parquet", groups=["bm25", "score", "mlp:L5-15"])``.
"""
import sys
import types
from typing import Any

from lorank.features.extract import extract_features as _f
from lorank.features.groups import DEFAULT_GROUPS, GRAMMAR, parse_groups, select_columns
from lorank.features.table import read_meta, read_table, write_table

__all__ = ["DEFAULT_GROUPS", "GRAMMAR", "extract_features", "parse_groups", "read_meta", "read_table",
           "select_columns", "write_table"]


def extract_features(*args: Any, **kwargs: Any) -> Any:
    return _f(*args, **kwargs)


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return extract_features(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
