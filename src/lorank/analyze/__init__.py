"""Adapter analysis and layer-wise probes (issue 6).

- :func:`weight_stats` — per-module norms, relative norms, spectra, effective / stable rank (files only).
- :func:`compare_adapters` — Grassmann subspace similarity of two adapters or checkpoints, per module.
- :func:`probe` — per-layer linear probes (base vs fine-tuned), GroupKFold by query.
- :func:`patch` — activation patching of layer / attention / MLP outputs into the LoRA-off model.
- :func:`run_analysis` — one entry point for study specs: ``run_analysis(kind, adapter, out_dir, **options)``.

Each writes JSON (+ CSV for weights) and PNGs into ``out_dir`` atomically and returns the JSON as a dict.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lorank.errors import ConfigError

KINDS = ("weights", "compare", "probe", "patch", "ltr")

__all__ = ["KINDS", "compare_adapters", "patch", "probe", "run_analysis", "weight_stats"]


def weight_stats(adapter: str | Path, out_dir: str | Path | None = None, **options: Any) -> dict[str, Any]:
    from lorank.analyze.weights import weight_stats as _f

    return _f(adapter, out_dir, **options)


def compare_adapters(a: str | Path, b: str | Path, out_dir: str | Path | None = None, **options: Any) -> dict[str, Any]:
    from lorank.analyze.similarity import compare_adapters as _f

    return _f(a, b, out_dir, **options)


def probe(adapter: str | Path, eval_set: Any = "dl19", out_dir: str | Path | None = None, **options: Any) -> dict[str, Any]:
    from lorank.analyze.probes import probe as _f

    return _f(adapter, eval_set, out_dir, **options)


def patch(adapter: str | Path, eval_set: Any = "dl19", out_dir: str | Path | None = None, **options: Any) -> dict[str, Any]:
    from lorank.analyze.patching import patch as _f

    return _f(adapter, eval_set, out_dir, **options)


def run_analysis(kind: str, adapter: Any, out_dir: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """Dispatch one analysis step by ``kind`` (weights | compare | probe | patch | ltr).

    ``compare`` takes the second adapter as ``other=...`` (or ``adapter`` as a pair ``[a, b]``);
    ``probe`` / ``patch`` take the data as ``eval_set=...`` (a name, a folder or a RerankSet) or as
    ``queries/run/collection/qrels`` paths. Unknown options are a :class:`ConfigError` naming them.
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
    params = inspect.signature(f).parameters
    names = list(params)
    bad = sorted(k for k in opts if k not in params or names.index(k) < len(args))
    if bad:
        allowed = [n for n in names[len(args):] if n != "out_dir"]
        raise ConfigError(f"unknown option(s) for analysis {kind!r}: {', '.join(bad)} (known: {', '.join(allowed)})")
    if "out_dir" in opts:
        raise ConfigError("give out_dir as the third argument of run_analysis, not as an option")
    return f(*args, out_dir=out_dir, **opts)
