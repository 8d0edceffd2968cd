"""Score one candidate run with N processes, split by query; rank 0 merges the parts into one TREC run.

Every process scores its own share of the queries (balanced by number of pairs, deterministic), and
writes its part atomically as ``<out>.parts/part-00001-of-00004.json`` (``{qid: {docid: score}}``,
floats written with full precision). Rank 0 waits for every part, merges them, puts the candidates
below ``depth`` underneath in first-stage order (as the single-process rerank does) and writes the
TREC run atomically. No collective communication is needed: the parts meet on the filesystem, so
any launcher works.

Two ways to run it:

- one call that spawns the local workers itself::

      from lorank.inference.shard import ScorerSpec, sharded_rerank
      sharded_rerank(ScorerSpec(adapter="runs/r8"), queries, passages, run, "out.run", processes=2)

- under torchrun / accelerate / SLURM, one call per process (rank and world size from ``RANK`` and
  ``WORLD_SIZE``, or ``LORANK_SHARD_RANK`` / ``LORANK_SHARD_WORLD``)::

      torchrun --nproc_per_node 2 my_script.py   # my_script calls rerank_shard(...)

A part already written by an earlier attempt of the same job (same queries, depth and world size)
is reused, so a crashed sharded job resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from lorank.atomic import atomic_write_json
from lorank.errors import LorankError
from lorank.evaluation.trec_io import write_run
from lorank.inference.engine import Scorer
from lorank.inference.runs import rerank_to_run
from lorank.models.device import resolve_device
from lorank.precision import use_bf16
from lorank.reranker import Reranker

log = logging.getLogger("lorank.inference")


class ShardError(LorankError):
    pass


def shard_env() -> tuple[int, int]:
    """(rank, world_size) from ``LORANK_SHARD_RANK``/``LORANK_SHARD_WORLD``, else ``RANK``/``WORLD_SIZE``
    (torchrun, accelerate), else (0, 1)."""
    for r, w in (("LORANK_SHARD_RANK", "LORANK_SHARD_WORLD"), ("RANK", "WORLD_SIZE")):
        if os.environ.get(r) is not None and os.environ.get(w) is not None:
            rank, world = int(os.environ[r]), int(os.environ[w])
            if not 0 <= rank < world:
                raise ShardError(f"bad shard rank {rank} for world size {world} (from ${r}, ${w})")
            return rank, world
    return 0, 1


def assign_queries(run: Mapping[str, Sequence[Any]], depth: int, world_size: int) -> list[list[str]]:
    """Split the queries into ``world_size`` shares of about equal pair counts (greedy, largest first;
    ties by qid), each share in sorted qid order. Deterministic: every process computes the same split."""
    if world_size < 1:
        raise ShardError(f"world size must be >= 1, got {world_size}")
    loads = [0] * world_size
    shares: list[list[str]] = [[] for _ in range(world_size)]
    for qid in sorted(run, key=lambda q: (-min(len(run[q]), depth), q)):
        i = min(range(world_size), key=lambda k: (loads[k], k))
        shares[i].append(qid)
        loads[i] += min(len(run[qid]), depth)
    return [sorted(s) for s in shares]


def job_key(run: Mapping[str, Sequence[Any]], depth: int, world_size: int) -> str:
    """A short hash of what is scored: the queries, their candidates to ``depth``, and the split."""
    h = hashlib.sha256(f"{depth}|{world_size}".encode())
    for qid in sorted(run):
        h.update(qid.encode() + b"\0" + b"\1".join(e.docid.encode() for e in run[qid][:depth]) + b"\n")
    return h.hexdigest()[:16]


def parts_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".parts")


def part_path(out: str | Path, rank: int, world_size: int) -> Path:
    return parts_dir(out) / f"part-{rank:05d}-of-{world_size:05d}.json"


def _read_part(path: Path, key: str) -> dict[str, dict[str, float]] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("job") != key:
        return None
    return data["scores"]


def _scorer_of(obj: Any) -> Any:
    """A Reranker's raw scorer (its ``rerank`` returns scores only for the reranked depth)."""
    return obj.scorer if hasattr(obj, "scorer") and hasattr(obj.scorer, "rerank") else obj


def rerank_shard(scorer: Any, queries: Mapping[str, str], passages: Mapping[str, Any],
                 run: Mapping[str, Sequence[Any]], out: str | Path, depth: int = 100,
                 rank: int | None = None, world_size: int | None = None, tag: str = "lorank",
                 timeout_s: float = 24 * 3600.0, poll_s: float = 0.5, keep_parts: bool = False,
                 progress: Callable[[int], None] | None = None, merge: bool = True) -> Path | None:
    """Score this process's share of ``run`` and write its part; on rank 0 (unless ``merge=False``) also
    wait for all parts, merge them and write the TREC run ``out``. Returns ``out`` where it merged, else ``None``.

    ``scorer`` is a :class:`~lorank.inference.engine.Scorer` (or anything with its ``rerank``), or a
    :class:`~lorank.reranker.Reranker`."""
    if rank is None or world_size is None:
        rank, world_size = shard_env()
    key = job_key(run, depth, world_size)
    mine = assign_queries(run, depth, world_size)[rank]
    part = part_path(out, rank, world_size)
    if _read_part(part, key) is None:
        t0 = time.perf_counter()
        scores = _scorer_of(scorer).rerank(queries, passages, {q: run[q] for q in mine}, depth, progress)
        atomic_write_json(part, {"job": key, "rank": rank, "world_size": world_size, "queries": len(mine),
                                 "wall_s": round(time.perf_counter() - t0, 3), "scores": scores})
    else:
        log.info("shard %d/%d: reusing its finished part %s", rank, world_size, part)
    if rank != 0 or not merge:
        return None
    return merge_parts(out, run, depth, world_size, tag=tag, timeout_s=timeout_s, poll_s=poll_s,
                       keep_parts=keep_parts)


def merge_parts(out: str | Path, run: Mapping[str, Sequence[Any]], depth: int, world_size: int,
                tag: str = "lorank", timeout_s: float = 24 * 3600.0, poll_s: float = 0.5,
                keep_parts: bool = False, alive: Callable[[], bool] | None = None) -> Path:
    """Wait for the ``world_size`` parts of this job, merge them and write the TREC run ``out``.

    ``alive`` (optional) is asked while waiting; when it returns False the wait stops with an error
    (a worker died). Parts are deleted after the run is written unless ``keep_parts``."""
    key = job_key(run, depth, world_size)
    paths = [part_path(out, r, world_size) for r in range(world_size)]
    scores: dict[str, dict[str, float]] = {}
    pending = list(range(world_size))
    deadline = time.monotonic() + timeout_s
    while pending:
        still = []
        for r in pending:
            got = _read_part(paths[r], key)
            if got is None:
                still.append(r)
            else:
                scores.update(got)
        pending = still
        if not pending:
            break
        if time.monotonic() > deadline:
            raise ShardError(f"timed out after {timeout_s:.0f} s waiting for the parts of ranks {pending} "
                             f"in {parts_dir(out)}")
        if alive is not None and not alive():
            raise ShardError(f"a scoring worker stopped before writing its part (ranks {pending} missing)")
        time.sleep(poll_s)
    missing = [q for q in run if q not in scores]
    if missing:
        raise ShardError(f"the merged parts lack {len(missing)} queries (e.g. {missing[:3]})")
    merged = rerank_to_run(scores, dict(run), depth)
    path = write_run(out, merged, tag=tag)
    if not keep_parts:
        for p in paths:
            p.unlink(missing_ok=True)
        try:
            parts_dir(out).rmdir()
        except OSError:
            pass
    return path


@dataclass(frozen=True)
class ScorerSpec:
    """What each spawned worker loads (picklable): a lorank adapter (run or checkpoint dir), or a base
    model with an untrained head. ``prefix_cache``/``batch_tokens``/``bf16``/``merge_lora`` go to the Scorer."""

    adapter: str | None = None
    model: str | None = None
    head_init: str = "random"
    dtype: str | None = None
    batch_tokens: int = 8192
    prefix_cache: bool = False
    bf16: bool | None = None
    merge_lora: bool = False  # the workers' models are only scored: merging them is safe
    device: str | None = None  # None/auto/cuda: worker r on cuda:r mod count where there are GPUs; cpu: the CPU

    def build(self, device: Any = None) -> Any:
        kw: dict[str, Any] = {"batch_tokens": self.batch_tokens, "bf16": self.bf16, "device": device}
        if self.adapter:
            rr = Reranker.from_adapter(self.adapter, dtype=self.dtype, **kw)
        else:
            rr = Reranker.from_pretrained(self.model, head_init=self.head_init, dtype=self.dtype or "auto", **kw)
        rr.scorer = Scorer(rr.model, rr.encoder, int(rr.tokenizer.pad_token_id), batch_tokens=self.batch_tokens,
                           bf16=self.bf16, prefix_cache=self.prefix_cache, merge_lora=self.merge_lora)
        return rr


def _worker(rank: int, world_size: int, threads: int, factory: Any, queries: Any, passages: Any, run: Any,
            out: str, depth: int, tag: str) -> None:
    import torch

    torch.set_num_threads(max(1, threads))
    if isinstance(factory, ScorerSpec):
        scorer = factory.build(_worker_device(factory.device, rank))
    else:
        scorer = factory()
    rerank_shard(scorer, queries, passages, run, out, depth, rank=rank, world_size=world_size, tag=tag, merge=False)


def _worker_device(want: str | None, rank: int) -> str:
    """Worker ``rank``'s device: one GPU per worker (cuda:rank mod count) unless a GPU index is pinned."""
    return str(resolve_device(want, rank))


def sharded_rerank(factory: ScorerSpec | Callable[[], Any], queries: Mapping[str, str],
                   passages: Mapping[str, Any], run: Mapping[str, Sequence[Any]], out: str | Path,
                   depth: int = 100, processes: int = 2, threads_per_process: int | None = None,
                   tag: str = "lorank", timeout_s: float = 24 * 3600.0, keep_parts: bool = False) -> Path:
    """Spawn ``processes`` local workers (each builds its scorer with ``factory``, a :class:`ScorerSpec` or
    a picklable callable), let each score its share, then merge one TREC run ``out`` here.

    Each worker uses ``threads_per_process`` torch threads (default: the cores this process may use,
    divided by ``processes``), so the workers do not fight over cores."""
    import multiprocessing as mp

    if processes < 1:
        raise ShardError(f"processes must be >= 1, got {processes}")
    if isinstance(factory, ScorerSpec) and factory.bf16 is None:
        import dataclasses

        # decided once here, not in each worker: every shard computes in the same precision

        factory = dataclasses.replace(factory, bf16=use_bf16(None, resolve_device(factory.device).type))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = threads_per_process or max(1, cores // processes)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, processes, threads, factory, dict(queries), dict(passages),
                                                dict(run), str(out), depth, tag), daemon=True)
             for r in range(processes)]
    for p in procs:
        p.start()

    def alive() -> bool:
        return all(p.is_alive() or p.exitcode == 0 for p in procs)

    try:
        # every rank (0 too) only writes its part: the merge is done here, so a worker error surfaces at once
        for p in procs:
            while p.is_alive():
                p.join(0.5)
                if not alive():
                    break
            if not alive():
                bad = [(r, q.exitcode) for r, q in enumerate(procs) if q.exitcode not in (0, None)]
                raise ShardError(f"scoring worker(s) failed: {bad} (rank, exit code)")
        return merge_parts(out, run, depth, processes, tag=tag, timeout_s=timeout_s, keep_parts=keep_parts,
                           alive=alive)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
