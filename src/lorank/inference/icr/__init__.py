"""In-context reranking (ICR; Chen, Gutiérrez and Su, "Attention in Large Language Models Yields Efficient
Zero-Shot Re-Rankers", ICLR 2025): a base LLM reads all candidates in one prompt and each is scored by the
attention the query's tokens pay it, calibrated by a content-free query. No training, no score head: the "before
LoRA" view of what the base model's layers and heads already know (docs/views.md).

- :mod:`.prompt`: the prompt and each document's token span;
- :mod:`.attention`: the query rows of the attention, the aggregation over layers and heads, the calibration;
- :mod:`.windows`: sliding windows when the candidates do not fit one prompt, and the merge of their scores;
- :mod:`.reranker`: :class:`ICRReranker` (``lorank rerank --method icr``; ``lorank.ICRReranker``).
"""
from lorank.inference.icr.prompt import ICRPrompt
from lorank.inference.icr.reranker import ICRReranker, ICRResult

__all__ = ["ICRPrompt", "ICRReranker", "ICRResult"]
