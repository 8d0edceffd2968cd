"""Learning to rank on latent LoRA features (issue 17): LambdaMART (LightGBM lambdarank) trained on feature
tables from :mod:`lorank.features`, tuned on a split by query, evaluated as TREC runs with paired tests.

``lorank.ltr`` is both this package and the training function:
``lorank.ltr("dl20.parquet", "dl19.parquet", "out/")``.
"""
import sys
import types
from typing import Any

__all__ = ["DEFAULT_ROWS", "ltr", "ltr_study_step", "split_queries", "split_rows"]

from lorank.ltr.split import split_queries, split_rows  # noqa: E402

DEFAULT_ROWS = ("bm25", "reranker", "bm25+score", "bm25+mlp", "all")


def ltr(*args: Any, **kwargs: Any) -> Any:
    from lorank.ltr.run import ltr as _f

    return _f(*args, **kwargs)


def ltr_study_step(*args: Any, **kwargs: Any) -> Any:
    from lorank.ltr.pipeline import ltr_study_step as _f

    return _f(*args, **kwargs)


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return ltr(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
