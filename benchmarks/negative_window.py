"""Issue 14: are the mined negatives too easy? Two runs that differ only in the BM25 mining window, compared.

    .venv/bin/lorank train configs/train_msmarco12k_cpu_long.yaml    --set max_steps=200 -o runs/neg-window-10-100
    .venv/bin/lorank train configs/train_msmarco12k_cpu_hardneg.yaml --set max_steps=200 -o runs/neg-window-1-30
    .venv/bin/python benchmarks/negative_window.py --run 10-100=runs/neg-window-10-100 --run 1-30=runs/neg-window-1-30

Each run's checkpoint (``--step``, default the last) is evaluated on DL19 and DL20 (BM25 top-100; resumable, the
results go to the run's ``metrics.jsonl`` / ``runs_trec/`` as ``lorank train`` writes them), then every run is
compared per query with the first (paired t-test, Holm per measure) and with BM25, on each set and on the sets
pooled (``pooled``: DL19 + DL20 = 97 queries, query ids prefixed by the set). The training loss is summarised per
50-step window (mean, and the share of steps below 0.01: how often a group is already solved). Writes
``results/negative_window.json``; top-level keys of an existing ``--out`` that this script does not
write (notes such as ``pilots``) are kept.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from lorank.after_training import evaluate_checkpoints  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "negative_window.json"
MEASURES = ("ndcg_cut_10", "recip_rank_10")


def loss_profile(run_dir: Path, every: int = 50, solved_below: float = 0.01) -> list[dict]:
    """Per ``every``-step window of train_log.jsonl: mean loss and the share of steps with loss < ``solved_below``.
    A step logged twice (trained again after a resume) counts once, with its last value."""
    from lorank.atomic import read_jsonl

    rows, _ = read_jsonl(run_dir / "train_log.jsonl")
    by_step = {int(r["step"]): float(r["loss"]) for r in rows if "step" in r and "loss" in r}
    out = []
    for lo in range(1, max(by_step, default=0) + 1, every):
        losses = [by_step[s] for s in range(lo, lo + every) if s in by_step]
        if losses:
            out.append({"steps": f"{lo}-{lo + every - 1}", "logged": len(losses),
                        "mean_loss": round(statistics.fmean(losses), 4),
                        f"share_below_{solved_below}": round(sum(x < solved_below for x in losses) / len(losses), 3)})
    return out


def _comparisons(compare, qrels: dict, runs: dict, references: list[str]) -> dict:
    """Aggregates of BM25 and every run; each run against each reference run and against BM25 (paired, Holm
    over the runs tested against the same baseline)."""
    trained = {k: v for k, v in runs.items() if k != "bm25"}
    vs_bm25 = compare(qrels, runs, baseline="bm25", measures=list(MEASURES))
    out = {"queries": len(qrels),
           "aggregate": {run: {m: round(float(r.aggregate[m]), 4) for m in MEASURES}
                         for run, r in vs_bm25.results.items()}}
    for ref in references:
        vs_ref = compare(qrels, trained, baseline=ref, measures=list(MEASURES)) if len(trained) > 1 else None
        out[f"vs_{ref}"] = [c.to_dict() for c in vs_ref.comparisons] if vs_ref else []
    out["vs_bm25"] = [c.to_dict() for c in vs_bm25.comparisons]
    return out


def last_step(run_dir: Path) -> int:
    from lorank.layout.checkpoints import complete_checkpoints, step_of

    ckpts = complete_checkpoints(run_dir)
    if not ckpts:
        raise SystemExit(f"{run_dir}: no complete checkpoint-N folder")
    return step_of(ckpts[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, metavar="NAME=DIR",
                    help="a run to compare (repeatable; the first is the reference the others are tested against)")
    ap.add_argument("--step", type=int, default=None, help="checkpoint to compare (default: each run's last)")
    ap.add_argument("--sets", default="dl19,dl20")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--against", action="append", default=[], metavar="NAME",
                    help="also test every run against this one (repeatable; the first --run always is)")
    a = ap.parse_args()

    from lorank.data import load_run, resolve_eval_set
    from lorank.evaluation import compare, pool_sets
    from lorank.train.checkpoint_eval import eval_label

    runs: dict[str, Path] = {}
    for item in a.run:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--run {item!r}: write NAME=DIR")
        runs[name] = Path(path)
    sets = [s.strip() for s in a.sets.split(",") if s.strip()]
    unknown = [n for n in a.against if n not in runs]
    if unknown:
        raise SystemExit(f"--against {', '.join(unknown)}: not among the --run names ({', '.join(runs)})")
    steps = {name: a.step or last_step(d) for name, d in runs.items()}
    for name, d in runs.items():
        print(f"== {name}: {d} checkpoint-{steps[name]}", flush=True)
        evaluate_checkpoints(d, [steps[name]], sets, a.depth)

    names = list(runs)
    refs = list(dict.fromkeys([names[0], *a.against]))
    result: dict = {"runs": {}, "comparisons": {}, "measures": list(MEASURES),
                    "command": "python benchmarks/negative_window.py " + " ".join(sys.argv[1:])}
    for name, d in runs.items():
        cfg = json.loads((d / "config.json").read_text())
        result["runs"][name] = {"dir": str(d), "step": steps[name], "train_data": cfg["config"]["data"],
                                "pools": cfg.get("pools"), "loss_profile": loss_profile(d)}
    parts = {}
    for s in sets:
        label = eval_label(s)
        rs = resolve_eval_set(s)
        trec = {name: load_run(d / "runs_trec" / f"checkpoint-{steps[name]}.{label}.run") for name, d in runs.items()}
        result["comparisons"][label] = _comparisons(compare, rs.qrels, {"bm25": rs.run, **trec}, refs)
        parts[label] = (rs.qrels, {"bm25": rs.run, **trec})
    if len(sets) > 1:
        pooled_qrels, pooled_runs = pool_sets(parts)
        result["comparisons"]["pooled"] = {"sets": [eval_label(s) for s in sets],
                                           **_comparisons(compare, pooled_qrels, pooled_runs, refs)}
    from lorank.atomic import atomic_write_json

    if a.out.is_file():  # keep the notes this script does not write
        old = json.loads(a.out.read_text())
        result = {**{k: v for k, v in old.items() if k not in result}, **result}
    atomic_write_json(a.out, result)
    print(json.dumps(result["comparisons"], indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
