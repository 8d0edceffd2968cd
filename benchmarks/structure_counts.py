"""Measure the structure figures of issue 42 on a checkout: ``python benchmarks/structure_counts.py PATH`` (JSON on stdout).

Counted over ``PATH/src/lorank/**/*.py`` with Python's ``ast`` (code, not comments, except where said):
- run layout: files whose text names ``runs_trec``, ``"config.json"`` (the quoted string), the checkpoint
  completeness marker (the file name ``lorank_checkpoint.json`` or the constant ``COMPLETE_MARKER``/``COMPLETE``)
  and ``adapter_config.json`` (text search, so a docstring that names the file counts too);
- LoRA internals: files whose text names ``lora_A`` or ``lora_B``;
- dissection verbs: the parameters (positional, keyword-only, ``*args``/``**kwargs`` each one) of the longest
  definition named ``probe``, ``patch``, ``extract_features`` and ``ablate`` (the implementation, not a facade);
- imports inside functions: ``import`` / ``from ... import`` statements nested in a function, those of lorank
  modules (absolute ``lorank...`` or relative) and all of them, against all import statements;
- PNG saving: calls of ``savefig`` (each call site, and the files that hold one);
- long functions: functions and methods (nested ones too) whose ``def`` line to last line spans over 80 lines.
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

LAYOUT_NAMES = {"runs_trec": re.compile(r"runs_trec"), '"config.json"': re.compile(r"[\"']config\.json[\"']"),
                "COMPLETE marker": re.compile(r"lorank_checkpoint\.json|\bCOMPLETE(_MARKER)?\b"),
                "adapter_config.json": re.compile(r"adapter_config\.json")}
VERBS = ("probe", "patch", "extract_features", "ablate")
MAX_LINES = 80


def _files(root: Path) -> list[Path]:
    return sorted((root / "src" / "lorank").rglob("*.py"))


def _n_params(f: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = f.args
    return len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)


def _in_function_imports(tree: ast.AST) -> list[tuple[ast.AST, bool]]:
    """(import node, inside a function) for every import statement."""
    out: list[tuple[ast.AST, bool]] = []

    def visit(node: ast.AST, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.append((child, inside))
            visit(child, inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
    visit(tree, False)
    return out


def _is_lorank(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return bool(node.level) or (node.module or "").split(".")[0] == "lorank"
    return any(a.name.split(".")[0] == "lorank" for a in node.names)  # type: ignore[attr-defined]


def counts(root: Path) -> dict:
    root = Path(root)
    layout = {k: [] for k in LAYOUT_NAMES}
    lora_files, savefig_calls, savefig_files, long_funcs = [], 0, [], {}
    verbs: dict[str, dict] = {}
    imports = {"all": 0, "in_functions": 0, "lorank": 0, "lorank_in_functions": 0}
    for path in _files(root):
        rel = str(path.relative_to(root))
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        for name, pattern in LAYOUT_NAMES.items():
            if pattern.search(text):
                layout[name].append(rel)
        if "lora_A" in text or "lora_B" in text:
            lora_files.append(rel)
        calls = sum(1 for n in ast.walk(tree) if isinstance(n, ast.Call) and (
            getattr(n.func, "attr", None) == "savefig" or getattr(n.func, "id", None) == "savefig"))
        if calls:
            savefig_calls += calls
            savefig_files.append(rel)
        for node, inside in _in_function_imports(tree):
            lor = _is_lorank(node)
            imports["all"] += 1
            imports["in_functions"] += inside
            imports["lorank"] += lor
            imports["lorank_in_functions"] += inside and lor
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                span = n.end_lineno - n.lineno + 1
                if span > MAX_LINES:
                    long_funcs[f"{rel}:{n.name}"] = span
                if n.name in VERBS and _n_params(n) > verbs.get(n.name, {}).get("params", -1):
                    verbs[n.name] = {"params": _n_params(n), "where": rel}
    return {
        "run_layout_files": {k: {"files": len(v), "which": v} for k, v in layout.items()},
        "lora_A_lora_B_files": {"files": len(lora_files), "which": lora_files},
        "dissection_verb_params": {v: verbs.get(v) for v in VERBS},
        "import_statements": imports,
        "png_saving": {"savefig_calls": savefig_calls, "files": savefig_files},
        "functions_over_80_lines": dict(sorted(long_funcs.items(), key=lambda kv: -kv[1])),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkout", type=Path)
    args = ap.parse_args(argv)
    try:
        commit = subprocess.run(["git", "-C", str(args.checkout), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    json.dump({"commit": commit, **counts(args.checkout)}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
