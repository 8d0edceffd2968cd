"""Generated blocks inside hand-written Markdown (the README): a table that a committed file produces sits between
two markers, and is rewritten from that file, never typed.

```
<!-- lorank:findings results/study_smollm2_cpu -->
| # | the paper's claim | ...       (lorank.report.findings.findings_markdown of that folder's findings.json)
<!-- /lorank:findings -->
<!-- lorank:adapter-table adapters/smollm2-135m-msmarco12k-r8 -->
| set | role | ...                    (lorank.export.metrics_table of that adapter's metrics.json)
<!-- /lorank:adapter-table -->
```

:func:`render_blocks` rewrites every block of a text from its source (``lorank readme README.md``); the README test
fails when the committed text differs from what its sources give."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

from lorank.atomic import atomic_write_text
from lorank.errors import ConfigError
from lorank.export import metrics_table
from lorank.layout.adapter import export_metrics_file
from lorank.report.findings import findings_markdown

_BLOCK = re.compile(r"(<!-- lorank:(?P<kind>[a-z-]+) (?P<key>\S+) -->\n)(?P<body>.*?)(<!-- /lorank:(?P=kind) -->)", re.S)


def findings_block(source: Path) -> str:
    f = source / "findings.json"
    if not f.is_file():
        raise ConfigError(f"{f} does not exist: run `lorank findings {source}` first")
    return findings_markdown(json.loads(f.read_text(encoding="utf-8")), compact=True)


def adapter_block(source: Path) -> str:
    f = export_metrics_file(source)
    if not f.is_file():
        raise ConfigError(f"{f} does not exist: not an exported adapter")
    return metrics_table(json.loads(f.read_text(encoding="utf-8"))) + "\n"


RENDERERS: dict[str, Callable[[Path], str]] = {"findings": findings_block, "adapter-table": adapter_block}


def render_blocks(text: str, root: Path, only: tuple[str, str] | None = None) -> str:
    """`text` with every generated block (or only the block ``(kind, key)``) rewritten from its source; a source
    path is relative to `root` (the folder of the Markdown file's repository)."""
    def sub(m: re.Match) -> str:
        kind, key = m["kind"], m["key"]
        if only is not None and (kind, key) != only:
            return m[0]
        if kind not in RENDERERS:
            raise ConfigError(f"unknown generated block 'lorank:{kind}' (known: {', '.join(RENDERERS)})")
        return m[1] + RENDERERS[kind](root / key) + m[5]

    return _BLOCK.sub(sub, text)


def blocks(text: str) -> list[tuple[str, str]]:
    """(kind, source) of every generated block of `text`."""
    return [(m["kind"], m["key"]) for m in _BLOCK.finditer(text)]


def update_file(path: str | Path, root: str | Path | None = None, only: tuple[str, str] | None = None) -> list[tuple[str, str]]:
    """Rewrite the generated blocks of the Markdown file `path` in place (atomically); returns the blocks found."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    found = blocks(text)
    new = render_blocks(text, Path(root) if root is not None else path.resolve().parent, only)
    if new != text:
        atomic_write_text(path, new)
    return found
