"""The issue-3 real run: train SmolLM2-135M LoRA on DL20, evaluate checkpoints on DL19, write the figures.

    .venv/bin/python benchmarks/train_dl20_dl19.py                      # train + evaluate (~35 min on 2 cores)
    .venv/bin/python benchmarks/train_dl20_dl19.py --from-run runs/e1   # only collect a finished run's figures

Writes results/train_dl20_dl19.json (model, lora, steps, wall_s, tokens_per_s, command,
checkpoints [{step, ndcg_cut_10, recip_rank_10}], best_dev_ndcg_cut_10: the best DL19 checkpoint, a dev figure) and
copies the checkpoint curve next to it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "train_dl20_dl19.yaml"


def collect(run_dir: Path, command: str) -> dict:
    cfg = json.loads((run_dir / "config.json").read_text())
    summary = json.loads((run_dir / "train_summary.json").read_text())
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r["eval_set"] == "dl19"]
    ckpts = [{"step": r["step"], "ndcg_cut_10": r["ndcg_cut_10"], "recip_rank_10": r["recip_rank_10"],
              "recall_100": r.get("recall_100"), "map": r.get("map"), "pairs_per_s": r.get("pairs_per_s")}
             for r in sorted(rows, key=lambda r: r["step"])]
    c = cfg["config"]
    eval_s = summary.get("eval_in_training_s")
    if eval_s is None:  # runs written before train_summary separated evaluation time
        eval_s = sum(r.get("score_wall_s", 0.0) for r in rows) if c["eval"].get("during_training", True) else 0.0
    train_s = summary.get("train_s") or (summary["wall_s"] - eval_s)
    return {
        "model": c["model"], "model_source": cfg.get("model_source"), "lora": c["lora"],
        "recipe": {k: c[k] for k in ("dtype", "head_init", "group_size", "batch_queries", "lr", "head_lr",
                                     "warmup_ratio", "loss", "max_steps", "epochs", "seed")},
        "train_data": c["data"], "eval": c["eval"], "steps": summary["steps"], "wall_s": summary["wall_s"],
        "eval_in_training_s": round(eval_s, 2), "train_s": round(train_s, 2),
        "tokens": summary["tokens"], "padded_tokens": summary["padded_tokens"],
        "tokens_per_s": round(summary["tokens"] / train_s, 1), "command": command, "checkpoints": ckpts,
        "best_dev_ndcg_cut_10": max((r["ndcg_cut_10"] for r in ckpts), default=None),  # chosen on DL19 (dev)
        "versions": cfg.get("versions"),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--from-run", type=Path, help="collect the figures of a finished run instead of training")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "train_dl20_dl19.json")
    ap.add_argument("--set", action="append", default=[], help="config override KEY=VALUE")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from lorank.atomic import atomic_write_json

    if a.from_run:
        run_dir = a.from_run
        command = f".venv/bin/lorank train {CONFIG.relative_to(ROOT)} -o {run_dir}"
    else:
        import yaml

        import lorank

        overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.set)}
        res = lorank.train(CONFIG, overrides=overrides)
        run_dir = res.output_dir
        command = "python benchmarks/train_dl20_dl19.py " + " ".join(f"--set {s}" for s in a.set)
    out = collect(Path(run_dir), command.strip())
    atomic_write_json(a.out, out)
    from lorank.data import resolve_eval_set
    from lorank.evaluation import evaluate
    from lorank.train.checkpoint_eval import plot_checkpoint_curve

    rs = resolve_eval_set("dl19")
    out["first_stage_dl19"] = {k: round(v, 4) for k, v in evaluate(rs.qrels, rs.run).aggregate.items()}
    atomic_write_json(a.out, out)
    plot_checkpoint_curve(Path(run_dir), title=f"{out['model']} LoRA r{out['lora']['rank']} (DL20 -> DL19)",
                          baselines={"dl19": out["first_stage_dl19"]})
    png = Path(run_dir) / "checkpoints.png"
    if png.is_file():
        shutil.copyfile(png, a.out.with_suffix(".png"))
    print(json.dumps({k: out[k] for k in ("steps", "wall_s", "tokens_per_s", "best_dev_ndcg_cut_10")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
