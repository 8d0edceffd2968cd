"""Collate groups into length-sorted chunks: no padding beyond each chunk's longest sequence.

A step of B queries x G passages is split into chunks of at most ``chunk_tokens`` padded tokens,
sorted by length, so short passages are not padded to the longest one of the whole step. The
trainer forwards each chunk and scatters the scores back into (B, G).
"""
from __future__ import annotations

from typing import Any

import torch

from lorank.batching import (bucket_rows, bucket_width, length_chunks, pack_chunks, pad_chunk,  # noqa: F401
                              pad_multiple_for, shape_buckets_for)
from lorank.models.inputs import PairEncoder
from lorank.train.groups import Group


class GroupCollator:
    def __init__(self, encoder: PairEncoder, pad_id: int, chunk_tokens: int = 4096, pad_multiple: int = 1,
                 bucketed: bool = False, packed: bool = False):
        self.encoder = encoder
        self.pad_id = pad_id
        self.chunk_tokens = chunk_tokens
        self.pad_multiple = pad_multiple  # pad_multiple_for(the training device)
        self.bucketed = bucketed  # shape_buckets_for(the training device): fixed width and row ladders
        self.packed = packed  # also lay the step out for lorank.models.packed (real tokens only)

    def __call__(self, groups: list[Group]) -> dict[str, Any]:
        g = len(groups[0].passages)
        seqs = [self.encoder.encode(gr.query, p.text, p.title) for gr in groups for p in gr.passages]
        chunks = []
        order = length_chunks([len(s) for s in seqs], self.chunk_tokens, bucketed=self.bucketed)
        for idx in order:
            ids, mask = pad_chunk([seqs[i] for i in idx], self.pad_id, self.pad_multiple, self.bucketed)
            chunks.append({"input_ids": ids, "attention_mask": mask, "index": torch.tensor(idx, dtype=torch.long)})
        teacher = None
        if all(gr.teacher is not None for gr in groups):
            teacher = torch.tensor([gr.teacher for gr in groups], dtype=torch.float32)
        out = {"chunks": chunks, "n_groups": len(groups), "group_size": g, "teacher": teacher,
               "num_tokens": sum(len(s) for s in seqs),
               "padded_tokens": sum(c["input_ids"].numel() for c in chunks)}
        if self.packed:
            out["packed"] = pack_chunks(seqs, order)
            out["padded_tokens"] = out["num_tokens"]  # the matmuls see real tokens only
        return out
