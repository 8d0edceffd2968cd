"""Load a decoder LLM as a pointwise reranker: ``AutoModelForSequenceClassification(num_labels=1)``.

The score is read at the last non-pad token. The pad token is pinned to an id that differs from
EOS (the template ends with EOS; if pad == EOS, HF would read the score one token too early).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from lorank.errors import ConfigError, ModelNotFoundError
from lorank.models.arch import ArchSpec, arch_for, backbone
from lorank.models.source import ModelSource, materialize, resolve_model
from lorank.precision import bf16_pays as _pays, resolve_dtype_name as _resolve

log = logging.getLogger("lorank.models")

HEAD_INITS = ("random", "yes_no")
_PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<|padding|>", "<pad>", "<|pad|>", "<unk>", "<|endoftext|>")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    arch: ArchSpec
    source: ModelSource
    path: str


def pin_pad_token(tokenizer: Any) -> int:
    """Give the tokenizer a pad token distinct from EOS (without adding tokens); return its id."""
    eos = tokenizer.eos_token_id
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != eos:
        return int(tokenizer.pad_token_id)
    vocab = tokenizer.get_vocab()
    for cand in [tokenizer.unk_token] + list(_PAD_CANDIDATES):
        if cand and cand in vocab and vocab[cand] != eos:
            tokenizer.pad_token = cand
            return int(vocab[cand])
    for tid in sorted(set(getattr(tokenizer, "all_special_ids", []))):
        if tid != eos:
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(tid)
            return int(tid)
    raise ConfigError("cannot find a pad token distinct from EOS in this tokenizer; set one explicitly")


def load_tokenizer(name: str | None = None, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    src = resolve_model(name)
    tok = AutoTokenizer.from_pretrained(materialize(src), trust_remote_code=trust_remote_code)
    tok.padding_side = "right"
    pin_pad_token(tok)
    return tok


def bf16_pays() -> bool:
    """Whether bf16 pays on this machine's default device: see :mod:`lorank.precision`."""
    return _pays()


def resolve_dtype_name(name: str | None) -> str:
    """``auto`` -> ``bf16`` or ``fp32`` by the one precision decision (:func:`lorank.precision.decide`)."""
    return _resolve(name)


def _dtype(name: str | torch.dtype | None) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    name = resolve_dtype_name(name) if name == "auto" else name
    table = {None: torch.float32, "fp32": torch.float32, "float32": torch.float32,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if name not in table:
        raise ConfigError(f"unknown dtype {name!r}: use fp32, bf16 or fp16")
    return table[name]


def load_reranker(name: str | None = None, *, dtype: str | torch.dtype | None = "fp32",
                  head_init: str = "random", trust_remote_code: bool = False,
                  attn_implementation: str | None = "sdpa", seed: int = 0) -> LoadedModel:
    """The backbone with a 1-output score head. The head is kept in fp32 whatever ``dtype`` is."""
    from transformers import AutoModelForSequenceClassification

    if head_init not in HEAD_INITS:
        raise ConfigError(f"unknown head_init {head_init!r}: use one of {HEAD_INITS}")
    src = resolve_model(name)
    try:
        path = materialize(src)
    except OSError as e:
        raise ModelNotFoundError(f"cannot load model {src.describe()}: {e}") from e
    tok = load_tokenizer(path, trust_remote_code=trust_remote_code)
    torch.manual_seed(seed)
    kw: dict[str, Any] = {"num_labels": 1, "dtype": _dtype(dtype), "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kw["attn_implementation"] = attn_implementation
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "score.weight MISSING" load report is expected: the head is new
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, **kw)
    except OSError as e:
        raise ModelNotFoundError(f"cannot load model {src.describe()}: {e}") from e
    finally:
        hf_logging.set_verbosity(verbosity)
    arch = arch_for(model.config)
    model.config.pad_token_id = tok.pad_token_id
    head = score_head(model)
    head.float()
    if head_init == "yes_no":
        init_head_from_yes_no(model, tok, path)
    return LoadedModel(model, tok, arch, src, path)


def score_head(model: Any) -> torch.nn.Linear:
    for attr in ("score", "classifier"):
        head = getattr(model, attr, None)
        if isinstance(head, torch.nn.Linear):
            return head
    raise ConfigError(f"{type(model).__name__} has no linear score head")


def init_head_from_yes_no(model: Any, tok: Any, path: str, yes: str = " yes", no: str = " no") -> None:
    """score.weight := LM-head row of "yes" minus row of "no": the head starts as logit(yes) - logit(no)."""
    ids = [tok(w, add_special_tokens=False).input_ids for w in (yes, no)]
    if any(len(i) != 1 for i in ids):
        raise ConfigError(f"{yes!r}/{no!r} are not single tokens for this tokenizer")
    lm = _lm_head_rows(model, path, [ids[0][0], ids[1][0]])
    head = score_head(model)
    with torch.no_grad():
        head.weight.copy_((lm[0] - lm[1]).to(head.weight.dtype).unsqueeze(0))
        if head.bias is not None:
            head.bias.zero_()


def _lm_head_rows(model: Any, path: str, rows: list[int]) -> torch.Tensor:
    if getattr(model.config, "tie_word_embeddings", False):
        emb = backbone(model).get_input_embeddings().weight
        return emb[rows].detach().float()
    from pathlib import Path

    from safetensors import safe_open

    for f in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            for key in fh.keys():
                if key.endswith(("lm_head.weight", "embed_out.weight")):
                    return fh.get_tensor(key)[rows].float()
    raise ConfigError(f"head_init='yes_no' needs the LM head weights, not found in {path}")
