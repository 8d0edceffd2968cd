"""lorank: train, evaluate and dissect LoRA-fine-tuned LLM rerankers.

Python twins of the CLI verbs: ``lorank.train``, ``lorank.Reranker`` (``lorank.ICRReranker`` for ``lorank rerank
--method icr``), ``lorank.evaluate``, ``lorank.retrieve_beir``, ``lorank.ablate``, ``lorank.features``,
``lorank.ltr``, ``lorank.run_study`` then ``lorank.build_report`` (``lorank study``), ``lorank.load_results``; the
dissection verbs (``ablate``, ``features``, ``lorank.analyze.probe`` / ``patch``) take a subject from
``lorank.resolve_subject(adapter, eval_set)``.
Heavy modules (torch, transformers) load on first use.
"""
from __future__ import annotations

from typing import Any

from lorank.errors import ConfigError, DataError, LorankError

__version__ = "0.1.0"

_LAZY = {
    "train": ("lorank.train", "train"),
    "plan_training": ("lorank.study.train_price", "plan_training"),
    "ablate": ("lorank.ablate", "ablate"),
    "features": ("lorank.features", "extract_features"),
    "ltr": ("lorank.ltr", "ltr"),
    "TrainConfig": ("lorank.train.config", "TrainConfig"),
    "Reranker": ("lorank.reranker", "Reranker"),
    "ICRReranker": ("lorank.inference.icr", "ICRReranker"),
    "Subject": ("lorank.subject", "Subject"),
    "resolve_subject": ("lorank.subject", "resolve_subject"),
    "LoraSpec": ("lorank.lora.spec", "LoraSpec"),
    "evaluate": ("lorank.evaluation", "evaluate"),
    "compare": ("lorank.evaluation", "compare"),
    "evaluate_files": ("lorank.evaluation", "evaluate_files"),
    "write_run": ("lorank.evaluation", "write_run"),
    "EvalResult": ("lorank.evaluation", "EvalResult"),
    "retrieve_beir": ("lorank.retrieve", "retrieve_beir"),
    "bm25_retrieve": ("lorank.retrieve", "bm25_retrieve"),
    "run_study": ("lorank.study", "run_study"),
    "load_results": ("lorank.study", "load_results"),
    "build_report": ("lorank.report", "build_report"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        module = importlib.import_module(mod)
        return module if name in ("train", "ablate", "features", "ltr") else getattr(module, attr)
    raise AttributeError(f"module 'lorank' has no attribute {name!r}")


__all__ = ["ConfigError", "DataError", "LorankError", "__version__", *_LAZY]
