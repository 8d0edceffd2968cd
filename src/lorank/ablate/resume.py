"""A sweep's scores so far, saved while it runs, so that an interrupted sweep goes on where it stopped.

A sweep scores every configuration chunk by chunk (:func:`lorank.ablate.engine.score_configs`): on a 2-core CPU one
sweep of the reference adapter takes 30-60 min in bf16 and 2-4 h in fp32, longer than what is left of many
sessions. ``SweepState`` keeps the finished chunks' scores in one ``.npz`` (written atomically, at most every
``every_s`` seconds and at the end) under a fingerprint of everything the scores depend on: the configurations'
names, the token ids of every sequence, the chunking budget, the precision, the cache setting, whether LoRA is merged
and a checksum of the adapter's trainable weights. A state with another fingerprint is ignored (and replaced), never mixed in.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger("lorank.ablate")

__all__ = ["SweepState", "fingerprint"]


def _weights_checksum(model: Any) -> str:
    """A checksum of the adapter's weights (LoRA factors and the score head): another adapter gives another."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda x: x[0]):
        if "lora_" in name or "score" in name:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def fingerprint(model: Any, seqs: Sequence[list[int]], names: Sequence[str], batch_tokens: int, bf16: bool,
                use_cache: bool, merged: bool = False) -> str:
    """``merged`` (LoRA merged into the weights) enters only when true: states of unmerged sweeps keep the
    fingerprint they had before merging existed."""
    h = hashlib.sha256()
    h.update(json.dumps({"configs": list(names), "batch_tokens": batch_tokens, "bf16": bool(bf16),
                         "use_cache": bool(use_cache), "weights": _weights_checksum(model), "n": len(seqs),
                         **({"merged": True} if merged else {})}).encode())
    for s in seqs:
        h.update(np.asarray(s, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:24]


class SweepState:
    """The scores of the chunks done so far: ``load()`` them, ``save(...)`` as chunks finish."""

    def __init__(self, path: str | Path, key: str, names: Sequence[str], n: int, every_s: float = 60.0):
        self.path, self.key, self.names, self.n, self.every_s = Path(path), key, list(names), n, every_s
        self.last_save = time.monotonic()

    def stored_key(self) -> str | None:
        """The fingerprint of the state on disk (None: no readable state)."""
        try:
            with np.load(self.path, allow_pickle=False) as z:
                return str(z["key"])
        except (OSError, ValueError, KeyError):
            return None

    def load(self) -> tuple[int, dict[str, np.ndarray], dict[str, float]] | None:
        """(chunks done, scores by configuration, counters) of a state with this fingerprint, else None."""
        if not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as z:
                if str(z["key"]) != self.key or list(z["names"]) != self.names:
                    log.warning("%s: a sweep state of other settings or weights: not used, started again", self.path)
                    return None
                scores = {name: z["scores"][i].copy() for i, name in enumerate(self.names)}
                counters = {k: float(z[k]) for k in ("layer_calls", "naive", "wall_s")}
                return int(z["done"]), scores, counters
        except (OSError, ValueError, KeyError) as e:
            log.warning("%s: unreadable sweep state (%s): started again", self.path, e)
            return None

    def save(self, done: int, scores: dict[str, np.ndarray], counters: dict[str, float], force: bool = False) -> bool:
        """Write the state if ``every_s`` has passed since the last write (or ``force``); True if written."""
        now = time.monotonic()
        if not force and now - self.last_save < self.every_s:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".tmp-{os.getpid()}.npz")
        np.savez(tmp, key=np.array(self.key), names=np.array(self.names), done=np.array(done),
                 scores=np.stack([scores[n] for n in self.names]) if self.names else np.zeros((0, self.n)),
                 **{k: np.array(v) for k, v in counters.items()})
        os.replace(tmp, self.path)
        self.last_save = now
        return True
