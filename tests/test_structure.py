"""The package's shape, beyond the absence of import cycles (``test_import_graph.py``): every lorank -> lorank
import points down a declared order of stages (or stays within its own stage), and no function in ``src/lorank``
is longer than 80 lines except the few listed here with a reason.

The stages are data, written below from the bottom up; a module's stage is that of its top-level name under
``lorank`` (``lorank.train.run`` is in ``train``). Every import counts, at module level or inside a function.
docs/architecture.md draws the same order."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "lorank"

#: bottom first; a module may import its own stage or a lower one, never a higher one
STAGES: list[tuple[str, ...]] = [
    # shared low modules: errors, atomic writes, the one precision decision, progress lines, pyplot + the PNG save,
    # chunking, the allocator, typed-YAML machinery, the on-disk layout of runs/checkpoints/adapters/studies
    ("lorank", "errors", "atomic", "safety", "precision", "progress", "plotting", "batching", "allocator", "config",
     "layout"),
    ("data",),  # readers, named evaluation sets, roles
    ("evaluation",),  # metrics, significance, TREC I/O: they evaluate runs, which are data
    ("retrieve",),  # BM25 / dense first stage (writes its run through evaluation's TREC I/O)
    ("models", "lora", "adapters"),  # architecture map, loading, the LoRA internals, safe adapter loading
    ("teacher",),  # the bi-encoder teacher (a model source)
    ("mine",),  # hard negatives: BM25 window, teacher filter
    ("inference", "reranker", "subject"),  # the scoring engine, the Reranker API, the dissected subject
    ("train",),  # training, and scoring its checkpoints through inference/
    ("export", "model_card", "after_training"),  # an exported adapter, its figures and Hub card; a finished run reviewed
    ("ablate", "features"),  # dissection: masks over LoRA deltas; latent features
    ("ltr",),  # LambdaMART on the feature tables
    ("analyze",),  # weights, similarity, probes (over ablate's sites), patching; run_analysis dispatches to ltr
    ("study",),  # the grid, plan, executor and worker drive every stage above
    ("report",),  # reads a study
    ("cli", "demo", "integrations"),  # the edges: the typer CLI, the demo, bridges to other tools
]

#: (importer, imported) pairs that climb, each with the reason it is still there
UPWARD_EXCEPTIONS: dict[tuple[str, str], str] = {
    # none: the last one (study -> report, run_study building the report) went when `lorank study` and the demo
    # began to call build_report themselves (issue 42)
}

#: functions over MAX_LINES, each with the reason it is not split (yet)
LONG_FUNCTIONS: dict[str, str] = {
    # none: the last four (ltr.run:ltr, ablate.engine:score_configs, analyze.probes:probe, study.executor:execute)
    # were split into their steps (issue 42)
}
MAX_LINES = 80


def _modules() -> dict[str, Path]:
    mods = {}
    for p in SRC.rglob("*.py"):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return mods


def lorank_imports() -> list[tuple[str, str, int]]:
    """(importer, imported module, line) for every lorank import in src/lorank, top-level or in a function."""
    mods = _modules()
    out = []
    for name, path in sorted(mods.items()):
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                out += [(name, a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "lorank"]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] == "lorank":
                    out += [(name, f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target, node.lineno)
                            for a in node.names]
    return out


def stage_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "lorank"
    for i, names in enumerate(STAGES):
        if top in names:
            return i
    raise AssertionError(f"{module}: its top-level name {top!r} is in no stage of STAGES; add it")


def _excepted(importer: str, imported: str) -> bool:
    return any((importer == a or importer.startswith(a + ".")) and (imported == b or imported.startswith(b + "."))
               for a, b in UPWARD_EXCEPTIONS)


def test_every_lorank_import_points_down_the_stages():
    imports = lorank_imports()
    assert len(imports) > 500  # the walk found the package
    upward = sorted({f"{a}:{line} imports {b} ({STAGES[stage_of(b)][0]} is above {STAGES[stage_of(a)][0]})"
                     for a, b, line in imports if stage_of(b) > stage_of(a) and not _excepted(a, b)})
    assert not upward, "imports that climb the stages:\n  " + "\n  ".join(upward)


def test_the_upward_exceptions_are_still_needed():
    imports = lorank_imports()
    stale = [pair for pair in UPWARD_EXCEPTIONS if not any(_excepted(a, b) and (a, b) for a, b, _ in imports
                                                           if a.startswith(pair[0]) and b.startswith(pair[1]))]
    assert not stale, f"listed upward imports that no longer exist: drop them from UPWARD_EXCEPTIONS: {stale}"


def test_every_package_has_a_stage():
    for name in _modules():
        stage_of(name)


def long_functions() -> dict[str, int]:
    """module:qualified function name -> lines (def line to last line, decorators not counted), over MAX_LINES."""
    out = {}
    for name, path in _modules().items():
        def visit(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    qual = f"{prefix}{child.name}"
                    if child.end_lineno - child.lineno + 1 > MAX_LINES:
                        out[f"{name}:{qual}"] = child.end_lineno - child.lineno + 1
                    visit(child, qual + ".")
                elif isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}{child.name}.")
                else:
                    visit(child, prefix)
        visit(ast.parse(path.read_text(encoding="utf-8")), "")
    return out


def test_no_function_over_80_lines_except_the_listed():
    found = long_functions()
    unlisted = {k: v for k, v in found.items() if k not in LONG_FUNCTIONS}
    assert not unlisted, f"functions over {MAX_LINES} lines (split them, or list them with a reason): {unlisted}"
    stale = sorted(k for k in LONG_FUNCTIONS if k not in found)
    assert not stale, f"listed long functions that are now short or gone: drop them from LONG_FUNCTIONS: {stale}"


def test_the_stage_check_catches_a_planted_climb():
    assert stage_of("lorank.study.plan") > stage_of("lorank.train.run") > stage_of("lorank.data.trec")
    assert stage_of("lorank.report.page") > stage_of("lorank.study")
    assert not _excepted("lorank.train.run", "lorank.report.page")
