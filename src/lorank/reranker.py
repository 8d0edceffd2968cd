"""``Reranker``: a trained (or base) reranker that scores passages for a query."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lorank.adapters import adapter_file, check_adapter_fits, read_checkpoint_meta, read_peft_config
from lorank.inference.runs import rerank_to_run
from lorank.layout.checkpoints import latest_checkpoint
from lorank.models.device import resolve_device
from lorank.models.inputs import InputFormat, PairEncoder
from lorank.inference.engine import Scorer
from lorank.models.loading import load_reranker
from lorank.precision import weights_dtype_name


class Reranker:
    def __init__(self, model: Any, tokenizer: Any, fmt: InputFormat | None = None, bf16: bool | None = None,
                 batch_tokens: int = 8192, meta: dict[str, Any] | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.encoder = PairEncoder(tokenizer, fmt or InputFormat())
        self.scorer = Scorer(model, self.encoder, int(tokenizer.pad_token_id), batch_tokens=batch_tokens, bf16=bf16)
        self.meta = meta or {}

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    @classmethod
    def from_pretrained(cls, model: str | None = None, head_init: str = "yes_no", dtype: str = "auto",
                        device: Any = None, **kw: Any) -> "Reranker":
        """The base model, untrained LoRA-free (zero-shot, e.g. with a yes/no-initialised head), on ``device``
        (default: :func:`lorank.models.device.resolve_device`, a GPU where there is one). ``meta`` records the
        model (``model``: its source, as :class:`lorank.ICRReranker`'s does) and the head's initialisation."""
        dev = resolve_device(device)
        lm = load_reranker(model, dtype=weights_dtype_name(dtype, dev), head_init=head_init)
        meta = {"model": lm.source.describe(), "head_init": head_init, **(kw.pop("meta", None) or {})}
        return cls(lm.model.to(dev), lm.tokenizer, meta=meta, **kw)

    @classmethod
    def from_adapter(cls, adapter_dir: str | Path, allow_pickle: bool = False, dtype: str | None = None,
                     trust_remote_code: bool = False, device: Any = None, **kw: Any) -> "Reranker":
        """Load a lorank run dir or checkpoint dir (PEFT adapter + score head: a LoRA, or an AdaLoRA adapter saved
        at the ranks it kept) onto ``device`` (default: :func:`lorank.models.device.resolve_device`, a GPU where
        there is one)."""
        from peft import PeftModel

        ckpt = latest_checkpoint(adapter_dir)
        adapter_file(ckpt, allow_pickle)  # refuses pickle unless allowed
        peft_cfg = read_peft_config(ckpt)  # a broken adapter_config.json is named, with its line, before PEFT reads it
        meta = read_checkpoint_meta(ckpt)
        base = meta.get("model_path") or meta.get("base_model")
        if base and not Path(str(base)).exists():
            base = meta.get("base_model")
        # the weights' dtype follows the one precision decision (lorank.precision) unless given: the dtype the
        # adapter was trained in says nothing about what pays on the machine that scores with it (bf16 weights where
        # the decision is bf16, as training's checkpoint evaluations score: lorank.precision.weights_dtype_name)

        dev = resolve_device(device)
        lm = load_reranker(base, dtype=weights_dtype_name(dtype, dev, requested=kw.get("bf16")),
                           trust_remote_code=trust_remote_code)
        check_adapter_fits(ckpt, lm.model.config, lm.source.describe())  # not PEFT's 'size mismatch' traceback
        with warnings.catch_warnings():
            if peft_cfg["peft_type"] == "ADALORA":  # PEFT resizes AdaLoRA's modules by its rank_pattern (the kept
                # singular values), then warns that the pattern's keys are not LoRA's per-module ranks
                warnings.filterwarnings("ignore", message="The following rank_pattern keys did not match")
            model = PeftModel.from_pretrained(lm.model, str(ckpt), use_safetensors=not allow_pickle).to(dev)
        fmt = InputFormat(**meta.get("input", {}))
        return cls(model, lm.tokenizer, fmt, meta=dict(meta, checkpoint=str(ckpt)), **kw)

    def score(self, query: str, passages: Sequence[str | tuple[str, str]]) -> np.ndarray:
        """Scores for one query's passages (a passage is text, or (title, text))."""
        pairs = [(query, p, "") if isinstance(p, str) else (query, p[1], p[0]) for p in passages]
        return self.scorer.score_pairs(pairs)

    def rerank(self, queries: dict[str, str], passages: dict[str, Any], run: dict[str, list[Any]],
               depth: int = 100, progress: Any = None) -> dict[str, dict[str, float]]:
        scores = self.scorer.rerank(queries, passages, run, depth, progress)
        return rerank_to_run(scores, run, depth)
