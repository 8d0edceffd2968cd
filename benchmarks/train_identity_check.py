"""Does a commit train exactly as another? A tiny random Llama (tests/tinydata.py) trained by ``lorank.train`` with
the packed forward, bf16 where the CPU has it, LoRA dropout 0.1, two checkpoints evaluated: prints the SHA-256 of the
final adapter weights and the dev figures. Run it once per commit, each with its own ``src`` on PYTHONPATH:

    PYTHONPATH=OLD_WORKTREE/src .venv/bin/python benchmarks/train_identity_check.py /tmp/tc/old
    PYTHONPATH=src             .venv/bin/python benchmarks/train_identity_check.py /tmp/tc/new

Same weights hash and same figures = a long study may move its worktree from the one commit to the other between
runs without changing what it trains (issue 41: results/train_identity_check.json).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.tinydata

from tests.tinydata import make_trec_dir, save_tiny_model  # noqa: E402

import lorank  # noqa: E402


def main() -> int:
    root = Path(sys.argv[1])
    root.mkdir(parents=True, exist_ok=True)
    data = make_trec_dir(root / "data", n_queries=6, n_cands=10)
    model = save_tiny_model(root / "model")
    cfg = {"model": str(model), "data": [{"kind": "trec", "path": str(data)}], "group_size": 4, "batch_queries": 2,
           "max_steps": 6, "lr": 5e-4, "head_lr": 5e-4, "warmup_ratio": 0.05, "checkpoints": {"steps": "3,6"},
           "eval": {"sets": [str(data)], "depth": 10}, "lora": {"rank": 8, "alpha": 64, "dropout": 0.1},
           "output_dir": str(root / "run"), "seed": 42}
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    lorank.train.train(str(root / "cfg.yaml"))
    run = root / "run"
    summary = json.loads((run / "train_summary.json").read_text())
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    print(json.dumps({
        "lorank": str(Path(lorank.__file__).parent),
        "weights_sha256": hashlib.sha256((run / "checkpoint-6" / "adapter_model.safetensors").read_bytes()).hexdigest(),
        "forward": summary["execution"]["forward"],
        "figures": [{k: m[k] for k in ("step", "ndcg_cut_10", "recip_rank_10", "map", "precision")} for m in metrics],
    }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
