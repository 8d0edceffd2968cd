"""Issue 14: evaluate an MS MARCO-trained run's checkpoints on DL19 and DL20 (BM25 top-100) and write the figures.

    .venv/bin/lorank train configs/train_msmarco12k_cpu.yaml                       # the CPU run (~45 min here)
    .venv/bin/python benchmarks/train_msmarco12k.py --run runs/msmarco12k-cpu       # evaluate + collect (resumable)
    .venv/bin/python benchmarks/train_msmarco12k.py --run runs/msmarco12k-cpu --steps 200   # only some checkpoints
    .venv/bin/python benchmarks/train_msmarco12k.py --run runs/msmarco12k-reference --depth 50 \
        --adapter 2000=results/resume/msmarco12k-reference-curve/checkpoint-2000 --headline-step 5996 --headline-depth 100
        # the curve at top-50 (checkpoints kept as exported adapters across machines), the shipped step at top-100

Checkpoints are evaluated in the order given (default: the last first, then the rest from late to early), each
(step, set) once: results go to the run's ``metrics.jsonl`` and ``runs_trec/`` as ``lorank train`` writes them,
so an interrupted call resumes. Writes ``results/train_msmarco12k.json`` (every checkpoint's DL19/DL20
nDCG@10 and MRR@10, ``best_dev_ndcg_cut_10``: the checkpoint chosen on the dev sets of --sets pooled (DL19 + DL20,
the protocol's dev set, each query once: ``pooled`` per checkpoint, with paired tests against BM25), or on the one
set given (the first of --sets must be a dev set; test rows never choose), paired t-tests vs BM25 per query (Holm), tokens/s,
device, config, commands, the variants tried) and the checkpoint curve PNG beside it.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from lorank.after_training import (evaluate_checkpoints, headline, mine_command, pooled_vs_first_stage,  # noqa: E402
                                   significance)
from lorank.layout.run import training_calls  # noqa: E402

OUT = ROOT / "results" / "train_msmarco12k.json"


def collect(run_dir: Path, sets: list[str], variants: list[dict], out: Path = OUT,
            config: str = "configs/train_msmarco12k_cpu.yaml", train_commands: list[str] | None = None,
            head: dict | None = None, notes: list[str] | None = None) -> dict:
    from lorank.data import resolve_eval_set
    from lorank.data.roles import DEV, role_of
    from lorank.precision import cpu_bf16_capability
    from lorank.evaluation import evaluate
    from lorank.data.sources import eval_label
    from lorank.layout.run import read_metrics
    from lorank.train.checkpoint_eval import plot_checkpoint_curve

    if role_of(sets[0]) != DEV:  # the best checkpoint is chosen on it
        raise SystemExit(f"--sets: {sets[0]} is a {role_of(sets[0])} set of the evaluation protocol; the first of "
                         "--sets chooses the best checkpoint and must be a dev set (dl19, dl20)")
    cfg = json.loads((run_dir / "config.json").read_text())
    summary = json.loads((run_dir / "train_summary.json").read_text())
    metrics = read_metrics(run_dir)
    calls = training_calls(run_dir)
    by_step: dict[int, dict] = {}
    for r in metrics:
        if r.get("role", role_of(r["eval_set"])) != DEV:  # a test (or out-of-domain) row chooses nothing here
            continue
        if r["eval_set"] in [eval_label(s) for s in sets]:
            by_step.setdefault(r["step"], {"step": r["step"]})[r["eval_set"]] = {
                k: r.get(k) for k in ("ndcg_cut_10", "recip_rank_10", "recall_100", "map", "pairs_per_s", "precision",
                                      "weights")
                if k not in ("precision", "weights") or r.get(k)}  # recorded since session 14 (weights: 27)
    ckpts = [by_step[s] for s in sorted(by_step)]
    bm25 = {}
    for s in sets:
        rs = resolve_eval_set(s)  # loaded once per set (queries, collection, run, qrels)
        bm25[eval_label(s)] = {k: round(float(v), 4) for k, v in evaluate(rs.qrels, rs.run).aggregate.items()}
    dl19 = eval_label(sets[0])  # the primary dev set (--sets, DL19 by default)
    # several dev sets are the protocol's dev set pooled (DL19 + DL20, each query once): the checkpoint is chosen on
    # it, and best_dev_ndcg_cut_10 is its pooled figure; one set chooses alone, as before
    pooled_dev = len(sets) > 1 and all(role_of(s) == DEV for s in sets)
    if pooled_dev:
        for ck in ckpts:
            ck["pooled"] = pooled_vs_first_stage(run_dir, ck["step"], sets)
        best = max((c for c in ckpts if c.get("pooled")), key=lambda c: c["pooled"]["ndcg_cut_10"], default=None)
    else:
        best = max((c for c in ckpts if dl19 in c), key=lambda c: c[dl19]["ndcg_cut_10"], default=None)
    if head and pooled_dev:
        head["pooled"] = pooled_vs_first_stage(Path(head["folder"]), head["step"], sets)
    c = cfg["config"]
    device = {"kind": "cpu", "cores": __import__("os").cpu_count(), "processor": platform.processor() or platform.machine(),
              "bf16_capability": cpu_bf16_capability(), "precision": cfg.get("precision")}
    pooled_line = None
    if pooled_dev:
        done = {ck["step"]: ck["pooled"] for ck in ckpts if ck.get("pooled")}
        first = next(iter(done.values()))["first_stage"] if done else {}
        pooled_line = ("+".join(eval_label(s) for s in sets), done, first)
    plot = plot_checkpoint_curve(run_dir, title=f"{c['model']} LoRA r={c['lora']['rank']}, MS MARCO train (12k set)",
                                 baselines={eval_label(s): bm25[eval_label(s)] for s in sets},
                                 queries_per_step=c["batch_queries"], pooled=pooled_line)
    vs_bm25 = {ck["step"]: significance(run_dir, ck["step"], sets) for ck in ckpts}  # paired t, Holm per measure
    for ck in ckpts:  # each checkpoint: queries seen, and its p-values against BM25
        ck["training_queries_seen"] = ck["step"] * c["batch_queries"]
        for label, tests in vs_bm25[ck["step"]].items():
            if label in ck:
                ck[label].update({f"p_{t['measure']}_vs_bm25": t["p_adjusted"] for t in tests})
    png = out.with_suffix(".png")
    if plot is not None:
        shutil.copy2(plot, png)
    return {
        "model": c["model"], "lora": c["lora"], "device": device,
        "recipe": {k: c.get(k) for k in ("dtype", "head_init", "group_size", "batch_queries", "unit", "lr", "head_lr",
                                         "warmup_ratio", "loss", "max_steps", "epochs", "seed")},
        "train_data": c["data"], "pools": cfg.get("pools"),
        "steps": summary["steps"], "train_s": round(sum(k["s"] for k in calls), 1), "tokens": summary["tokens"],
        "tokens_per_s": round(summary["tokens"] / sum(k["s"] for k in calls), 1),
        "tokens_per_s_note": "over the whole run: the final model's tokens over the summed wall time of the training "
                             "calls below (a resumed call's train_summary.json counts only its own call)",
        "training_calls": calls, "training_queries_seen": summary["steps"] * c["batch_queries"],
        "checkpoints": ckpts, "bm25": bm25,
        "checkpoints_depth": sorted({r.get("depth") for r in metrics if r["eval_set"] in [eval_label(s) for s in sets]},
                                    key=str),
        # the checkpoint chosen on the dev set (sets[0], or all of --sets pooled): a dev figure, not a test result
        "chosen_on": ({"sets": [eval_label(s) for s in sets], "role": DEV, "pooled": True} if pooled_dev
                      else {"set": dl19, "role": DEV}),
        "best_dev_curve_step": best["step"] if best else None,
        "vs_bm25_at_best_dev_curve_step": vs_bm25[best["step"]] if best else None,
        # the shipped checkpoint at the headline depth where one was evaluated (--headline-step), else the curve's best
        "headline": head and {**head, "training_queries_seen": head["step"] * c["batch_queries"]},
        "best_dev_ndcg_cut_10": (_choice_figure(head, dl19, pooled_dev) if head
                                 else _choice_figure(best, dl19, pooled_dev) if best else None),
        "best_dev_step": head["step"] if head else best["step"] if best else None,
        "commands": {
            "mine (standalone; the config mines the same negatives on the fly)": mine_command(c["data"]),
            "train": train_commands or [f".venv/bin/lorank train {config}"],
            "evaluate": "python benchmarks/train_msmarco12k.py " + " ".join(sys.argv[1:]),
        },
        "variants": variants, "checkpoint_curve_png": png.name if plot is not None else None,
        "versions": cfg.get("versions"),
        # what the files cannot say (e.g. a run trained across machines in different precisions), as given (--note)
        "notes": notes or [],
    }


def _choice_figure(ck: dict, label: str, pooled_dev: bool) -> float | None:
    """nDCG@10 of a checkpoint (or the headline) on what chooses: the pooled dev set, or the one dev set."""
    if pooled_dev:
        return (ck.get("pooled") or {}).get("ndcg_cut_10")
    sets = ck.get("sets", ck)
    return sets[label]["ndcg_cut_10"] if label in sets else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--steps", default=None, help="checkpoints to evaluate, in this order (default: last first)")
    ap.add_argument("--sets", default="dl19,dl20")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--variants", type=Path, help="JSON list of other variants tried ({name, command, result})")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--config", default="configs/train_msmarco12k_cpu.yaml",
                    help="the YAML the run was trained from (recorded as its command; the run's config.json has it resolved)")
    ap.add_argument("--train-command", action="append", default=None,
                    help="the exact training command(s), in order, when the run was not one plain `lorank train CONFIG` "
                         "(e.g. a resume with --set max_steps=...); repeatable")
    ap.add_argument("--adapter", action="append", default=[], metavar="STEP=DIR",
                    help="evaluate this folder as checkpoint STEP (an exported adapter kept from an earlier machine, "
                         "e.g. results/resume/msmarco12k-reference-curve/checkpoint-2000); repeatable")
    ap.add_argument("--headline-step", type=int, help="the shipped checkpoint: also evaluated at --headline-depth, "
                    "into RUN/eval-top{depth}/; its dev nDCG@10 (pooled over --sets) is best_dev_ndcg_cut_10")
    ap.add_argument("--headline-depth", type=int, default=100)
    ap.add_argument("--note", action="append", default=[], help="a line recorded in the JSON's notes (what the run's "
                    "files do not say, e.g. which calls trained in which precision); repeatable")
    a = ap.parse_args()
    from lorank.atomic import atomic_write_json
    from lorank.layout.checkpoints import complete_checkpoints

    sets = [s for s in a.sets.split(",") if s]
    folders = {}
    for spec in a.adapter:
        step, sep, folder = spec.partition("=")
        if not sep or not step.isdigit() or not Path(folder).is_dir():
            raise SystemExit(f"--adapter {spec!r}: expected STEP=DIR with an existing folder")
        folders[int(step)] = Path(folder)
    have = sorted({int(p.name.rsplit("-", 1)[-1]) for p in complete_checkpoints(a.run)} | set(folders))
    steps = [int(s) for s in a.steps.split(",")] if a.steps else sorted(have, reverse=True)
    missing = [s for s in steps + ([a.headline_step] if a.headline_step else []) if s not in have]
    if missing:
        raise SystemExit(f"{a.run}: no complete checkpoint for steps {missing} (have {have})")
    head = None
    if a.headline_step:
        head_dir = a.run / f"eval-top{a.headline_depth}"
        evaluate_checkpoints(a.run, [a.headline_step], sets, a.headline_depth, folders, head_dir)
        head = headline(head_dir, a.headline_step, sets)
    evaluate_checkpoints(a.run, steps, sets, a.depth, folders)
    variants = json.loads(a.variants.read_text()) if a.variants else []
    res = collect(a.run, sets, variants, a.out, a.config, a.train_command, head, a.note)
    atomic_write_json(a.out, res)
    print(json.dumps({k: res[k] for k in ("best_dev_ndcg_cut_10", "best_dev_step", "tokens_per_s")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
