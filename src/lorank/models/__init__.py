"""Models: the architecture map, model sources (hub / dir / GGUF), input formatting, loading."""
from lorank.models.arch import GPT_NEOX, LLAMA_LIKE, MHA, MLP, ArchSpec, arch_for, backbone, decoder_layers, register_arch
from lorank.models.inputs import InputFormat, PairEncoder
from lorank.models.loading import LoadedModel, load_reranker, load_tokenizer, pin_pad_token, score_head
from lorank.models.source import DEFAULT_MODEL, ModelSource, describe_default, materialize, resolve_model

__all__ = [
    "ArchSpec", "DEFAULT_MODEL", "GPT_NEOX", "InputFormat", "LLAMA_LIKE", "LoadedModel", "MHA", "MLP",
    "ModelSource", "PairEncoder", "arch_for", "backbone", "decoder_layers", "describe_default", "load_reranker",
    "load_tokenizer", "materialize", "pin_pad_token", "register_arch", "resolve_model", "score_head",
]
