"""Generated blocks inside hand-written Markdown (the README): a table that a committed file produces sits between
two markers, and is rewritten from that file, never typed.

```
<!-- lorank:findings results/study_smollm2_cpu -->
| # | the paper's claim | ...       (lorank.report.findings.findings_markdown of that folder's findings.json)
<!-- /lorank:findings -->
<!-- lorank:adapter-table adapters/smollm2-135m-msmarco12k-r8 -->
| set | role | ...                    (lorank.export.metrics_table of that adapter's metrics.json)
<!-- /lorank:adapter-table -->
<!-- lorank:demo-timing ../results/demo_timing.json -->
| precision | how | wall | ...        (demo_timing_block: lorank demo's measured times, and the AVX2 fp32 estimate)
<!-- /lorank:demo-timing -->
<!-- lorank:families results/study_smollm2_cpu,results/study_gemma3_cpu -->
| | smollm2-135m | gemma3-270m |   (lorank.report.families: the findings side by side, one column per study,
<!-- /lorank:families -->          each a model family; its sources are comma-separated)
<!-- lorank:adapters-table adapters/smollm2-135m-msmarco12k-r8,adapters/gemma3-270m-msmarco12k-r8 -->
| reranker | set | role | ...        (lorank.export.adapters_table: several adapters' tables as one)
<!-- /lorank:adapters-table -->
<!-- lorank:findings-change results/study_smollm2_cpu,results/study_smollm2_cpu_seeds -->
| # | ... | before | after | what differs |   (lorank.report.findings_change: two studies of the same findings)
<!-- /lorank:findings-change -->
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
from lorank.export import adapters_table, metrics_table
from lorank.layout.adapter import export_metrics_file
from lorank.layout.study import FINDINGS_FILE
from lorank.report.families import families_markdown, families_table, read_family
from lorank.report.findings_change import findings_change, findings_change_markdown, read_findings
from lorank.report.findings import findings_markdown

_BLOCK = re.compile(r"(<!-- lorank:(?P<kind>[a-z-]+) (?P<key>\S+) -->\n)(?P<body>.*?)(<!-- /lorank:(?P=kind) -->)", re.S)


def findings_block(source: Path) -> str:
    f = source / FINDINGS_FILE
    if not f.is_file():
        raise ConfigError(f"{f} does not exist: run `lorank findings {source}` first")
    return findings_markdown(json.loads(f.read_text(encoding="utf-8")), compact=True)


def adapter_block(source: Path) -> str:
    f = export_metrics_file(source)
    if not f.is_file():
        raise ConfigError(f"{f} does not exist: not an exported adapter")
    return metrics_table(json.loads(f.read_text(encoding="utf-8"))) + "\n"


def _kinds(summary: dict) -> dict[str, float]:
    """A demo_summary.json's step times summed by kind (train / ablate / analyze), and the rest of its wall time."""
    out: dict[str, float] = {}
    for step, sec in (summary.get("steps_s") or {}).items():
        out[step.split("/")[0]] = out.get(step.split("/")[0], 0.0) + float(sec)
    out["rest"] = float(summary.get("wall_s", 0.0)) - sum(out.values())
    return out


def demo_timing_block(source: Path) -> str:
    """``lorank demo``'s measured wall times (benchmarks/demo_timing.py's JSON) by step kind: bf16, fp32 on the same
    CPU, fp32 on an AVX2-only CPU where one was measured (``fp32_avx2``); and its estimate for an AVX2-only CPU in
    fp32: each measured bf16 step kind times the planner's fp32-on-AVX2 / bf16 ratio for that kind
    (``plan_estimates_s``), the rest (process starts, BM25, figures, report) as measured."""
    if not source.is_file():
        raise ConfigError(f"{source} does not exist: run benchmarks/demo_timing.py first")
    data = json.loads(source.read_text(encoding="utf-8"))

    def m(x: float) -> str:
        return f"{x / 60:.1f} min" if x >= 90 else f"{x:.0f} s"

    head = ("| precision | how | wall | training (smoke check) | ablation | weights | the rest |\n"
            "|---|---|---|---|---|---|---|\n")
    rows = []
    for key, prec, how in (("bf16", "bf16", "measured"), ("fp32", "fp32", "measured, `LORANK_BF16=0`"),
                           ("fp32_avx2", "fp32", "measured on an AVX2-only CPU")):
        e = data.get(key)
        if not e or e.get("returncode") != 0:
            continue
        k = _kinds(e["summary"])
        note = f"; {e['note']}" if e.get("note") else ""
        where = f"{e['cpu']}, {e['cores']} cores, {e['date']}, load {e['load_before'][0]} before{note}"
        rows.append(f"| {prec} | {how}: {where} "
                    f"| **{m(e['wall_s'])}** | {m(k.get('train', 0))} | {m(k.get('ablate', 0))} | "
                    f"{m(k.get('analyze', 0))} | {m(k['rest'] + e['wall_s'] - e['summary']['wall_s'])} |")
    est, bf = data.get("plan_estimates_s") or {}, data.get("bf16")
    if bf and est.get("bf16") and est.get("fp32_avx2"):
        k = _kinds(bf["summary"])
        scaled = {kind: k.get(kind, 0.0) * est["fp32_avx2"][kind] / est["bf16"][kind] for kind in est["bf16"]}
        rest = k["rest"] + bf["wall_s"] - bf["summary"]["wall_s"]
        rows.append(f"| fp32 | estimated for an AVX2-only CPU: the bf16 steps x the planner's fp32-on-AVX2 / bf16 "
                    f"ratio | **{m(sum(scaled.values()) + rest)}** | {m(scaled.get('train', 0))} | "
                    f"{m(scaled.get('ablate', 0))} | {m(scaled.get('analyze', 0))} | {m(rest)} |")
    return head + "\n".join(rows) + "\n"


def families_block(root: Path, sources: list[str]) -> str:
    """The findings of several finished studies (one model family each, their folders relative to `root`) side by
    side (lorank.report.families); a missing study folder is an error that names it."""
    return families_markdown(families_table([read_family(root / s, shown=s) for s in sources]))


def adapters_block(root: Path, sources: list[str]) -> str:
    """Several exported adapters' evaluations in one table (folders relative to `root`), each named by its folder."""
    rows = []
    for src in sources:
        f = export_metrics_file(root / src)
        if not f.is_file():
            raise ConfigError(f"{f} does not exist: not an exported adapter")
        rows.append((f"`{Path(src).name}`", json.loads(f.read_text(encoding="utf-8"))))
    return adapters_table(rows) + "\n"


def findings_change_block(root: Path, sources: list[str]) -> str:
    """Two studies of the same findings (before, after; folders relative to `root`): each verdict, what it was
    decided on, and what differs (lorank.report.findings_change)."""
    if len(sources) != 2:
        raise ConfigError(f"lorank:findings-change takes two study folders (before,after), got {len(sources)}: "
                          f"{','.join(sources)}")
    before, after = (read_findings(root / s) for s in sources)
    return findings_change_markdown(findings_change(before, after), (Path(sources[0]).name, Path(sources[1]).name))


RENDERERS: dict[str, Callable[[Path], str]] = {"findings": findings_block, "adapter-table": adapter_block,
                                               "demo-timing": demo_timing_block}
#: the kinds whose source is several paths, comma-separated: rendered from (root, the paths as written)
MULTI_RENDERERS: dict[str, Callable[[Path, list[str]], str]] = {"families": families_block,
                                                                "findings-change": findings_change_block,
                                                                "adapters-table": adapters_block}


def render_blocks(text: str, root: Path, only: tuple[str, str] | None = None) -> str:
    """`text` with every generated block (or only the block ``(kind, key)``) rewritten from its source; a source
    path is relative to `root` (the folder of the Markdown file's repository)."""
    def sub(m: re.Match) -> str:
        kind, key = m["kind"], m["key"]
        if only is not None and (kind, key) != only:
            return m[0]
        if kind in MULTI_RENDERERS:
            return m[1] + MULTI_RENDERERS[kind](root, key.split(",")) + m[5]
        if kind not in RENDERERS:
            raise ConfigError(f"unknown generated block 'lorank:{kind}' (known: "
                              f"{', '.join([*RENDERERS, *MULTI_RENDERERS])})")
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
