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


def test_several_adapters_share_one_table_each_row_named(tmp_path):
    """``lorank:adapters-table A,B``: each adapter's rows as its own table gives them, behind a column naming it."""
    from pathlib import Path

    from lorank.export import metrics_table

    shipped = Path(__file__).resolve().parents[2] / "adapters" / "smollm2-135m-msmarco12k-r8"
    other = tmp_path / "adapters" / "other-r8"
    other.mkdir(parents=True)
    metrics = {"evaluations": [{"eval_set": "dl19", "role": "dev", "ndcg_cut_10": 0.5, "recip_rank_10": 0.6}]}
    (other / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "adapters" / "smollm2-135m-msmarco12k-r8").symlink_to(shipped)
    text = ("<!-- lorank:adapters-table adapters/smollm2-135m-msmarco12k-r8,adapters/other-r8 -->\nx\n"
            "<!-- /lorank:adapters-table -->\n")
    out = render_blocks(text, tmp_path).splitlines()
    assert out[1].startswith("| reranker | set | role | first stage | nDCG@10 |") and out[2].count("|---") == 11
    own = metrics_table(json.loads((shipped / "metrics.json").read_text())).splitlines()[2:]
    mine = [ln for ln in out if ln.startswith("| `smollm2-135m-msmarco12k-r8` |")]
    assert [ln.replace("| `smollm2-135m-msmarco12k-r8` ", "", 1) for ln in mine] == own and len(own) == 4
    assert [ln for ln in out if ln.startswith("| `other-r8` |")] == [
        "| `other-r8` | dl19 | dev | bm25 | **0.500** | - | - | - | 0.600 | - | - |"]
    with pytest.raises(ConfigError, match=r"missing/metrics\.json does not exist: not an exported adapter"):
        render_blocks(text.replace("adapters/other-r8", "adapters/missing"), tmp_path)
