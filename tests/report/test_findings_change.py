"""Two studies of the same findings side by side (lorank.report.findings_change, the README's
``lorank:findings-change`` block): verdicts, what each was decided on, what differs; bad input named."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorank.errors import ConfigError
from lorank.report.findings_change import findings_change, findings_change_markdown
from lorank.report.markdown_blocks import render_blocks

ROOT = Path(__file__).resolve().parents[2]


def _finding(n: int, verdict: str, role: str, sets: list[str], seeds: int, dev: str, violations: int = 0,
             family: int = 10) -> dict:
    return {"finding": n, "claim": f"claim {n}", "verdict": verdict, "role": role, "sets": sets, "n_seeds": seeds,
            "verdict_dev": dev, "protocol_violations": ["v"] * violations, "declared_margin": 0.02,
            "correction": "holm", "family_size": family}


def _study(root: Path, name: str, findings: list[dict]) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "findings.json").write_text(json.dumps(findings))
    return d


def test_each_difference_in_how_a_verdict_was_decided_is_named():
    before = [_finding(1, "inconclusive", "dev", ["dl19", "dl20"], 1, "holds", violations=3, family=33),
              _finding(2, "holds", "test", ["dl22"], 3, "holds")]
    after = [_finding(1, "holds", "test", ["dl22"], 3, "holds", family=40),
             _finding(2, "holds", "test", ["dl22"], 3, "does not hold"),
             _finding(3, "inconclusive", "test", ["dl22"], 3, "inconclusive")]
    rows = findings_change(before, after)
    assert [r["finding"] for r in rows] == [1, 2, 3]
    r1, r2, r3 = rows
    assert r1["changed"] is True and r1["differences"] == [
        "decided on dev dl19+dl20 (no test set) -> test dl22", "seeds 1 -> 3", "protocol violations 3 -> 0",
        "correction holm over 33 -> holm over 40 tests"]
    assert r2["changed"] is False and r2["differences"] == ["on dev: holds -> does not hold"]
    assert r3["before"] is None and r3["changed"] is None
    md = findings_change_markdown(rows, ("old", "new"))
    lines = md.splitlines()
    assert lines[0] == "| # | the paper's claim | old | new | what differs |" and len(lines) == 5
    assert "| **inconclusive** (dev dl19+dl20 (no test set); 1 seed; on dev: holds) |" in lines[2]
    assert lines[2].endswith("verdict changed; decided on dev dl19+dl20 (no test set) -> test dl22; seeds 1 -> 3; "
                             "protocol violations 3 -> 0; correction holm over 33 -> holm over 40 tests |")
    assert "| verdict held; on dev: holds -> does not hold |" in lines[3]
    assert "| not tested |" in lines[4]


def test_the_block_renders_from_two_study_folders_and_names_bad_input(tmp_path):
    _study(tmp_path, "a", [_finding(1, "holds", "test", ["dl22"], 1, "holds")])
    _study(tmp_path, "b", [_finding(1, "does not hold", "test", ["dl22"], 3, "holds")])
    text = "x\n<!-- lorank:findings-change a,b -->\nstale\n<!-- /lorank:findings-change -->\ny\n"
    out = render_blocks(text, tmp_path)
    assert "stale" not in out and "| 1 | claim 1 | **holds** (test dl22; 1 seed; on dev: holds) |" in out
    assert "verdict changed; seeds 1 -> 3" in out and out.startswith("x\n") and out.endswith("y\n")
    with pytest.raises(ConfigError, match="takes two study folders"):
        render_blocks(text.replace("a,b", "a"), tmp_path)
    with pytest.raises(ConfigError, match=r"c/findings\.json does not exist: run `lorank findings"):
        render_blocks(text.replace("a,b", "a,c"), tmp_path)
    (tmp_path / "b" / "findings.json").write_text('{"finding": 1}')
    with pytest.raises(ConfigError, match=r"b/findings\.json: not a findings file"):
        render_blocks(text, tmp_path)
    (tmp_path / "b" / "findings.json").write_text("[{")
    with pytest.raises(ConfigError, match=r"b/findings\.json: not JSON"):
        render_blocks(text, tmp_path)


def test_the_committed_study_against_itself_held_every_verdict():
    study = ROOT / "results" / "study_smollm2_cpu"
    if not (study / "findings.json").is_file():
        pytest.skip(f"{study}/findings.json is not committed here")
    rows = findings_change(*(json.loads((study / "findings.json").read_text()),) * 2)
    assert len(rows) == 5 and all(r["changed"] is False and r["differences"] == [] for r in rows)
