"""lorank.layout sits below every stage: it imports lorank's bottom modules only (lorank.atomic, lorank.errors and
itself), so train, adapters, export, study and report can all name the run layout through it."""
from __future__ import annotations

from tests.test_import_graph import import_graph

ALLOWED = {"lorank.atomic", "lorank.errors"}


def test_layout_imports_no_stage_package():
    graph = import_graph()
    layout = {m: deps for m, deps in graph.items() if m == "lorank.layout" or m.startswith("lorank.layout.")}
    assert "lorank.layout.checkpoints" in layout and "lorank.layout.snapshot" in layout
    bad = {m: sorted(d for d in deps if d not in ALLOWED and not d.startswith("lorank.layout"))
           for m, deps in layout.items()}
    assert not any(bad.values()), f"lorank.layout imports a stage package: {bad}"


def test_one_home_and_no_arrow_from_adapters_up_to_train():
    """The checkpoint and snapshot modules of train/ and study/ are gone (one home: lorank.layout), and adapters.py,
    which train imports, imports nothing of train."""
    graph = import_graph()
    assert not {"lorank.train.checkpoints", "lorank.train.snapshot", "lorank.study.snapshot"} & set(graph)
    assert not [d for d in graph["lorank.adapters"] if d.startswith("lorank.train")]
