"""Evaluation sets through the optional `ir_datasets` package, never hanging when offline.

Before a download is attempted the network is probed (in a daemon thread, so even a stuck
DNS lookup costs at most a few seconds), and while ir_datasets works every socket has a
timeout. A dataset already in ir_datasets' cache is loaded without the probe succeeding.
"""
from __future__ import annotations

import importlib
import socket
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from lorank.errors import DataError
from lorank.data.records import Passage, RunEntry
from lorank.data.rerankset import RerankSet

SOCKET_TIMEOUT_S = 10.0
PROBE = ("ir-datasets.com", 443)


def _online(address: tuple[str, int] = PROBE, timeout: float = 5.0) -> bool:
    """True when a TCP connection to `address` opens within `timeout` seconds."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(address, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return bool(result and result[0])


def _cached(irds: ModuleType, dataset_id: str) -> bool:
    """Whether ir_datasets' cache already has a folder for this dataset family."""
    home_path = getattr(getattr(irds, "util", None), "home_path", None)
    if home_path is None:  # an ir_datasets without util.home_path: nothing can be known to be cached
        return False
    home = Path(home_path())
    return (home / dataset_id.split("/")[0]).is_dir()


def load_ir_dataset(dataset_id: str, name: str | None = None) -> RerankSet:
    """Load an ir_datasets id with queries, scoreddocs (the candidates) and optional qrels.

    Raises `DataError` when the package is missing, when offline with nothing cached, when
    the id is unknown, or when loading or downloading fails.
    """
    where = f"ir_datasets:{dataset_id}"
    try:
        irds = importlib.import_module("ir_datasets")
    except ImportError:
        raise DataError(
            where, None, "the ir_datasets package is not installed: pip install ir_datasets"
        ) from None
    if not _cached(irds, dataset_id) and not _online():
        raise DataError(where, None, "offline: cannot download the dataset (no network, nothing cached)")
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(SOCKET_TIMEOUT_S)
    try:
        try:
            dataset = irds.load(dataset_id)
        except KeyError:
            raise DataError(where, None, "unknown ir_datasets id") from None
        return _rerank_set(dataset, name or dataset_id, where)
    except DataError:
        raise
    except Exception as e:  # ir_datasets raises many kinds (IOError, HTTP errors, its own)
        raise DataError(where, None, f"loading failed (offline, or the download failed): {type(e).__name__}: {e}") from None
    finally:
        socket.setdefaulttimeout(old)


def _rerank_set(dataset: Any, name: str, where: str) -> RerankSet:
    for part in ("queries", "scoreddocs", "docs"):
        if not getattr(dataset, f"has_{part}")():
            raise DataError(where, None, f"the dataset has no {part}; a rerank set needs queries, scoreddocs and docs")
    queries = {q.query_id: q.text for q in dataset.queries_iter()}
    scored: dict[str, list[tuple[float, str]]] = {}
    for sd in dataset.scoreddocs_iter():
        if sd.query_id in queries:
            scored.setdefault(sd.query_id, []).append((float(sd.score), sd.doc_id))
    run: dict[str, list[RunEntry]] = {}
    for qid, pairs in scored.items():
        pairs.sort(key=lambda p: -p[0])
        run[qid] = [RunEntry(qid, docid, rank, score, "ir_datasets") for rank, (score, docid) in enumerate(pairs, 1)]
    docids = {e.docid for entries in run.values() for e in entries}
    docs = dataset.docs_store().get_many(docids)
    missing = docids - docs.keys()
    if missing:
        raise DataError(where, None, f"{len(missing)} candidate docids are not in the docs, e.g. {sorted(missing)[:3]}")
    passages = {
        d: Passage(d, getattr(doc, "text", "") or getattr(doc, "body", ""), getattr(doc, "title", "") or "")
        for d, doc in docs.items()
    }
    qrels: dict[str, dict[str, int]] | None = None
    if dataset.has_qrels():
        qrels = {}
        for q in dataset.qrels_iter():
            qrels.setdefault(q.query_id, {})[q.doc_id] = int(q.relevance)
    return RerankSet(name, {q: t for q, t in queries.items() if q in run}, passages, run, qrels)
