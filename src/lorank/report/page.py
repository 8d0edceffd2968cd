"""The report page: its :class:`Section` blocks, the cell formatting every section shares, and the two
renderings (``tables.md`` and the self-contained ``index.html``).

Every section module (:mod:`lorank.report.trained_sections`, :mod:`lorank.report.dissection_sections`,
:mod:`lorank.report.ltr_section`, :mod:`lorank.report.findings_section`) builds ``Section`` objects from this
module; :mod:`lorank.report.build` puts them in order and renders them. Nothing here reads a study.
"""
from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SIG = "†"  # marks a value significantly different from the reference (p < 0.05, Holm)


@dataclass
class Section:
    title: str
    text: str = ""
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)  # caption, header, rows
    images: list[tuple[str, Path]] = field(default_factory=list)  # caption, png
    raw_html: str = ""


def fmt(v: Any, nd: int = 4) -> str:
    """A table cell: ``-`` for a missing value or NaN, floats to ``nd`` decimals, anything else as text."""
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def safe_name(s: str) -> str:
    """A file-name-safe form of a run id, sweep or step id (for the PNGs copied into ``report/``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(s))[:120]


def read_json(p: Path) -> dict[str, Any]:
    """A JSON object from a file, or ``{}`` when it does not exist or is not JSON (a step not run yet)."""
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def render_markdown(name: str, sections: list[Section]) -> str:
    """``tables.md``: every section's text (tags stripped), tables and image links."""
    lines = [f"# {name}: tables", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        if s.text:
            lines += [re.sub(r"<[^>]+>", "", s.text), ""]
        for cap, head, rows in s.tables:
            lines += [f"**{cap}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
            lines.append("")
        for cap, png in s.images:
            lines += [f"![{cap}]({png.name})", ""]
    return "\n".join(lines) + "\n"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1150px;color:#222;
padding:0 1rem;line-height:1.45} h1{margin-bottom:.2rem} h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;
margin-top:2.2rem} table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.9rem} caption{text-align:left;
font-weight:600;padding:.3rem 0;max-width:1100px} th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child,.txt{text-align:left} figure{margin:.5rem 0 1.5rem}
figure img{max-width:100%;border:1px solid #eee} figcaption{color:#555;font-size:.9rem} .bad{color:#b00020}
.muted{color:#777} pre{background:#f7f7f7;padding:.6rem;overflow:auto;font-size:.8rem} nav a{margin-right:.8rem}
"""


_NUMBER = re.compile(r"^[-+]?(\d[\d,]*\.?\d*|\.\d+)(e[-+]?\d+)?%?\s*[" + SIG + r"*]*$", re.IGNORECASE)


def numeric_column(cells: list[str]) -> bool:
    """Whether a table column holds numbers (right-aligned) rather than text (left-aligned): every cell is a
    number (``0.541``, ``3e-09``, ``98%``, ``0.420†``) or ``-``, and at least one is a number."""
    filled = [c.strip() for c in cells if c.strip() not in ("", "-")]
    return bool(filled) and all(_NUMBER.match(c) for c in filled)


def render_html(name: str, sections: list[Section]) -> str:
    """``index.html``: one page, images embedded as data URIs (and linked to the PNG beside it)."""
    def anchor(t: str) -> str:
        return "".join(c.lower() if c.isalnum() else "-" for c in t)

    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(name)} — lorank "
             f"report</title><style>{CSS}</style></head><body><h1>{html.escape(name)}</h1>",
             "<nav>" + "".join(f"<a href='#{anchor(s.title)}'>{html.escape(s.title)}</a>" for s in sections) + "</nav>"]
    for s in sections:
        parts.append(f"<section id='{anchor(s.title)}'><h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<p>{s.text}</p>")
        for cap, head, rows in s.tables:
            cls = ["" if i == 0 or numeric_column([r[i] for r in rows if i < len(r)]) else " class='txt'"
                   for i in range(len(head))]  # the first column is left-aligned by the style already
            parts.append(f"<table><caption>{html.escape(cap)}</caption><tr>"
                         + "".join(f"<th{cls[i]}>{html.escape(h)}</th>" for i, h in enumerate(head)) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td{cls[i] if i < len(cls) else ''}>{html.escape(c)}</td>"
                                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
                         + "</table>")
        for cap, png in s.images:
            data = base64.b64encode(png.read_bytes()).decode()
            parts.append(f"<figure><img alt='{html.escape(cap)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(cap)} (<a href='{html.escape(png.name)}'>{html.escape(png.name)}"
                         "</a>)</figcaption></figure>")
        parts.append(s.raw_html + "</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
