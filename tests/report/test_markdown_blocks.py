"""Generated Markdown blocks: `lorank findings DIR --md FILE` rewrites only its own block of FILE, `lorank readme`
every block, and a block whose source is missing or of an unknown kind is a clear error."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lorank.cli import app
from lorank.errors import ConfigError
from lorank.report.markdown_blocks import blocks, render_blocks, update_file
from tests.report.test_verdicts import REF, rank_study


def _study_dir(tmp_path, name="study"):
    """A folder holding a findings.json (as `lorank findings` writes it) from a synthetic study."""
    from lorank.report.findings import evaluate_findings

    df, pq = rank_study(60)
    d = tmp_path / name
    d.mkdir()
    (d / "findings.json").write_text(json.dumps(evaluate_findings(df, pq, REF)))
    return d


def test_a_block_is_rewritten_from_its_source_and_the_rest_of_the_text_is_kept(tmp_path):
    _study_dir(tmp_path)
    md = tmp_path / "README.md"
    md.write_text("# Title\n\nhand-written 0.123\n\n<!-- lorank:findings study -->\nstale | table\n"
                  "<!-- /lorank:findings -->\n\nafter\n")
    assert update_file(md) == [("findings", "study")]
    text = md.read_text()
    assert text.startswith("# Title\n\nhand-written 0.123\n\n<!-- lorank:findings study -->\n| # |")
    assert "stale" not in text and text.endswith("<!-- /lorank:findings -->\n\nafter\n")
    assert "| 2 | LoRA ranks 1, 2, 8 and 32" in text and "**inconclusive** (no test set)" in text
    assert render_blocks(text, tmp_path) == text  # idempotent


def test_findings_md_rewrites_only_its_own_block(tmp_path):
    a = _study_dir(tmp_path, "a")
    _study_dir(tmp_path, "b")
    md = tmp_path / "README.md"
    md.write_text("<!-- lorank:findings a -->\nold a\n<!-- /lorank:findings -->\n"
                  "<!-- lorank:findings b -->\nold b\n<!-- /lorank:findings -->\n")
    from lorank.report.findings_section import _write_markdown

    _write_markdown(md, a, "unused")
    text = md.read_text()
    assert "old a" not in text and "old b" in text and blocks(text) == [("findings", "a"), ("findings", "b")]


def test_bad_blocks_are_clear_errors(tmp_path):
    md = tmp_path / "README.md"
    md.write_text("<!-- lorank:findings missing -->\n<!-- /lorank:findings -->\n")
    with pytest.raises(ConfigError, match="findings.json does not exist"):
        update_file(md)
    md.write_text("<!-- lorank:weather today -->\n<!-- /lorank:weather -->\n")
    with pytest.raises(ConfigError, match="unknown generated block 'lorank:weather'"):
        update_file(md)
    res = CliRunner().invoke(app, ["readme", str(md)])
    assert res.exit_code != 0 and "unknown generated block" in res.output and "Traceback" not in res.output
