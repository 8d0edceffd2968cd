"""Layer-wise linear probes: where does a (base or fine-tuned) reranker's residual stream separate
relevant from non-relevant passages?

One forward pass per model state collects, at the last non-pad token (where the score head reads),
the embedding output and the output of every decoder layer. A logistic-regression probe per layer
is cross-validated with folds split by query (GroupKFold: a query's pairs never sit on both sides),
and scored by out-of-fold accuracy and ROC AUC.

The base model is the same PEFT model with every LoRA delta switched off per ``LoraLayer``
(:func:`lorank.ablate.ablated` with ``Mask('off')``), never ``disable_adapter()``, which would also
swap the trained score head back to its untrained original (the head does not enter the probes, but
the reference AUC of the model's own score does).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from lorank.ablate import ablated, Mask
from lorank.analyze.common import ProgressFactory, encode_pairs, select_pairs, select_queries
from lorank.atomic import atomic_open, atomic_write_json
from lorank.batching import length_chunks, pad_chunk
from lorank.errors import ConfigError, DataError
from lorank.inference.forward_context import autocast_ctx
from lorank.models.arch import backbone, decoder_layers
from lorank.plotting import pyplot, save_figure
from lorank.subject import Subject


@contextlib.contextmanager
def _last_token_hooks(model: Any, store: list[list[torch.Tensor]], last: dict[str, torch.Tensor]) -> Iterator[None]:
    """Hooks on the embeddings and every decoder layer that keep only the last non-pad token's vector."""
    mods = [backbone(model).get_input_embeddings()] + list(decoder_layers(model))
    hooks = []
    for i, mod in enumerate(mods):
        def hook(m: Any, inp: Any, out: Any, i: int = i) -> None:
            h = out[0] if isinstance(out, tuple) else out
            rows = torch.arange(h.shape[0], device=h.device)
            store[i].append(h[rows, last["idx"]].float().cpu())
        hooks.append(mod.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def extract_features(model: Any, seqs: Sequence[list[int]], pad_id: int, batch_tokens: int = 8192,
                     bf16: bool = False, progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(X, scores)``: X is (n, L + 1, d) float32 with X[:, 0] the embeddings and X[:, l + 1] the
    output of decoder layer l, all at each sequence's last non-pad token; scores are the model's."""
    n_pos = len(decoder_layers(model)) + 1
    dev = next(model.parameters()).device
    X: np.ndarray | None = None
    scores = np.empty(len(seqs))
    model.eval()
    with torch.inference_mode(), autocast_ctx(model, bf16):
        for idx in length_chunks([len(s) for s in seqs], batch_tokens):
            ids, mask = pad_chunk([seqs[i] for i in idx], pad_id)
            ids, mask = ids.to(dev), mask.to(dev)
            store: list[list[torch.Tensor]] = [[] for _ in range(n_pos)]
            last = {"idx": mask.sum(1) - 1}  # right padding: the last real token
            with _last_token_hooks(model, store, last):
                logits = model(input_ids=ids, attention_mask=mask).logits
            feats = torch.stack([torch.cat(s) for s in store], dim=1).numpy()  # (b, L+1, d)
            if X is None:
                X = np.empty((len(seqs), n_pos, feats.shape[-1]), dtype=np.float32)
            X[idx] = feats
            scores[idx] = logits.float().reshape(-1).cpu().numpy()
            if progress:
                progress(len(idx))
    if X is None:
        raise DataError(None, None, "no pairs to extract features from")
    return X, scores


DEFAULT_CS = (0.001, 0.01, 0.1, 1.0)


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def per_query_auc(y: np.ndarray, s: np.ndarray, groups: np.ndarray) -> float:
    """Mean over queries (with both classes) of the AUC within the query: how well ``s`` ranks a
    query's relevant pairs above its non-relevant ones, blind to per-query offsets."""
    vals = [_auc(y[groups == g], s[groups == g]) for g in np.unique(groups)]
    vals = [v for v in vals if v == v]
    return float(np.mean(vals)) if vals else float("nan")


def _fit_predict(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, C: float, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    clf.fit(Xtr, ytr)
    return clf.predict_proba(Xte)[:, 1]


def _standardize(Xtr: np.ndarray, Xte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, sd = Xtr.mean(0), Xtr.std(0)
    sd[sd < 1e-8] = 1.0
    return (Xtr - mu) / sd, (Xte - mu) / sd


def _choose_C(X: np.ndarray, y: np.ndarray, groups: np.ndarray, Cs: Sequence[float], seed: int) -> float:
    """Inner GroupKFold (3 folds) on the training part: the C with the best mean within-query AUC."""
    from sklearn.model_selection import GroupKFold

    k = min(3, len(np.unique(groups)))
    if k < 2:
        return float(Cs[len(Cs) // 2])
    best, best_c = -1.0, float(Cs[0])
    for c in Cs:
        pred = np.full(len(y), 0.5)
        for tr, te in GroupKFold(n_splits=k).split(X, y, groups):
            if y[tr].min() != y[tr].max():
                Xtr, Xte = _standardize(X[tr], X[te])
                pred[te] = _fit_predict(Xtr, y[tr], Xte, c, seed)
        v = per_query_auc(y, pred, groups)
        if v == v and v > best + 1e-9:
            best, best_c = v, float(c)
    return best_c


def fit_probes(X: np.ndarray, y: np.ndarray, groups: Sequence[Any], n_splits: int = 5,
               C: float | Sequence[float] = DEFAULT_CS, seed: int = 0, positions: Sequence[Any] | None = None,
               progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """One L2 logistic-regression probe per position ``X[:, p]`` (features standardised on each training
    part), cross-validated with GroupKFold by ``groups`` (queries): no query sits on both sides. ``C``:
    one value, or several to choose from per outer fold by an inner GroupKFold (nested, unbiased).

    Per position: out-of-fold accuracy, the mean within-query AUC (``auc_per_query``: the ranking view),
    the AUC pooled over all pairs (``auc``) and the mean / sd of the per-fold AUCs."""
    from sklearn.model_selection import GroupKFold

    y = np.asarray(y).astype(int)
    groups = np.asarray(groups)
    if X.ndim != 3 or X.shape[0] != len(y) or len(groups) != len(y):
        raise ConfigError(f"fit_probes: X must be (n, positions, d) with n = {len(y)} labels, got {X.shape}")
    if y.min() == y.max():
        raise DataError(None, None, "probes need both relevant and non-relevant pairs")
    n_groups = len(np.unique(groups))
    k = min(n_splits, n_groups)
    if k < 2:
        raise DataError(None, None, f"probes need pairs from at least 2 queries (got {n_groups})")
    Cs = [float(C)] if isinstance(C, (int, float)) else [float(c) for c in C]
    if not Cs or min(Cs) <= 0:
        raise ConfigError(f"probe C must be > 0, got {C!r}")
    folds = list(GroupKFold(n_splits=k).split(X[:, 0], y, groups))
    # small problems: one BLAS thread (extra threads only spin, badly so on a busy machine: 4x measured here)
    from threadpoolctl import threadpool_limits

    limit = threadpool_limits(limits=1) if X.shape[0] * X.shape[2] <= 2_000_000 else contextlib.nullcontext()
    with limit:
        return _fit_positions(X, y, groups, folds, Cs, seed, positions, progress)


def _fit_positions(X: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: list[Any], Cs: list[float], seed: int,
                   positions: Sequence[Any] | None, progress: Callable[[int], None] | None) -> list[dict[str, Any]]:
    rows = []
    for p in range(X.shape[1]):
        oof = np.empty(len(y))
        fold_auc, chosen = [], []
        for tr, te in folds:
            if y[tr].min() == y[tr].max():  # a fold's training part with one class: predict its rate
                oof[te] = float(y[tr].mean())
                continue
            c = Cs[0] if len(Cs) == 1 else _choose_C(X[tr, p], y[tr], groups[tr], Cs, seed)
            chosen.append(c)
            Xtr, Xte = _standardize(X[tr, p], X[te, p])
            oof[te] = _fit_predict(Xtr, y[tr], Xte, c, seed)
            fold_auc.append(_auc(y[te], oof[te]))
        fa = [a for a in fold_auc if a == a]
        rows.append({
            "position": p, "layer": positions[p] if positions is not None else p,
            "accuracy": float(((oof >= 0.5).astype(int) == y).mean()),
            "auc_per_query": per_query_auc(y, oof, groups),
            "auc": _auc(y, oof),
            "auc_fold_mean": float(np.mean(fa)) if fa else float("nan"),
            "auc_fold_std": float(np.std(fa)) if fa else float("nan"),
            "C": chosen,
        })
        if progress:
            progress(1)
    return rows


METRICS = ("accuracy", "auc_per_query", "auc", "auc_fold_mean", "auc_fold_std", "C")


def save_features(path: str | Path, feats: dict[str, tuple[np.ndarray, np.ndarray]], y: np.ndarray,
                  keys: Sequence[tuple[str, str]], meta: dict[str, Any]) -> Path:
    """The extracted features (and labels, pair keys, scores) as one .npz, written atomically."""
    import json

    with atomic_open(path, "wb") as fh:
        np.savez(fh, X_base=feats["base"][0], X_finetuned=feats["finetuned"][0], s_base=feats["base"][1],
                 s_finetuned=feats["finetuned"][1], y=y, qids=np.array([k[0] for k in keys]),
                 docids=np.array([k[1] for k in keys]), meta=np.array(json.dumps(meta)))
    return Path(path)


def load_features(path: str | Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray,
                                              list[tuple[str, str]], dict[str, Any]]:
    import json

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"probe features file not found: {p}")
    with np.load(p, allow_pickle=False) as z:
        feats = {s: (z[f"X_{s}"], z[f"s_{s}"]) for s in ("base", "finetuned")}
        keys = list(zip(z["qids"].tolist(), z["docids"].tolist()))
        return feats, z["y"], keys, json.loads(str(z["meta"]))


@dataclass
class _ProbeInput:
    """What the probes fit on: both model states' features and scores, the labels and pair keys, and where they
    come from (the adapter, the set, its queries and the pair selection), with the default output folder."""
    feats: dict[str, tuple[np.ndarray, np.ndarray]]  # state (base / finetuned) -> (X, the model's scores)
    y: np.ndarray
    keys: list[tuple[str, str]]
    adapter: Any
    eval_set: Any
    qids: list[str]
    depth: int
    rel_threshold: int
    out_default: Path


def _saved_input(features_in: str | Path) -> _ProbeInput:
    """The features saved by an earlier probe (``features_out``), with the selection they were extracted with."""
    feats, y, keys, meta = load_features(features_in)
    return _ProbeInput(feats, y, keys, meta["adapter"], meta["eval_set"], meta["qids"], meta["depth"],
                       meta["rel_threshold"], Path(features_in).parent)


def _extracted_input(subject: Subject | None, max_queries: int | None, depth: int, rel_threshold: int, seed: int,
                     batch_tokens: int, features_out: str | Path | None,
                     progress: ProgressFactory | None) -> _ProbeInput:
    """Select the subject's judged pairs and extract their features with LoRA off (base) and on (fine-tuned);
    saved to ``features_out`` when given."""
    if subject is None:
        raise ConfigError("probe needs a subject (lorank.subject.resolve_subject) or saved features (features_in)")
    rs = subject.judged()
    rr = subject.reranker
    qids = select_queries(rs, depth, max_queries, seed, rel_threshold, need_both=True)
    pairs = encode_pairs(rr.encoder, rs, select_pairs(rs, qids, depth, judged_only=True))
    y = np.array([int(g >= rel_threshold) for g in pairs.grades])
    keys = pairs.keys
    pad = int(rr.tokenizer.pad_token_id)
    feats = {}
    for state in ("base", "finetuned"):
        tick = progress(f"features ({state})", len(pairs.seqs)) if progress else None
        ctx = ablated(rr.model, Mask("off")) if state == "base" else contextlib.nullcontext()
        with ctx:
            feats[state] = extract_features(rr.model, pairs.seqs, pad, batch_tokens, rr.scorer.bf16, tick)
    ckpt, set_name = subject.checkpoint, rs.name
    out_default = Path(rr.meta.get("checkpoint", ".")) / "analysis"
    if features_out is not None:
        save_features(features_out, feats, y, keys, {"adapter": ckpt, "eval_set": set_name, "qids": qids,
                                                     "depth": depth, "rel_threshold": rel_threshold})
    return _ProbeInput(feats, y, keys, ckpt, set_name, qids, depth, rel_threshold, out_default)


def _layer_rows(per_state: dict[str, list[dict[str, Any]]], positions: list[Any]) -> list[dict[str, Any]]:
    """One row per position with both states' probe metrics side by side (``base_*``, ``finetuned_*``)."""
    layers = []
    for p in range(len(positions)):
        b, f = per_state["base"][p], per_state["finetuned"][p]
        layers.append({"layer": positions[p], **{f"base_{k}": b[k] for k in METRICS},
                       **{f"finetuned_{k}": f[k] for k in METRICS}})
    return layers


#: the metric the summary ranks layers by
SUMMARY_KEY = "auc_per_query"


def _best_layer(layers: list[dict[str, Any]], state: str) -> dict[str, Any]:
    """The layer with the best within-query AUC of a state (NaN never best), with that AUC and its pooled AUC."""
    key = SUMMARY_KEY
    r = max(layers, key=lambda r: -1 if r[f"{state}_{key}"] != r[f"{state}_{key}"] else r[f"{state}_{key}"])
    return {"layer": r["layer"], key: r[f"{state}_{key}"], "auc": r[f"{state}_auc"]}


def _first_layer_reaching(layers: list[dict[str, Any]], state: str, frac: float = 0.9) -> Any:
    """The first layer whose within-query AUC reaches ``frac`` of the way from chance (0.5) to the state's best."""
    key = SUMMARY_KEY
    top = _best_layer(layers, state)[key]
    thr = 0.5 + frac * (top - 0.5)
    return next((r["layer"] for r in layers if r[f"{state}_{key}"] >= thr), None)


def _probe_method(C: float | Sequence[float], n_splits: int, n_queries: int) -> dict[str, Any]:
    """The ``probe`` entry of ``probe.json``: the classifier, its C and how it is chosen, the folds, the metrics."""
    return {"model": "logistic regression (L2) on standardised features",
            "C": list(C) if not isinstance(C, (int, float)) else C,
            "C_selection": "nested: inner 3-fold GroupKFold, best mean within-query AUC"
            if not isinstance(C, (int, float)) and len(list(C)) > 1 else "fixed",
            "cv": f"GroupKFold by query, {min(n_splits, n_queries)} folds", "token": "last non-pad",
            "layer_index": "emb = embedding output; l = output of decoder layer l (0-based)",
            "metrics": "auc_per_query = mean over queries of the within-query AUC of the out-of-fold "
                       "probe scores; auc = AUC pooled over all pairs"}


def probe(subject: Subject | None, out_dir: str | Path | None = None, max_queries: int | None = 20, depth: int = 30,
          rel_threshold: int = 2, n_splits: int = 5, C: float | Sequence[float] = DEFAULT_CS, seed: int = 0,
          batch_tokens: int = 8192, features_out: str | Path | None = None, features_in: str | Path | None = None,
          plots: bool = True, progress: ProgressFactory | None = None) -> dict[str, Any]:
    """Per-layer probe accuracy / AUC for the base (LoRA off) and the fine-tuned model of ``subject``
    (:func:`lorank.subject.resolve_subject`; its candidates must be judged) on judged pairs of the top ``depth``
    candidates of ``max_queries`` queries; writes ``probe.json`` and ``probe.png`` into ``out_dir`` (default: the
    checkpoint's ``analysis/``).

    ``features_out``: also save the extracted features (.npz); ``features_in``: fit on saved features
    instead of running the model (no subject needed: it may be None)."""
    t0 = time.perf_counter()
    if features_in is not None:
        inp = _saved_input(features_in)
    else:
        inp = _extracted_input(subject, max_queries, depth, rel_threshold, seed, batch_tokens, features_out, progress)
    forward_s = time.perf_counter() - t0
    feats, y = inp.feats, inp.y
    groups = np.array([q for q, _ in inp.keys])
    n_pos = feats["base"][0].shape[1]
    positions = ["emb"] + list(range(n_pos - 1))
    tick = progress("probe fits", 2 * n_pos) if progress else None
    t1 = time.perf_counter()
    per_state = {s: fit_probes(feats[s][0], y, groups, n_splits, C, seed, positions, tick) for s in feats}
    layers = _layer_rows(per_state, positions)
    out = Path(out_dir) if out_dir is not None else inp.out_default
    result: dict[str, Any] = {
        "kind": "probe", "adapter": inp.adapter, "eval_set": inp.eval_set,
        "queries": len(inp.qids), "qids": inp.qids, "depth": inp.depth, "pairs": len(y), "positives": int(y.sum()),
        "rel_threshold": inp.rel_threshold, "majority_accuracy": float(max(y.mean(), 1 - y.mean())),
        "probe": _probe_method(C, n_splits, len(inp.qids)),
        "score_auc": {s: _auc(y, feats[s][1]) for s in feats},
        "score_auc_per_query": {s: per_query_auc(y, feats[s][1], groups) for s in feats},
        "summary": {"best_base": _best_layer(layers, "base"), "best_finetuned": _best_layer(layers, "finetuned"),
                    "first_layer_90pct_base": _first_layer_reaching(layers, "base"),
                    "first_layer_90pct_finetuned": _first_layer_reaching(layers, "finetuned")},
        "layers": layers, "forward_s": round(forward_s, 2), "fit_s": round(time.perf_counter() - t1, 2),
        "features": str(features_in or features_out) if (features_in or features_out) else None,
    }
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / "probe.json")}
    if plots:
        files["plot"] = str(plot_probes(result, out / "probe.png"))
    result["files"] = files
    atomic_write_json(out / "probe.json", result)
    return result


def plot_probes(res: dict[str, Any], out: Path) -> Path:
    plt = pyplot()
    rows = res["layers"]
    xs = [-1 if r["layer"] == "emb" else r["layer"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6), constrained_layout=True)
    colors = {"base": "tab:grey", "finetuned": "tab:blue"}
    labels = {"base": "base (LoRA off)", "finetuned": "fine-tuned (LoRA on)"}
    panels = [("auc_per_query", "score_auc_per_query", "within-query ROC AUC (mean over queries)",
               "Ranking view: probe AUC within each query"),
              ("auc", "score_auc", "ROC AUC pooled over all pairs",
               "Pooled probe AUC (band: per-fold AUC mean ± sd)")]
    for ax, (key, ref, ylab, title) in zip(axes, panels):
        for s in ("base", "finetuned"):
            ax.plot(xs, [r[f"{s}_{key}"] for r in rows], marker="o", ms=3.5, color=colors[s], label=labels[s])
            if key == "auc":
                m = np.array([r[f"{s}_auc_fold_mean"] for r in rows])
                sd = np.array([r[f"{s}_auc_fold_std"] for r in rows])
                ax.fill_between(xs, m - sd, m + sd, color=colors[s], alpha=0.15, lw=0)
            sa = res[ref][s]
            ax.axhline(sa, color=colors[s], ls="--", lw=1,
                       label=f"{labels[s].split(' (')[0]} model's own score ({sa:.3f})")
        ax.axhline(0.5, color="black", ls=":", lw=1, label="chance (0.5)")
        ax.set_ylabel(ylab)
        ax.set_title(title, fontsize=10)
    ax = axes[2]
    for s in ("base", "finetuned"):
        ax.plot(xs, [r[f"{s}_accuracy"] for r in rows], marker="o", ms=3.5, color=colors[s], label=labels[s])
    ax.axhline(res["majority_accuracy"], color="black", ls=":", lw=1,
               label=f"majority class ({res['majority_accuracy']:.3f})")
    ax.set_ylabel("probe accuracy (out-of-fold, threshold 0.5)")
    ax.set_title("Probe accuracy", fontsize=10)
    for ax in axes:
        _layer_ticks(ax, xs)
        ax.set_xlabel("decoder layer (output of block l; emb = embeddings)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="best")
    fig.suptitle(f"Linear relevance probes (last token) on {res['eval_set']}: {res['queries']} queries, "
                 f"{res['pairs']} judged pairs ({res['positives']} with grade ≥ {res['rel_threshold']}); "
                 f"out-of-fold, GroupKFold by query; dashed: the model's own score", fontsize=11)
    return save_figure(fig, out)


def _layer_ticks(ax: Any, xs: list[int]) -> None:
    """``emb`` and every ``step``-th layer, aligned so that the last layer is labelled."""
    step = max(1, (len(xs) - 1) // 15)
    last = xs[-1]
    ticks = [-1] + [x for x in xs if x >= 0 and (last - x) % step == 0 and (step == 1 or x >= step - 1)]
    ax.set_xticks(ticks, ["emb" if t == -1 else str(t) for t in ticks], fontsize=8)
