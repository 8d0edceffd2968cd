"""``lorank features``: one row per (query, candidate) of a run, with the feature groups asked for."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lorank.errors import ConfigError, DataError
from lorank.features.groups import (BM25_COLUMNS, DEFAULT_GROUPS, SCORE_COLUMN, latent_column, latent_targets,
                                    parse_groups)
from lorank.features.latent import extract_latent
from lorank.features.table import GRADE_COLUMN, write_table
from lorank.lora.sites import LATENT_ACTIVATION, latent_modules
from lorank.models.arch import arch_for
from lorank.subject import Subject

ProgressFactory = Callable[[str, int], Callable[[int], None]]


def extract_features(subject: Subject, out: str | Path = "features.parquet",
                     groups: Sequence[str] | str | None = DEFAULT_GROUPS, depth: int = 100,
                     max_queries: int | None = None, batch_tokens: int = 8192,
                     progress: ProgressFactory | None = None) -> dict[str, Any]:
    """Write the feature table ``out`` (.parquet or .csv) for the top ``depth`` candidates of each query of
    ``subject`` (:func:`lorank.subject.resolve_subject`; the first ``max_queries`` judged queries when given) and
    return its metadata (also in ``<out>.meta.json``). ``groups``: see :mod:`lorank.features.groups`; every group
    but ``bm25`` needs the subject's reranker (an adapter). A ``grade`` column holds the judgement where the set
    has qrels (empty: unjudged)."""
    import pandas as pd

    t0 = time.perf_counter()
    parsed = parse_groups(groups)
    kinds = {g.kind for g in parsed}
    needs_model = bool(kinds - {"bm25"})
    if depth < 1:
        raise ConfigError(f"depth must be >= 1, got {depth}")
    rs = subject.candidates
    if max_queries:
        rs = rs.subset(max_queries)
    qids = sorted(q for q in rs.run if rs.run[q])
    no_cands = sorted(q for q in rs.queries if not rs.run.get(q))
    if not qids:
        raise DataError(rs.name, None, "no query has candidates in the run")
    keys, bm25, ranks = [], [], []
    for q in qids:
        for i, e in enumerate(rs.run[q][:depth]):
            keys.append((q, e.docid))
            bm25.append(float(e.score))
            ranks.append(i + 1)
    cols: dict[str, Any] = {"qid": [k[0] for k in keys], "docid": [k[1] for k in keys]}
    if rs.qrels:
        cols[GRADE_COLUMN] = pd.array([rs.qrels.get(q, {}).get(d) for q, d in keys], dtype="Int64")
    if "bm25" in kinds:
        cols[BM25_COLUMNS[0]], cols[BM25_COLUMNS[1]] = bm25, ranks
    meta: dict[str, Any] = {"kind": "features", "eval_set": rs.name,
                            "source": None if subject.source is None else str(subject.source),
                            "qrels": str(subject.qrels_file) if subject.qrels_file else None,
                            "data_root": str(subject.data_root) if subject.data_root else None,
                            "groups": [g.text for g in parsed], "depth": depth, "max_queries": max_queries,
                            "queries": len(qids), "pairs": len(keys), "judged_pairs": None,
                            "skipped": {"queries_without_candidates": len(no_cands)}}
    if rs.qrels:
        meta["judged_pairs"] = int((~cols[GRADE_COLUMN].isna()).sum())
    if needs_model:
        if not subject.has_model:
            raise ConfigError(f"groups {', '.join(sorted(kinds - {'bm25'}))} need a model: give an adapter")
        rr = subject.reranker
        arch = arch_for(rr.model.config)

        available = latent_modules(rr.model) if kinds & {"mlp", "mha", "lora"} else {}
        targets = latent_targets(parsed, arch, available)
        seqs = [rr.encoder.encode(rs.queries[q], rs.passages[d].text, rs.passages[d].title) for q, d in keys]
        tick = progress("features", len(seqs)) if progress else None
        scores, acts = extract_latent(rr.model, seqs, int(rr.tokenizer.pad_token_id), sorted(targets), batch_tokens,
                                      rr.scorer.bf16, tick)
        if "score" in kinds:
            cols[SCORE_COLUMN] = scores
        for (layer, proj), a in sorted(acts.items()):
            part = targets[(layer, proj)]
            if part in ("both", "act"):
                for i in range(a.shape[1]):
                    cols[latent_column(layer, proj, f"a{i}")] = a[:, i]
            if part in ("both", "norm"):
                cols[latent_column(layer, proj, "norm")] = np.linalg.norm(a.astype(np.float64), axis=1)
        meta.update(adapter=subject.checkpoint, family=arch.family,
                    components={p: arch.component_of(p) for p in arch.projections},
                    latent_modules=len(targets), rank={f"L{a}.{b}": int(v.shape[1]) for (a, b), v in acts.items()},
                    token="last non-pad", activation=LATENT_ACTIVATION)
    df = pd.DataFrame(cols)
    meta["columns"] = len(df.columns)
    meta["seconds"] = round(time.perf_counter() - t0, 2)
    meta["file"] = str(out)
    write_table(out, df, meta)
    return meta
