"""lorank: train, evaluate and dissect LoRA-fine-tuned LLM rerankers."""
from __future__ import annotations

__version__ = "0.1.0"

from lorank.errors import ConfigError, DataError, LorankError  # noqa: E402

__all__ = ["ConfigError", "DataError", "LorankError", "__version__"]
