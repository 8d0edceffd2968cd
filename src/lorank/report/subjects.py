"""What an ablation or analysis step dissects, in words for the report: one of the study's own runs, or an external
adapter (``adapters:`` in the spec) named with its folder, training data and step from its metadata."""
from __future__ import annotations

import html
from typing import Any, Iterable

from lorank.study.external import ExternalAdapter, PendingAdapter


def subject_text(plan: Any, run_id: str) -> str:
    """'run <run_id>' or 'adapter <name> (<folder>, <model>, trained on <data>, step N)'."""
    if run_id.startswith("adapter:"):
        name = run_id.split(":", 1)[1]
        ext = getattr(plan, "adapters", {}).get(name) or getattr(plan, "pending_adapters", {}).get(name)
        if isinstance(ext, (ExternalAdapter, PendingAdapter)):
            return ext.describe()
    return f"run {run_id}"


def dissects_note(plan: Any, run_ids: Iterable[str]) -> str:
    """An HTML sentence naming every adapter a section dissects ('' when none)."""
    names = [subject_text(plan, r) for r in dict.fromkeys(run_ids)]
    if not names:
        return ""
    return " <b>Dissects</b>: " + "; ".join(html.escape(n) for n in names) + "."
