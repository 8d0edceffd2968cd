"""Latent LoRA activations ``A x`` read with forward hooks in the same forward pass as the score.

For a LoRA-wrapped projection ``W x + s B A dropout(x)``, the r-dimensional ``A x`` is the output of the A module
of its active adapter (:func:`lorank.lora.sites.latent_modules`); in eval mode dropout is the identity, so it is
exactly ``A x`` (before the scaling ``s`` and ``B``). It is read at each sequence's last non-pad token (where the
score head reads).

Batching is the scorer's: pairs are put in an order fixed by their content (length, then tokens),
cut into token-budgeted chunks (:func:`lorank.batching.length_chunks`), right-padded and run through
:func:`lorank.batching.chunk_logits`; on out-of-memory the budget is halved and the rest re-chunked.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from lorank.batching import chunk_logits, length_chunks, pad_chunk, pad_multiple_for
from lorank.errors import ConfigError
from lorank.inference.forward_context import autocast_ctx, is_oom, ScoringMemoryError
from lorank.lora.sites import latent_modules

log = logging.getLogger("lorank.features")


@contextlib.contextmanager
def _hooks(mods: dict[tuple[int, str], Any], store: dict[tuple[int, str], torch.Tensor],
           last: dict[str, torch.Tensor]) -> Iterator[None]:
    handles = []
    for key, mod in mods.items():
        def hook(m: Any, inp: Any, out: torch.Tensor, key: tuple[int, str] = key) -> None:
            rows = torch.arange(out.shape[0], device=out.device)
            store[key] = out[rows, last["idx"]].float().cpu()
        handles.append(mod.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def extract_latent(model: Any, seqs: Sequence[list[int]], pad_id: int, targets: Sequence[tuple[int, str]],
                   batch_tokens: int = 8192, bf16: bool = False,
                   progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, dict[tuple[int, str], np.ndarray]]:
    """``(scores, {(layer, projection): (n, r) float32 A x at the last non-pad token})`` in input order,
    scores and activations from one forward pass per batch."""
    mods_all = latent_modules(model) if targets else {}
    missing = [k for k in targets if k not in mods_all]
    if missing:
        raise ConfigError(f"the model has no LoRA module at {', '.join(f'L{a}.{b}' for a, b in missing[:5])}")
    mods = {k: mods_all[k] for k in targets}
    dev = next(model.parameters()).device
    n = len(seqs)
    scores = np.empty(n, dtype=np.float64)
    acts = {k: np.empty((n, int(m.out_features)), dtype=np.float32) for k, m in mods.items()}
    lengths = [len(s) for s in seqs]
    by_content = sorted(range(n), key=lambda i: (lengths[i], tuple(seqs[i])))
    chunks = [[by_content[j] for j in c] for c in length_chunks([lengths[i] for i in by_content], batch_tokens)]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast_ctx(model, bf16):
            while chunks:
                idx = chunks.pop(0)
                store: dict[tuple[int, str], torch.Tensor] = {}
                try:
                    ids, mask = pad_chunk([seqs[i] for i in idx], pad_id, pad_multiple_for(dev))
                    last = {"idx": (mask.sum(1) - 1).to(dev)}  # right padding: the last real token
                    with _hooks(mods, store, last):
                        logits = chunk_logits(model, ids.to(dev), mask.to(dev))
                except (RuntimeError, torch.OutOfMemoryError) as e:
                    if not is_oom(e):
                        raise
                    if len(idx) == 1:
                        raise ScoringMemoryError(f"out of memory on a single sequence of {lengths[idx[0]]} tokens "
                                                 "while extracting features") from e
                    failed = len(idx) * max(lengths[i] for i in idx)
                    batch_tokens = max(1, min(batch_tokens, failed // 2))
                    log.warning("out of memory on %d sequences: feature batch budget lowered to %d tokens",
                                len(idx), batch_tokens)
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
                    rest = sorted(idx + [i for c in chunks for i in c], key=lambda i: (lengths[i], tuple(seqs[i])))
                    chunks = [[rest[j] for j in c] for c in length_chunks([lengths[i] for i in rest], batch_tokens)]
                    continue
                scores[idx] = logits.float().reshape(-1).cpu().numpy()
                for k in mods:
                    acts[k][idx] = store[k].numpy()
                if progress:
                    progress(len(idx))
    finally:
        model.train(was_training)
    return scores, acts
