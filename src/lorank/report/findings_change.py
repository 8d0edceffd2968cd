"""What changed between two studies of the same five findings (e.g. the single-seed CPU study and its seeded re-run
under the protocol): each finding's verdict in both, what each was decided on, and every difference in how it was
decided (the set and its role, seeds, protocol violations, margin, correction family, the dev verdict), from the
two ``findings.json`` files only: the README's ``lorank:findings-change OLD,NEW`` block
(:mod:`lorank.report.markdown_blocks`) is this table, never typed.

Python: :func:`findings_change` (the rows) and :func:`findings_change_markdown` (the table)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lorank.errors import ConfigError
from lorank.layout.study import FINDINGS_FILE


def read_findings(study: Path) -> list[dict[str, Any]]:
    """A study folder's findings.json (an error naming the file and the fix when it is missing or not findings)."""
    f = Path(study) / FINDINGS_FILE
    if not f.is_file():
        raise ConfigError(f"{f} does not exist: run `lorank findings {study}` first")
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{f}: not JSON ({e.msg}, line {e.lineno})") from e
    if not isinstance(data, list) or not all(isinstance(x, dict) and "finding" in x for x in data):
        raise ConfigError(f"{f}: not a findings file (a list of findings, each with its 'finding' number)")
    return data


def _decided_on(f: dict[str, Any]) -> str:
    """The view the verdict was decided on: 'test dl22', or 'dev dl19+dl20 (no test set)'."""
    sets = "+".join(f.get("sets") or []) or "?"
    role = f.get("role") or "dev"
    return f"{role} {sets}" + (" (no test set)" if role == "dev" else "")


def _dev_verdict(f: dict[str, Any]) -> str:
    return f.get("verdict_dev") or (f.get("dev") or {}).get("verdict") or "-"


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Each way the two verdicts were decided differently, in words (nothing when they were decided alike)."""
    out = []
    if _decided_on(a) != _decided_on(b):
        out.append(f"decided on {_decided_on(a)} -> {_decided_on(b)}")
    if a.get("n_seeds") != b.get("n_seeds"):
        out.append(f"seeds {a.get('n_seeds') or '-'} -> {b.get('n_seeds') or '-'}")
    va, vb = len(a.get("protocol_violations") or []), len(b.get("protocol_violations") or [])
    if va != vb:
        out.append(f"protocol violations {va} -> {vb}")
    if a.get("declared_margin") != b.get("declared_margin"):
        out.append(f"margin {a.get('declared_margin')} -> {b.get('declared_margin')}")
    if (a.get("correction"), a.get("family_size")) != (b.get("correction"), b.get("family_size")):
        out.append(f"correction {a.get('correction')} over {a.get('family_size')} -> {b.get('correction')} over "
                   f"{b.get('family_size')} tests")
    if _dev_verdict(a) != _dev_verdict(b):
        out.append(f"on dev: {_dev_verdict(a)} -> {_dev_verdict(b)}")
    return out


def findings_change(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per finding of either study: both verdicts, what each was decided on and the differences."""
    a, b = {f["finding"]: f for f in before}, {f["finding"]: f for f in after}
    rows = []
    for n in sorted(set(a) | set(b)):
        fa, fb = a.get(n), b.get(n)
        row: dict[str, Any] = {"finding": n, "claim": (fb or fa or {}).get("claim", "")}
        for side, f in (("before", fa), ("after", fb)):
            row[side] = None if f is None else {"verdict": f["verdict"], "decided_on": _decided_on(f),
                                                "n_seeds": f.get("n_seeds"), "dev": _dev_verdict(f)}
        row["changed"] = None if fa is None or fb is None else fa["verdict"] != fb["verdict"]
        row["differences"] = [] if fa is None or fb is None else _differences(fa, fb)
        rows.append(row)
    return rows


def findings_change_markdown(rows: list[dict[str, Any]], names: tuple[str, str]) -> str:
    """The rows of :func:`findings_change` as a Markdown table, the two studies named in its header."""
    def cell(side: dict[str, Any] | None) -> str:
        if side is None:
            return "not tested"
        seeds = f"; {side['n_seeds']} seed{'s' if side['n_seeds'] != 1 else ''}" if side.get("n_seeds") else ""
        return f"**{side['verdict']}** ({side['decided_on']}{seeds}; on dev: {side['dev']})"

    lines = [f"| # | the paper's claim | {names[0]} | {names[1]} | what differs |", "|---|---|---|---|---|"]
    for r in rows:
        held = ("-" if r["changed"] is None else "verdict changed" if r["changed"] else "verdict held")
        diff = "; ".join([held, *r["differences"]])
        cells = [str(r["finding"]), r["claim"], cell(r["before"]), cell(r["after"]), diff]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"
