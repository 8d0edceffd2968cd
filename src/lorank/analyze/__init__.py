"""Adapter analysis and layer-wise probes (issue 6).

- :func:`weight_stats` — per-module norms, relative norms, spectra, effective / stable rank (files only).
- :func:`compare_adapters` — Grassmann subspace similarity of two adapters or checkpoints, per module.
- :func:`probe` — per-layer linear probes (base vs fine-tuned), GroupKFold by query.
- :func:`patch` — activation patching of layer / attention / MLP outputs into the LoRA-off model.
- :func:`icr_profile` — the "before LoRA" view: each layer's (and head's) ranking quality under in-context
  reranking of the base model (:mod:`lorank.inference.icr`).
- :func:`adalora_allocation` — the rank each (layer, projection) of an AdaLoRA adapter kept (JSON + heatmap).
- :func:`run_analysis` — one entry point for study specs: ``run_analysis(kind, adapter, out_dir, **options)``.

``probe`` and ``patch`` take a :class:`lorank.subject.Subject` (the reranker and its judged candidates:
``probe(resolve_subject("runs/r8", "dl19"), max_queries=20)``); ``run_analysis`` resolves it from its options.

Each writes JSON (+ CSV for weights) and PNGs into ``out_dir`` atomically and returns the JSON as a dict.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lorank.errors import ConfigError
from lorank.subject import Subject, resolve_subject

KINDS = ("weights", "compare", "probe", "patch", "ltr")
#: the options of a probe / patch step that name its subject (:func:`lorank.subject.resolve_subject`), not the verb
SUBJECT_OPTIONS = ("eval_set", "queries", "run", "collection", "qrels", "data_root", "allow_pickle", "reranker")
#: a probe / patch step's evaluation set when its options name none
DEFAULT_EVAL_SET = "dl19"

__all__ = ["KINDS", "adalora_allocation", "compare_adapters", "icr_profile", "patch", "probe", "run_analysis", "weight_stats"]


def weight_stats(adapter: str | Path, out_dir: str | Path | None = None, **options: Any) -> dict[str, Any]:
    from lorank.analyze.weights import weight_stats as _f

    return _f(adapter, out_dir, **options)


def compare_adapters(a: str | Path, b: str | Path, out_dir: str | Path | None = None, **options: Any) -> dict[str, Any]:
    from lorank.analyze.similarity import compare_adapters as _f

    return _f(a, b, out_dir, **options)


def probe(subject: Subject | None, out_dir: str | Path | None = None, **options: Any) -> dict[str, Any]:
    from lorank.analyze.probes import probe as _f

    return _f(subject, out_dir, **options)


def patch(subject: Subject, out_dir: str | Path | None = None, **options: Any) -> dict[str, Any]:
    from lorank.analyze.patching import patch as _f

    return _f(subject, out_dir, **options)


def icr_profile(candidates: Any, out_dir: str | Path | None = None, **options: Any) -> dict[str, Any]:
    from lorank.analyze.icr_view import icr_profile as _f

    return _f(candidates, out_dir, **options)


def adalora_allocation(adapter: str | Path, out_dir: str | Path | None = None, **options: Any) -> dict[str, Any]:
    from lorank.analyze.adalora_view import adalora_allocation as _f

    return _f(adapter, out_dir, **options)


def run_analysis(kind: str, adapter: Any, out_dir: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """Dispatch one analysis step by ``kind`` (weights | compare | probe | patch | ltr).

    ``compare`` takes the second adapter as ``other=...`` (or ``adapter`` as a pair ``[a, b]``);
    ``probe`` / ``patch`` take the data as ``eval_set=...`` (a name, a folder or a RerankSet; default
    ``dl19``) or as ``queries/run/collection/qrels`` paths, resolved with ``adapter`` into their subject
    (:func:`lorank.subject.resolve_subject`). Unknown options are a :class:`ConfigError` naming them.
    """
    import inspect

    from lorank.analyze import patching, probes, similarity, weights

    from lorank.ltr.pipeline import ltr_study_step

    impl = {"weights": weights.weight_stats, "compare": similarity.compare_adapters,
            "probe": probes.probe, "patch": patching.patch, "ltr": ltr_study_step}
    if kind not in impl:
        raise ConfigError(f"unknown analysis kind {kind!r} (use one of {', '.join(KINDS)})")
    f = impl[kind]
    opts = dict(options)
    if kind == "compare":
        other = opts.pop("other", None) or opts.pop("b", None)
        if other is None and isinstance(adapter, (list, tuple)) and len(adapter) == 2:
            adapter, other = adapter
        if other is None:
            raise ConfigError("compare needs two adapters: run_analysis('compare', A, out_dir, other=B)")
        args: tuple[Any, ...] = (adapter, other)
    else:
        if isinstance(adapter, (list, tuple)):
            raise ConfigError(f"{kind} takes one adapter, got {len(adapter)}")
        args = (adapter,)
    names = list(inspect.signature(f).parameters)[len(args):]
    if kind in ("probe", "patch"):  # the adapter and the data options become the verb's one subject
        names = [*SUBJECT_OPTIONS, *names]
    bad = sorted(k for k in opts if k not in names)
    if bad:
        allowed = [n for n in names if n != "out_dir"]
        raise ConfigError(f"unknown option(s) for analysis {kind!r}: {', '.join(bad)} (known: {', '.join(allowed)})")
    if "out_dir" in opts:
        raise ConfigError("give out_dir as the third argument of run_analysis, not as an option")
    if kind in ("probe", "patch"):
        args = (_step_subject(kind, adapter, opts),)
    return f(*args, out_dir=out_dir, **opts)


def _step_subject(kind: str, adapter: Any, opts: dict[str, Any]) -> Subject | None:
    """The subject of a probe / patch step, from its adapter and the options that name its data (taken out of
    ``opts``); None for a probe that fits on saved features (``features_in``: no data, no model)."""
    given = {k: opts.pop(k) for k in SUBJECT_OPTIONS if k in opts}
    if kind == "probe" and opts.get("features_in") is not None:
        return None
    given.setdefault("eval_set", DEFAULT_EVAL_SET)
    return resolve_subject(adapter, **given)
