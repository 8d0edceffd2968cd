"""Random-init models of known shapes: tiny ones for unit tests, real ones (8B) for GPU throughput.

Weights are random, the shapes and module names are the real ones, so the architecture map, LoRA
targeting, ablation masks, and FLOP/throughput figures are exercised without downloading weights.
"""
from __future__ import annotations

from typing import Any

import torch

from lorank.errors import ConfigError

_TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=320, max_position_embeddings=256)

SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny-llama": ("llama", dict(_TINY, tie_word_embeddings=True)),
    "tiny-mistral": ("mistral", dict(_TINY, sliding_window=None)),
    # Gemma 3: 1 KV head, head_dim != hidden / heads, query_pre_attn_scalar != head_dim, a sliding layer with its own
    # rotary base beside a full one (the window is never reached at these lengths), GELU-tanh
    "tiny-gemma3": ("gemma3_text", dict(_TINY, num_key_value_heads=1, head_dim=24, query_pre_attn_scalar=20,
                                        sliding_window=128, layer_types=["sliding_attention"] * 3 + ["full_attention"],
                                        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
                                                         "full_attention": {"rope_type": "default", "rope_theta": 1e4}},
                                        pad_token_id=1, bos_token_id=0, eos_token_id=2)),
    "tiny-gpt-neox": ("gpt_neox", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                        num_attention_heads=4, vocab_size=320, max_position_embeddings=256,
                                        rotary_pct=0.25, use_parallel_residual=True)),
    "llama-3.1-8b": ("llama", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                   num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                   max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5)),
    "mistral-7b": ("mistral", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                   num_attention_heads=32, num_key_value_heads=8, vocab_size=32000,
                                   max_position_embeddings=32768, sliding_window=None, rope_theta=1e6)),
    "pythia-6.9b": ("gpt_neox", dict(hidden_size=4096, intermediate_size=16384, num_hidden_layers=32,
                                     num_attention_heads=32, vocab_size=50432, max_position_embeddings=2048,
                                     rotary_pct=0.25, use_parallel_residual=True)),
    # the real SmolLM2-135M config (HuggingFaceTB/SmolLM2-135M): GPU benchmark shape (issue 13)
    "smollm2-135m": ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                   num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                   max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
                                   tie_word_embeddings=True)),
    # the real Gemma 3 270M text config (as the GGUF converts): benchmark shape (issue 43)
    "gemma3-270m": ("gemma3_text", dict(hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                                        num_attention_heads=4, num_key_value_heads=1, head_dim=256,
                                        query_pre_attn_scalar=256, vocab_size=262144, sliding_window=512,
                                        max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True)),
    "smollm2-135m-shape": ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                         max_position_embeddings=8192, tie_word_embeddings=True)),
}


def config_for(shape: str, **overrides: Any) -> Any:
    from transformers import AutoConfig

    if shape not in SHAPES:
        raise ConfigError(f"unknown model shape {shape!r} (known: {', '.join(SHAPES)})")
    model_type, kw = SHAPES[shape]
    cfg = AutoConfig.for_model(model_type, **{**kw, **overrides})
    cfg.num_labels = 1
    return cfg


def random_reranker(shape: str, seed: int = 0, dtype: torch.dtype = torch.float32,
                    attn_implementation: str = "sdpa", pad_token_id: int = 1, **overrides: Any) -> Any:
    """A randomly initialised ``*ForSequenceClassification`` with one output."""
    from transformers import AutoModelForSequenceClassification

    cfg = config_for(shape, **overrides)
    cfg.pad_token_id = pad_token_id
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(cfg, dtype=dtype, attn_implementation=attn_implementation)
    model.score.float()
    return model.eval()


_CORPUS = (
    "query document the a of and to in is for on that with as was by it this be are from at or an have "
    "fleas live year host cycle concrete flooring cost judgment declaratory definition relevant passage "
    "answer question what how why when where who which lorank rerank model train score relevance"
)


def tiny_tokenizer(vocab_size: int = 320, bos: bool = False) -> Any:
    """A byte-level BPE tokenizer trained in milliseconds on a fixed text: deterministic, offline.

    Special tokens: ``<pad>`` = 1, ``</s>`` (EOS) = 2, ``<unk>`` = 0. ``bos``: also ``<bos>`` = 3, put before
    every text it encodes with special tokens, as Gemma's and Llama 3's tokenizers do (SmolLM2's adds none).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    special = ["<unk>", "<pad>", "</s>"] + (["<bos>"] if bos else [])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator([_CORPUS] * 4 + [" yes no" * 8], trainer=trainer)
    if bos:
        tk.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                          special_tokens=[("<bos>", special.index("<bos>"))])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", eos_token="</s>",
                                  **({"bos_token": "<bos>"} if bos else {}))
    tok.padding_side = "right"
    return tok
