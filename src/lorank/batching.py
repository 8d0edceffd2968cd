"""Batching for every forward over (query, passage) sequences: length-sorted, token-budgeted chunks.

Training (:mod:`lorank.train.collator`), scoring (:mod:`lorank.inference`), feature extraction
(:mod:`lorank.features`), ablations and analyses all cut their sequences with :func:`length_chunks`, pad a
chunk with :func:`pad_chunk` and run it with :func:`chunk_logits`. It sits below all of them and imports
nothing of lorank, so that scoring does not depend on the training stage.

- :func:`length_chunks`: indices sorted by length, cut by an exact dynamic programme into chunks of at
  most ``chunk_tokens`` padded tokens (each chunk padded only to its own longest row);
- :func:`pad_chunk`: right padding, to a width multiple (:func:`pad_multiple_for`) or to fixed shape
  ladders (:func:`bucket_width`, :func:`bucket_rows`; on GPUs, :func:`shape_buckets_for`);
- :func:`chunk_logits`: one forward of a padded chunk, with the mask it needs (:func:`causal_mask_arg`);
- :func:`pack_chunks`: the same chunks laid out for the packed training forward (:mod:`lorank.models.packed`):
  real tokens only, with each chunk's padded layout for attention.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch


def pad_multiple_for(device: torch.device | str) -> int:
    """Width multiple for :func:`pad_chunk`: 16 on GPUs (few kernel shapes), 1 elsewhere (no wasted compute)."""
    return 16 if torch.device(device).type == "cuda" else 1


def shape_buckets_for(device: torch.device | str) -> bool:
    """Whether batch shapes are bucketed (:func:`bucket_width`, :func:`bucket_rows`): on GPUs, where kernels
    are selected (and cuDNN attention plans built) per shape; not on CPU, where padding is pure waste."""
    return torch.device(device).type == "cuda"


def bucket_width(n: int) -> int:
    """The fixed width ladder: multiples of 16 up to 128, then 4 widths per octave (160, 192, 224, 256, 320,
    ...); a chunk of longest row ``n`` is padded to the first rung >= n."""
    if n < 1:
        raise ValueError(f"a width must be >= 1, got {n}")
    if n <= 128:
        return -(-n // 16) * 16
    step = 1 << ((n - 1).bit_length() - 3)
    return -(-n // step) * step


def bucket_rows(n: int) -> int:
    """The fixed row ladder: 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, ... (2 rungs per octave); a chunk of ``n``
    sequences is padded with dummy rows to the first rung >= n."""
    if n < 1:
        raise ValueError(f"a chunk needs >= 1 row, got {n}")
    if n <= 4:
        return n
    p = 1 << ((n - 1).bit_length() - 1)
    return p * 3 // 2 if n <= p * 3 // 2 else 2 * p


def pad_chunk(seqs: list[list[int]], pad_id: int, multiple_of: int = 1,
              bucketed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence, rounded up to ``multiple_of`` (on GPUs a few widths mean a few
    kernel shapes: every new shape costs a one-time kernel selection/load, seconds on an 8B model).

    ``bucketed``: the width goes up to :func:`bucket_width` and the rows to :func:`bucket_rows`; the extra
    rows are dummies after the real ones (all pad ids, only their first position unmasked so that masked
    attention stays finite). Their scores are not read: callers keep the first ``len(seqs)`` rows
    (:func:`lorank.train.trainer.chunk_scores`), so no loss or gradient depends on them."""
    width = max(len(s) for s in seqs)
    width = bucket_width(width) if bucketed else -(-width // multiple_of) * multiple_of
    rows = bucket_rows(len(seqs)) if bucketed else len(seqs)
    ids = torch.full((rows, width), pad_id, dtype=torch.long)
    mask = torch.zeros((rows, width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    mask[len(seqs):, 0] = 1
    return ids, mask


def length_chunks(lengths: Sequence[int], chunk_tokens: int, call_overhead: int = 128,
                  bucketed: bool = False) -> list[list[int]]:
    """Split indices, sorted by length, into contiguous chunks that minimise padded tokens.

    Cost of a chunk = rows x its longest row + ``call_overhead`` (the fixed price of one more forward
    call, in token-equivalents); each chunk holds at most ``chunk_tokens`` padded tokens (or one row).
    An exact dynamic programme over the sorted order: O(n^2), trivial for the n <= a few thousand here.
    ``bucketed``: rows and width are those :func:`pad_chunk` gives with ``bucketed=True`` (the ladders), so
    the programme picks chunks that fill their row rung and the budget holds for the padded shape.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    n = len(order)
    if n == 0:
        return []
    ls = [max(1, int(lengths[i])) for i in order]
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        longest = ls[end - 1]  # sorted: the chunk's last row is its longest
        if bucketed:
            width = bucket_width(longest)
            for start in range(end - 1, -1, -1):
                rows = bucket_rows(end - start)
                if rows * width > chunk_tokens and end - start > 1:
                    break
                c = best[start] + rows * width + call_overhead
                if c < best[end]:
                    best[end], cut[end] = c, start
            continue
        max_rows = max(1, chunk_tokens // longest)
        for start in range(max(0, end - max_rows), end):
            c = best[start] + (end - start) * longest + call_overhead
            if c < best[end]:
                best[end], cut[end] = c, start
    chunks: list[list[int]] = []
    end = n
    while end > 0:
        chunks.append(order[cut[end]:end])
        end = cut[end]
    return chunks[::-1]


def causal_mask_arg(mask: torch.Tensor) -> torch.Tensor | None:
    """The attention mask to pass for a right-padded chunk of a causal decoder: ``None`` on GPUs.

    With right padding, a real token attends only to earlier positions, which are all real, so the causal
    mask alone gives the real tokens (and the last one, which is scored) exactly their values; the pad
    positions' outputs are never read. Without a padding mask SDPA takes its flash kernel (``is_causal``)
    instead of materialising a [rows, heads, T, T] mask and choosing a masked kernel per shape, which on
    an H100 cost seconds per new shape and most of the memory. On CPU the mask is kept (same kernels
    either way, and bit-identical results with earlier runs)."""
    return None if mask.device.type == "cuda" else mask


def chunk_logits(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One forward of a right-padded chunk: its scores (1-D). The one place that decides the mask passed
    (:func:`causal_mask_arg`) and that no KV cache is built; training, grad_cache and scoring all use it."""
    return model(input_ids=ids, attention_mask=causal_mask_arg(mask), use_cache=False).logits.reshape(-1)


def pack_chunks(seqs: list[list[int]], chunks: list[list[int]]) -> dict[str, Any]:
    """The packed batch of ``seqs`` (token id lists) laid out chunk by chunk (``chunks``: lists of indices into
    ``seqs``, as :func:`lorank.train.collator.length_chunks` gives them): ids and positions of every real token,
    each sequence's last token, each chunk's token range and padded layout, the original index of each sequence."""
    ids: list[int] = []
    pos: list[int] = []
    last: list[int] = []
    index: list[int] = []
    out_chunks = []
    for idx in chunks:
        start = len(ids)
        width = max(len(seqs[i]) for i in idx)
        dst: list[int] = []
        for row, i in enumerate(idx):
            s = seqs[i]
            ids.extend(s)
            pos.extend(range(len(s)))
            dst.extend(range(row * width, row * width + len(s)))
            last.append(len(ids) - 1)
            index.append(i)
        out_chunks.append({"start": start, "stop": len(ids), "rows": len(idx), "width": width,
                           "dst": torch.tensor(dst, dtype=torch.long)})
    return {"ids": torch.tensor(ids, dtype=torch.long), "pos": torch.tensor(pos, dtype=torch.long),
            "last": torch.tensor(last, dtype=torch.long), "index": torch.tensor(index, dtype=torch.long),
            "chunks": out_chunks, "max_len": max(len(s) for s in seqs)}
