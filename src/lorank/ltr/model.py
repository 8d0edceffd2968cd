"""LambdaMART (LightGBM ``lambdarank``): a small grid, each point early-stopped on validation queries."""
from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from lorank.errors import ConfigError
from lorank.ltr.split import group_sizes

DEFAULT_GRID: dict[str, list[Any]] = {"num_leaves": [15, 31], "learning_rate": [0.05, 0.1]}
BASE_PARAMS: dict[str, Any] = {"objective": "lambdarank", "n_estimators": 500, "min_child_samples": 10,
                               "colsample_bytree": 0.8, "reg_lambda": 1.0, "verbose": -1}


@dataclass
class Fitted:
    model: Any
    params: dict[str, Any]
    best_iteration: int
    valid_ndcg10: float
    grid: list[dict[str, Any]] = field(default_factory=list)  # every grid point with its validation nDCG@10

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(X), dtype=np.float64)

    def gain(self) -> np.ndarray:
        return np.asarray(self.model.booster_.feature_importance(importance_type="gain"), dtype=np.float64)


def _lgbm() -> Any:
    try:
        import lightgbm
    except ImportError:
        raise ConfigError("lorank ltr needs LightGBM: pip install lightgbm") from None
    return lightgbm


def _ranker(params: dict[str, Any], seed: int, threads: int) -> Any:
    lgb = _lgbm()
    return lgb.LGBMRanker(**{**BASE_PARAMS, **params}, random_state=seed, n_jobs=threads, deterministic=True,
                          force_col_wise=True)


def fit_ranker(X: np.ndarray, y: np.ndarray, qids: Sequence[str], train_idx: np.ndarray, valid_idx: np.ndarray,
               grid: dict[str, list[Any]] | None = None, seed: int = 0, threads: int = 1, early_stopping: int = 30,
               refit: bool = True) -> Fitted:
    """Fit one ranker per grid point on ``train_idx`` rows, early-stopped on nDCG@10 of ``valid_idx`` rows
    (their queries are disjoint: see :func:`lorank.ltr.split.split_rows`); keep the best point. ``refit``: then
    refit it on train + valid with its best number of trees."""
    lgb = _lgbm()
    q = np.asarray([str(x) for x in qids])
    if set(q[train_idx]) & set(q[valid_idx]):
        raise ConfigError("fit_ranker: a query sits in both the training and the validation rows")
    y = np.clip(np.asarray(y, dtype=np.int64), 0, None)
    grid = grid or DEFAULT_GRID
    names = list(grid)
    o_tr, s_tr = group_sizes(q[train_idx])
    o_va, s_va = group_sizes(q[valid_idx])
    tr, va = train_idx[o_tr], valid_idx[o_va]
    tried: list[dict[str, Any]] = []
    best: tuple[float, dict[str, Any], int, Any] | None = None
    for values in itertools.product(*(grid[n] for n in names)):
        params = dict(zip(names, values))
        m = _ranker(params, seed, threads)
        # LightGBM >= 4.7 names the validation data eval_X / eval_y (eval_set is deprecated there)
        ev = ({"eval_X": (X[va],), "eval_y": (y[va],)} if "eval_X" in inspect.signature(m.fit).parameters
              else {"eval_set": [(X[va], y[va])]})
        m.fit(X[tr], y[tr], group=s_tr, eval_group=[s_va], eval_at=[10],
              callbacks=[lgb.early_stopping(early_stopping, verbose=False)], **ev)
        score = float(m.best_score_["valid_0"]["ndcg@10"])
        it = int(m.best_iteration_ or m.n_estimators)
        tried.append({**params, "valid_ndcg10": score, "trees": it})
        if best is None or score > best[0] + 1e-12:
            best = (score, params, it, m)
    assert best is not None
    score, params, it, m = best
    if refit:
        allr = np.concatenate([train_idx, valid_idx])
        o, s = group_sizes(q[allr])
        m = _ranker({**params, "n_estimators": max(1, it)}, seed, threads)
        m.fit(X[allr[o]], y[allr[o]], group=s)
    return Fitted(m, {**params, "n_estimators": it}, it, score, tried)
