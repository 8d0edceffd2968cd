"""Every command in the README (and in the shell blocks of docs/*.md) runs as written.

The README's code blocks are parsed. In shell blocks, every ``lorank`` command line (``.venv/bin/lorank`` or
``lorank``) is run through the CLI in-process: as written when it is cheap (``--help``, ``--dry-run``), and
otherwise with ``--help`` appended, so that its verb and every option it names must exist (click rejects an
unknown option before it prints help); ``bash scripts/X.sh`` must name an existing script. Python blocks must
compile, and every ``lorank`` function they call must accept the arguments given (``inspect.signature.bind``),
without running the heavy ones. The command table's verbs must be verbs of the CLI, and every link to a file
must point at one."""
from __future__ import annotations

import json
import ast
import importlib
import inspect
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lorank.cli import app
from tests.shared_paths import needs_data

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    return [(m[1].strip(), m[2]) for m in re.finditer(r"(?ms)^```(\w*)\n(.*?)^```", text)]


def lorank_commands(pages: tuple[Path, ...] = (README,)) -> list[list[str]]:
    """The argument lists (after ``lorank``) of every lorank command in the shell blocks of `pages`, once each."""
    out: list[list[str]] = []
    for lang, body in [b for page in pages for b in code_blocks(page.read_text(encoding="utf-8"))]:
        if lang not in ("bash", "sh", "shell", "console"):
            continue
        for line in re.sub(r"\\\n\s*", " ", body).splitlines():  # a continued line is one command
            for part in re.split(r"&&|;", line.split("  #")[0]):
                words = shlex.split(part, comments=True)
                if words and words[0] in (".venv/bin/lorank", "lorank") and words[1:] not in out:
                    out.append(words[1:])
    return out


PAGES = (README, *sorted((ROOT / "docs").glob("*.md")))


def script_commands() -> list[str]:
    out = []
    for lang, body in code_blocks(README.read_text(encoding="utf-8")):
        if lang in ("bash", "sh"):
            out += re.findall(r"\bbash (scripts/\S+\.sh)", body)
    return out


def _cheap(args: list[str]) -> bool:
    return "--help" in args or "--dry-run" in args


def test_the_readme_has_the_commands_it_promises():
    cmds = lorank_commands()
    verbs = {c[0] for c in cmds if c}
    assert {"demo", "train", "rerank", "ablate", "study"} <= verbs, verbs
    assert sum(map(_cheap, cmds)) >= 2
    assert set(script_commands()) == {"scripts/setup.sh", "scripts/test.sh"}
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 150


@pytest.mark.parametrize("script", sorted(set(script_commands())))
def test_each_script_the_readme_names_exists(script):
    assert (ROOT / script).is_file(), script


@pytest.mark.parametrize("args", [c for c in lorank_commands(PAGES) if not _cheap(c)], ids=" ".join)
def test_each_readme_command_parses_as_written(args):
    res = CliRunner().invoke(app, [*args, "--help"])
    assert res.exit_code == 0, f"lorank {' '.join(args)}: {res.output}"
    assert "Usage:" in res.output


@needs_data
@pytest.mark.parametrize("args", [c for c in lorank_commands(PAGES) if _cheap(c)], ids=" ".join)
def test_each_cheap_readme_command_runs_as_written(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # presets are found by name; nothing is written into the repository
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, f"lorank {' '.join(args)}: {res.output}"


def _resolve(node: ast.AST, names: dict[str, object]) -> object | None:
    """The lorank object a call's function expression names (``lorank.x.y``, or a name imported from lorank)."""
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, names)
        if base is not None:
            return getattr(base, node.attr)
    return None


def test_the_readme_python_calls_lorank_as_its_functions_accept():
    # the README's quick start from Python lives in docs/python.md (linked from the README)
    assert "docs/python.md" in README.read_text(encoding="utf-8")
    blocks = [body for page in (README, ROOT / "docs" / "python.md")
              for lang, body in code_blocks(page.read_text(encoding="utf-8")) if lang == "python"]
    assert blocks
    checked = 0
    for body in blocks:
        tree = ast.parse(body)
        names: dict[str, object] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "lorank":
                        names[a.asname or a.name.split(".")[0]] = importlib.import_module(a.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "lorank":
                mod = importlib.import_module(node.module)
                for a in node.names:
                    names[a.asname or a.name] = getattr(mod, a.name)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            fn = _resolve(node.func, names)
            if fn is None:
                continue
            target = fn.__call__ if inspect.ismodule(fn) else fn  # lorank.train / lorank.ablate: callable modules
            sig = inspect.signature(target)
            sig.bind(*[None] * len(node.args), **{k.arg: None for k in node.keywords})
            checked += 1
    assert checked >= 5


def test_the_command_table_names_real_verbs():
    text = README.read_text(encoding="utf-8")
    verbs = re.findall(r"(?m)^\| `lorank ([a-z-]+)", text)
    assert len(verbs) >= 15
    for v in verbs:
        res = CliRunner().invoke(app, [v, "--help"])
        assert res.exit_code == 0, f"lorank {v}: {res.output}"


def test_every_link_points_at_a_file():
    text = README.read_text(encoding="utf-8")
    links = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if not t.startswith("http")]
    assert any(t.startswith("docs/") for t in links)
    for t in links:
        assert (ROOT / t).exists(), t
    for page in (ROOT / "docs").glob("*.md"):
        for t in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if not t.startswith("http") and not t.startswith("#"):
                assert (page.parent / t.split("#")[0]).exists(), f"{page.name}: {t}"
        assert page.read_text(encoding="utf-8").split("\n\n")[1].startswith("What this page is for"), page.name


def test_the_readme_tables_are_generated_from_committed_files():
    """The findings and the reference adapters' table sit between <!-- lorank:KIND SOURCE --> markers and are what
    `lorank readme README.md` writes from findings.json / metrics.json: no figure in them is typed by hand."""
    from lorank.report.markdown_blocks import blocks, render_blocks

    text = README.read_text(encoding="utf-8")
    found = blocks(text)
    assert ("findings", "results/study_smollm2_cpu") in found
    shipped = ("adapters/smollm2-135m-msmarco12k-r8", "adapters/gemma3-270m-msmarco12k-r8")
    assert ("adapters-table", ",".join(shipped)) in found  # both families' reference rerankers, one table
    assert render_blocks(text, ROOT) == text, "README's generated tables differ from their files: run lorank readme"
    for adapter in shipped:
        card = ROOT / adapter / "README.md"
        text = card.read_text(encoding="utf-8")
        assert blocks(text) == [("adapter-table", ".")]
        assert render_blocks(text, card.parent) == text, f"{card}'s table differs from its metrics.json: lorank readme"


def test_the_benchmarks_readme_quotes_score_dtype_as_measured():
    """benchmarks/README.md's figures on the weights' dtype for CPU scoring are results/score_dtype.json's."""
    d = json.loads((ROOT / "results" / "score_dtype.json").read_text())
    text = " ".join((ROOT / "benchmarks" / "README.md").read_text().split())
    f, b = d["dtypes"]["fp32"], d["dtypes"]["bf16"]
    for quoted in (" and ".join(map(str, f["pairs_per_s"])) + " pairs/s",
                   "bf16 weights " + " and ".join(map(str, b["pairs_per_s"])) + f" ({d['speedup_bf16_weights']}x)",
                   f"{b['vs_in_training_evaluation']['queries_ranked_identically']} queries ranked identically",
                   f"against {f['vs_in_training_evaluation']['queries_ranked_identically']} with fp32 weights",
                   f"nDCG@10 {f['ndcg_cut_10']} against the run's {d['in_training_evaluation']['ndcg_cut_10']:.4f}"):
        assert quoted in text, quoted
    assert b["vs_in_training_evaluation"]["max_abs_diff"] == 0.0  # what made bf16 weights the default


def test_docs_speed_quotes_score_allocator_as_measured():
    """docs/speed.md's figures on the allocator for CPU scoring are results/score_allocator.json's (and
    score_dtype.json's for the rate before), and the scoring verbs re-execute with the allocator it chose."""
    from lorank.allocator import VERBS

    d = json.loads((ROOT / "results" / "score_allocator.json").read_text())
    before = json.loads((ROOT / "results" / "score_dtype.json").read_text())
    text = " ".join((ROOT / "docs" / "speed.md").read_text().split())
    m, s = d["mean_pairs_per_s_by_pass"], d["speedup_tcmalloc_by_pass"]
    pairs = {w["pairs"] for rows in d["workers"].values() for w in rows}
    assert len(pairs) == 1 and len(d["workers"]["glibc"]) == len(d["workers"]["tcmalloc"]) == d["repeats"]
    for quoted in (" and ".join(map(str, before["dtypes"]["bf16"]["pairs_per_s"])) + " pairs/s with bf16 weights",
                   f"had run at {before['in_training_evaluation']['pairs_per_s']}",
                   f"{d['repeats']} workers each, {pairs.pop():,} DL19 pairs (dev) a pass",
                   f"glibc {m['glibc'][0]} then {m['glibc'][1]} pairs/s",
                   f"tcmalloc {m['tcmalloc'][0]} then {m['tcmalloc'][1]} ({s[0]}x, {s[1]}x)"):
        assert quoted in text, quoted
    assert min(s) > 1.0 and {"rerank", "ablate"} <= set(VERBS)  # what made the scoring verbs re-execute
