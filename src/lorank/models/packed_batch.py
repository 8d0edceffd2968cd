"""The packed layout of a training step for :mod:`lorank.models.packed`: real tokens only, chunk by chunk."""
from __future__ import annotations

from typing import Any

import torch


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
