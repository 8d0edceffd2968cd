"""One call from an adapter to the LTR comparison: features of the training and test sets, then ``ltr``
(the study's ``analyses: [{kind: ltr}]`` step and ``benchmarks/ltr_latent.py``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from lorank.errors import ConfigError
from lorank.features.extract import extract_features
from lorank.features.groups import parse_groups
from lorank.ltr.run import DEFAULT_ROWS, ltr, parse_rows
from lorank.reranker import Reranker
from lorank.subject import resolve_subject

STUDY_GROUPS = ("bm25", "score", "lora")


def ltr_study_step(adapter: str | Path, out_dir: str | Path, train: str = "dl20", test: str = "dl19",
                   groups: Sequence[str] = STUDY_GROUPS, rows: Sequence[str] = DEFAULT_ROWS, depth: int = 100,
                   max_queries: int | None = None, train_max_queries: int | None = None,
                   data_root: str | Path | None = None, batch_tokens: int = 8192, valid_frac: float = 0.2,
                   seed: int = 0, threads: int = 1, grid: dict[str, list[Any]] | None = None,
                   features_format: str = "parquet", allow_pickle: bool = False,
                   progress: Callable[[str, int], Callable[[int], None]] | None = None,
                   reuse_features: bool = False) -> dict[str, Any]:
    """Extract ``groups`` for ``train`` (LTR training queries) and ``test`` with one loaded adapter into
    ``out_dir/features_{train,test}.<fmt>``, then run :func:`lorank.ltr.run.ltr` into ``out_dir``.
    ``max_queries`` / ``train_max_queries``: the first N judged queries of the test / training set.
    ``reuse_features``: a feature table already in ``out_dir`` made with the same adapter, set, groups, depth and
    query cap is used as it is (the extraction is most of the cost: ~9 min a set at depth 100 on 2 CPU cores); one
    made with other settings is an error, not silently reused."""
    if features_format not in ("parquet", "csv"):
        raise ConfigError(f"features_format must be parquet or csv, got {features_format!r}")
    out = Path(out_dir)
    rr = Reranker.from_adapter(adapter, allow_pickle=allow_pickle)
    files = {}
    for role, name, mq in (("train", train, train_max_queries), ("test", test, max_queries)):
        f = out / f"features_{role}.{features_format}"
        if reuse_features and _reusable(f, adapter, name, groups, depth, mq):
            files[role] = f
            continue
        extract_features(resolve_subject(adapter, name, data_root=data_root, reranker=rr), out=f, groups=groups,
                         depth=depth, max_queries=mq, batch_tokens=batch_tokens, progress=progress)
        files[role] = f
    res = ltr(files["train"], files["test"], out, rows=rows, data_root=data_root, valid_frac=valid_frac, seed=seed,
              threads=threads, grid=grid, progress=progress)
    res["features_files"] = {k: str(v) for k, v in files.items()}
    return res


def _reusable(f: Path, adapter: str | Path, name: str, groups: Sequence[str], depth: int, max_queries: int | None) -> bool:
    """True when ``f`` holds the features these settings would extract (its ``.meta.json`` says so)."""
    import json
    import logging

    meta_f = f.with_name(f.name + ".meta.json")
    if not (f.is_file() and meta_f.is_file()):
        return False
    meta = json.loads(meta_f.read_text(encoding="utf-8"))
    want = {"adapter": str(adapter), "source": str(name), "groups": list(groups), "depth": depth, "max_queries": max_queries}
    diff = {k: (meta.get(k), v) for k, v in want.items() if meta.get(k) != v}
    if diff:
        raise ConfigError(f"{f}: made with other settings ({', '.join(f'{k} {a!r}, not {b!r}' for k, (a, b) in diff.items())})"
                          ": delete it, or do not reuse features")
    logging.getLogger("lorank.ltr").warning("reusing %s (%s pairs, made with the same settings)", f, meta.get("pairs"))
    return True


def check_options(options: dict[str, Any]) -> list[str]:
    """Problems of a study's ``{kind: ltr, options: {...}}`` found before any work starts (unknown options,
    bad feature groups or rows)."""
    import inspect

    params = list(inspect.signature(ltr_study_step).parameters)[2:]
    problems = [f"unknown option {k!r} for analysis 'ltr' (known: {', '.join(params)})"
                for k in options if k not in params]
    for key, check in (("groups", parse_groups), ("rows", parse_rows)):
        if key in options:
            try:
                check(options[key])
            except ConfigError as e:
                problems.extend(f"options.{key}: {p}" for p in e.problems)
    return problems


def estimate_pairs(options: dict[str, Any]) -> int:
    """Pairs scored by one ltr step (DL20: 54 judged queries, DL19: 43, when not capped)."""
    depth = int(options.get("depth", 100))
    return depth * (int(options.get("train_max_queries") or 54) + int(options.get("max_queries") or 43))
