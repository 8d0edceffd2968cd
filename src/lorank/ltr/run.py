"""``lorank ltr``: LambdaMART on feature tables, evaluated on a test table as TREC runs with paired tests."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lorank.atomic import atomic_write_json
from lorank.data import load_qrels, resolve_eval_set
from lorank.errors import ConfigError, DataError
from lorank.evaluation import compare, write_run
from lorank.features.groups import BM25_COLUMNS, GRAMMAR, SCORE_COLUMN, parse_groups, select_columns
from lorank.features.table import GRADE_COLUMN, read_meta, read_table
from lorank.ltr.importance import aggregate_gain
from lorank.ltr.model import DEFAULT_GRID, fit_ranker
from lorank.ltr.plot import plot_importance
from lorank.ltr.split import split_rows
from lorank.models.arch import arch_for

#: the comparison rows of the study: the first stage, the reranker alone, and three LambdaMART feature sets
DEFAULT_ROWS = ("bm25", "reranker", "bm25+score", "bm25+mlp", "all")
ALL_GROUPS = "bm25+score+lora"
MEASURES = ("ndcg_cut_10", "recip_rank_10")


@dataclass(frozen=True)
class Row:
    name: str
    kind: str          # column (a single column as the run) | ltr
    groups: str = ""   # ltr: the '+'-joined feature groups
    column: str = ""   # column rows


def parse_rows(rows: Sequence[str]) -> list[Row]:
    """``bm25`` (first stage), ``reranker`` (the score alone), ``all`` (LTR on everything), ``GROUPS`` or
    ``NAME=GROUPS`` (LTR on those groups, e.g. ``bm25+mlp:L5-15``)."""
    out: list[Row] = []
    for text in rows:
        t = str(text).strip()
        if t == "bm25":
            out.append(Row("BM25", "column", column=BM25_COLUMNS[0]))
        elif t in ("reranker", "score"):
            out.append(Row("reranker", "column", column=SCORE_COLUMN))
        else:
            name, _, groups = t.rpartition("=") if "=" in t else ("", "", t)
            groups = ALL_GROUPS if groups == "all" else groups
            parse_groups(groups)  # raises with the grammar
            out.append(Row(name or f"LTR({'all' if groups == ALL_GROUPS else groups})", "ltr", groups))
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"ltr rows: a row name is given twice: {names}")
    if not out:
        raise ConfigError(f"ltr: no rows; use bm25, reranker, all or feature groups ({GRAMMAR})")
    return out


def load_qrels_from(spec: Any, data_root: Any = None) -> dict[str, dict[str, int]]:
    """Qrels from a file, or from a named set / TREC-DL folder."""
    p = Path(str(spec))
    if p.is_file():
        return load_qrels(p)
    rs = resolve_eval_set(str(spec), data_root)
    if not rs.qrels:
        raise DataError(str(spec), None, "this set has no qrels")
    return rs.qrels


def _test_qrels(test: Path, test_qrels: Any, data_root: Any) -> tuple[dict[str, dict[str, int]], str]:
    if test_qrels is not None:
        return load_qrels_from(test_qrels, data_root), str(test_qrels)
    meta = read_meta(test)
    for key in ("qrels", "source"):
        if meta.get(key):
            return load_qrels_from(meta[key], data_root or meta.get("data_root")), str(meta[key])
    raise ConfigError(f"{test}: cannot tell the test qrels (the table's metadata names no source); pass test_qrels "
                      "(--test-qrels FILE or a set name)")


def _labels(df: Any, path: Path, qrels: dict[str, dict[str, int]] | None) -> tuple[np.ndarray, np.ndarray]:
    """Grades (unjudged = 0) and a judged mask."""
    if qrels is not None:
        g = np.array([qrels.get(q, {}).get(d, -1) for q, d in zip(df["qid"], df["docid"])], dtype=np.int64)
        return np.clip(g, 0, None), g >= 0
    if GRADE_COLUMN not in df.columns:
        raise DataError(path, None, f"no {GRADE_COLUMN!r} column (the set had no qrels): pass train_qrels")
    g = df[GRADE_COLUMN].to_numpy(dtype=np.float64, na_value=np.nan)
    judged = ~np.isnan(g)
    return np.clip(np.nan_to_num(g, nan=0.0), 0, None).astype(np.int64), judged


def _arch(family: str | None) -> Any:
    """The architecture map entry of a feature table's model family (None when unknown)."""
    if not family:
        return None
    try:
        return arch_for(family)
    except ConfigError:
        return None


def _run(df: Any, scores: np.ndarray) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for q, d, s in zip(df["qid"], df["docid"], scores):
        out.setdefault(q, {})[d] = float(s)
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_")


@dataclass
class _Inputs:
    """The two feature tables of one ``ltr`` call, read and labelled: what every row is fitted and evaluated on."""
    tr_df: Any                         # the training table (judged pairs only with judged_only)
    te_df: Any                         # the test table
    tr_meta: dict[str, Any]
    te_meta: dict[str, Any]
    components: dict[str, Any]         # both tables' feature components (the test table's win)
    arch: Any                          # the architecture map entry of their model family, or None
    qrels: dict[str, dict[str, int]]   # the test qrels, of the test table's judged queries only
    qrels_src: str
    test_q: list[str]                  # every query of the test table
    judged_q: list[str]                # those judged in the qrels
    y: np.ndarray                      # training grades (unjudged = 0)
    judged: np.ndarray                 # which training pairs were judged (before judged_only drops any)


def _read_inputs(train: Path, test: Path, test_qrels: Any, train_qrels: Any, data_root: Any,
                 judged_only: bool) -> _Inputs:
    """Read both tables and their metadata, the test qrels (restricted to the test table's judged queries) and the
    training grades; refuse a test table with no judged query and a training table with no positive grade."""
    tr_df, te_df = read_table(train), read_table(test)
    tr_meta, te_meta = read_meta(train), read_meta(test)
    components = {**(tr_meta.get("components") or {}), **(te_meta.get("components") or {})}
    arch = _arch(tr_meta.get("family") or te_meta.get("family"))
    qrels, qrels_src = _test_qrels(test, test_qrels, data_root)
    test_q = sorted(set(te_df["qid"]))
    judged_q = [q for q in test_q if qrels.get(q)]
    if not judged_q:
        raise DataError(test, None, f"no query of the test table is judged in {qrels_src}")
    qrels = {q: qrels[q] for q in judged_q}  # evaluate on the test table's queries only
    y, judged = _labels(tr_df, train, load_qrels_from(train_qrels, data_root) if train_qrels is not None else None)
    if judged_only:
        keep = np.nonzero(judged)[0]
        tr_df, y = tr_df.iloc[keep].reset_index(drop=True), y[keep]
    if y.max(initial=0) <= 0:
        raise DataError(train, None, "no training pair has a positive grade: nothing to learn")
    return _Inputs(tr_df, te_df, tr_meta, te_meta, components, arch, qrels, qrels_src, test_q, judged_q, y, judged)


def _score_rows(parsed: list[Row], inp: _Inputs, test: Path, tr_idx: np.ndarray, va_idx: np.ndarray,
                grid: dict[str, list[Any]], seed: int, threads: int, early_stopping: int,
                progress: Callable[[str, int], Callable[[int], None]] | None
                ) -> tuple[dict[str, dict[str, dict[str, float]]], list[dict[str, Any]], list[dict[str, str]]]:
    """Every row's run on the test table (a column as it is, or a LambdaMART fit on the row's feature groups), its
    result entry, and the rows skipped with why: ``(runs, results, skipped)``."""
    runs: dict[str, dict[str, dict[str, float]]] = {}
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    fits = [r for r in parsed if r.kind == "ltr"]
    tick = progress("ltr fits", len(fits)) if progress else None
    for r in parsed:
        if r.kind == "column":
            if r.column not in inp.te_df.columns:
                skipped.append({"row": r.name, "reason": f"the test table has no {r.column!r} column"})
                continue
            runs[r.name] = _run(inp.te_df, inp.te_df[r.column].to_numpy(dtype=np.float64))
            results.append({"row": r.name, "kind": "column", "column": r.column})
            continue
        cols = select_columns(parse_groups(r.groups), list(inp.tr_df.columns), inp.components, inp.arch)
        if not cols:
            skipped.append({"row": r.name, "reason": f"the training table has no column of groups {r.groups!r}"})
        else:
            runs[r.name], entry = _fit_row(r, cols, inp, test, tr_idx, va_idx, grid, seed, threads, early_stopping)
            results.append(entry)
        if tick:
            tick(1)
    return runs, results, skipped


def _fit_row(r: Row, cols: list[str], inp: _Inputs, test: Path, tr_idx: np.ndarray, va_idx: np.ndarray,
             grid: dict[str, list[Any]], seed: int, threads: int, early_stopping: int
             ) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Fit LambdaMART on one row's feature columns, tuned on the query split; its run on the test table and its
    result entry (parameters, validation nDCG@10, gain importance)."""
    miss = [c for c in cols if c not in inp.te_df.columns]
    if miss:
        raise DataError(test, None, f"row {r.name}: {len(miss)} feature column(s) of the training table are "
                                    f"missing here, e.g. {', '.join(miss[:3])} (extract both with the same groups)")
    X = inp.tr_df[cols].to_numpy(dtype=np.float64, na_value=np.nan)
    fit = fit_ranker(X, inp.y, inp.tr_df["qid"].to_numpy(), tr_idx, va_idx, grid, seed, threads, early_stopping)
    run = _run(inp.te_df, fit.predict(inp.te_df[cols].to_numpy(dtype=np.float64, na_value=np.nan)))
    return run, {"row": r.name, "kind": "ltr", "groups": r.groups, "features": len(cols), "params": fit.params,
                 "valid_ndcg10": fit.valid_ndcg10, "grid": fit.grid,
                 "importance": aggregate_gain(cols, fit.gain(), inp.components)}


def _evaluate_rows(qrels: dict[str, dict[str, int]], runs: dict[str, dict[str, dict[str, float]]],
                   results: list[dict[str, Any]], rel_threshold: int) -> None:
    """Add each row's measures to its result entry, and its paired tests against BM25, the reranker alone and the
    same learner without latent features (what the latent add), each baseline there is."""
    for base in ("BM25", "reranker", "LTR(bm25+score)"):
        if base not in runs:
            continue
        order = [base] + [n for n in runs if n != base]
        cmp = compare(qrels, {n: runs[n] for n in order}, baseline=base, rel_threshold=rel_threshold,
                      measures=list(MEASURES))
        for res in results:
            agg = cmp.results[res["row"]].aggregate
            res.update({m: float(agg[m]) for m in MEASURES})
            if res["row"] != base:
                res[f"vs_{base}"] = {m: {"delta": c.delta, "p_holm": c.p_adjusted, "significant": c.significant}
                                     for m in MEASURES for c in [cmp.get(res["row"], m)]}
    if "BM25" not in runs and "reranker" not in runs:
        cmp = compare(qrels, runs, rel_threshold=rel_threshold, measures=list(MEASURES))
        for res in results:
            res.update({m: float(cmp.results[res["row"]].aggregate[m]) for m in MEASURES})


def _report(train: Path, test: Path, inp: _Inputs, tr_idx: np.ndarray, va_idx: np.ndarray,
            results: list[dict[str, Any]], skipped: list[dict[str, str]], rel_threshold: int, valid_frac: float,
            judged_only: bool, grid: dict[str, list[Any]], early_stopping: int, seed: int) -> dict[str, Any]:
    """The ``ltr.json`` content (its ``seconds`` and ``files`` still to fill): the inputs, the split, the learner,
    the test method and every row's result."""
    tr_df, judged = inp.tr_df, inp.judged
    shared = sorted(set(tr_df["qid"]) & set(inp.test_q))
    return {
        "kind": "ltr", "train_file": str(train), "test_file": str(test), "train_set": inp.tr_meta.get("eval_set"),
        "test_set": inp.te_meta.get("eval_set"), "adapter": inp.te_meta.get("adapter") or inp.tr_meta.get("adapter"),
        "qrels": inp.qrels_src, "rel_threshold": rel_threshold, "measures": list(MEASURES),
        "test": {"queries": len(inp.test_q), "judged_queries": len(inp.judged_q), "pairs": int(len(inp.te_df))},
        "training": {"queries": int(tr_df["qid"].nunique()), "pairs": int(len(tr_df)),
                     "train_queries": int(tr_df["qid"].iloc[tr_idx].nunique()),
                     "valid_queries": int(tr_df["qid"].iloc[va_idx].nunique()), "valid_frac": valid_frac,
                     "unjudged_pairs_as_grade_0": 0 if judged_only else int((~judged).sum()),
                     "dropped_unjudged_pairs": int((~judged).sum()) if judged_only else 0},
        "model": {"ranker": "LightGBM LGBMRanker, objective lambdarank", "grid": grid,
                  "selection": "best validation nDCG@10 (queries held out from training, split by query), "
                               f"early stopping {early_stopping} rounds; refit on train + valid with its trees",
                  "seed": seed},
        "test_method": "paired two-sided t-test over judged test queries, Holm-Bonferroni per measure, "
                       "against BM25, against the reranker and against LTR(bm25+score), separately",
        "rows": results, "skipped_rows": skipped,
        "notes": ([f"{len(shared)} test qids also occur in the training table (fine for different sets that reuse "
                   "ids; a leak if they are the same queries)"] if shared else []),
        "seconds": None, "files": {},
    }


def ltr(train: str | Path, test: str | Path, out_dir: str | Path, rows: Sequence[str] = DEFAULT_ROWS,
        test_qrels: Any = None, train_qrels: Any = None, data_root: str | Path | None = None,
        valid_frac: float = 0.2, seed: int = 0, grid: dict[str, list[Any]] | None = None, threads: int = 1,
        early_stopping: int = 30, judged_only: bool = False, rel_threshold: int = 2,
        plots: bool = True, progress: Callable[[str, int], Callable[[int], None]] | None = None) -> dict[str, Any]:
    """Train LambdaMART rankers on the ``train`` feature table (tuned on a split by query), score the ``test``
    table, evaluate every row as a TREC run (nDCG@10, MRR@10 at ``rel_threshold``) with paired t-tests (Holm)
    against BM25 and against the reranker, and report gain importance by group, layer and projection.
    Writes ``ltr.json``, ``runs/*.run`` and ``ltr_importance.png`` into ``out_dir``; returns the JSON."""
    t0 = time.perf_counter()
    train, test, out = Path(train), Path(test), Path(out_dir)
    parsed = parse_rows(rows)
    inp = _read_inputs(train, test, test_qrels, train_qrels, data_root, judged_only)
    tr_idx, va_idx = split_rows(inp.tr_df["qid"].to_numpy(), valid_frac, seed)
    runs, results, skipped = _score_rows(parsed, inp, test, tr_idx, va_idx, grid or DEFAULT_GRID, seed, threads,
                                         early_stopping, progress)
    if not runs:
        raise ConfigError(f"ltr: every row was skipped: {skipped}")
    out.mkdir(parents=True, exist_ok=True)
    for name, run in runs.items():
        write_run(out / "runs" / f"{_safe(name)}.run", run, tag=_safe(name) or "ltr")
    _evaluate_rows(inp.qrels, runs, results, rel_threshold)
    result = _report(train, test, inp, tr_idx, va_idx, results, skipped, rel_threshold, valid_frac, judged_only,
                     grid or DEFAULT_GRID, early_stopping, seed)
    if plots:
        png = plot_importance(result, out / "ltr_importance.png")
        if png is not None:
            result["files"]["plot"] = str(png)
    result["files"]["json"] = str(out / "ltr.json")
    result["files"]["runs"] = str(out / "runs")
    result["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(out / "ltr.json", result)
    return result
