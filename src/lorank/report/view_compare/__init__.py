"""The seed papers' views set against the trained adapters (issue 44): AdaLoRA's rank allocation against the dissected
adapter's ablation importance, DyLoRA's rank curve against the grid's separately trained ranks and a plain LoRA's
rank truncation, ICR's per-layer profile against the adapter's layer importance on a normalised depth axis
(``lorank analyze compare-views adalora | dylora | icr``; Python: :func:`compare_adalora`, :func:`compare_dylora`,
:func:`compare_icr`). Each writes a JSON with every point and its source, and a PNG.

Where each part lives: :mod:`lorank.report.view_compare.common` holds what the three views share (a study read per
query: :func:`read_study`; Spearman's rho with its query-bootstrap CI: :func:`correlate`; the per-layer and per-window
correlations on the depth axis: :func:`layer_depth`, :func:`loo_correlation`, :func:`window_correlation`; the JSON +
PNG writer), and each view has its own module: :mod:`~lorank.report.view_compare.adalora`,
:mod:`~lorank.report.view_compare.dylora`, :mod:`~lorank.report.view_compare.icr`. Their public names are
re-exported here.

It sits in ``report/`` because it reads a finished study (its plan, its ablations' TREC runs, its checkpoints' runs)
through :mod:`lorank.report.families`' readers.

What is random, and what the CIs resample. The importance side comes from per-query values: the nDCG@10 of each
query under each ablation configuration (``ablations/<subject>/<i>/runs/<sweep>/<config>.run``), pooled over the
chosen role's sets (queries keyed ``set:qid``). A correlation's 95% CI is a percentile bootstrap over those queries:
each draw resamples the queries (one draw for every configuration: paired), recomputes every unit's importance from
the resampled means, then Spearman's rho against the view's side (a percentile interval; since each resample adds
the queries' noise to the importances once more, it leans toward 0, and a point estimate near +-1, e.g. a view that
orders the units exactly as the observed importances do, can lie above it). An AdaLoRA allocation (one trained
adapter) is one fixed object and is held fixed; an ICR profile's per-layer nDCG@10 is resampled with the same query
draw (paired by set:qid) when the profile keeps per-query values (queries on one side only are left out of both and
counted), and held fixed when it does not (an older profile; the JSON says which). Units (layers,
windows, projections) are not independent draws (neighbouring layers share their inputs), so the rho's own p-value
is not reported as a test; the query bootstrap is the interval. ``n_units`` is the number of units correlated.

Layer l of an n-layer model sits at depth (l + 0.5) / n on the normalised axis (0: the input, 1: the output); a
window L{lo}-{hi} at :func:`lorank.report.families.depth`'s centre."""
from __future__ import annotations

from lorank.report.view_compare.adalora import adalora_correlations, compare_adalora
from lorank.report.view_compare.common import (Resampled, StudyView, correlate, layer_depth, loo_correlation,
                                               loo_layers, read_study, sweep_of, window_correlation)
from lorank.report.view_compare.dylora import compare_dylora, dylora_points, grid_points, truncation_points
from lorank.report.view_compare.icr import compare_icr, icr_pair, icr_per_query

__all__ = ["Resampled", "StudyView", "adalora_correlations", "compare_adalora", "compare_dylora", "compare_icr",
           "correlate", "dylora_points", "grid_points", "icr_pair", "icr_per_query", "layer_depth", "loo_correlation",
           "loo_layers", "read_study", "sweep_of", "truncation_points", "window_correlation"]
