"""Roles in a study's results (results.csv's last column, ``role``), and the committed legacy CPU study under the
protocol: it still loads and expands to exactly its committed run ids (no new config field changes a hash), and
protocol_violations says what its mining did wrong (the DL20 pool mined, DL20 not guarded)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from lorank.study.spec import config_hash, expand, load_spec

STUDY = Path(__file__).resolve().parents[2] / "results" / "study_smollm2_cpu"


def test_the_committed_study_expands_to_its_run_ids_and_hashes():
    from lorank.train.config import TrainConfig

    runs = expand(load_spec(STUDY / "study.yaml"))
    assert sorted(r.run_id for r in runs) == sorted(p.name for p in (STUDY / "runs").iterdir() if p.is_dir())
    for r in runs:
        ident = TrainConfig.from_dict({**r.train_config, "output_dir": "_"}).identity()
        ident.pop("output_dir")
        assert "test_sets" not in ident["eval"] and config_hash(ident) == r.config_hash
        assert r.run_id.endswith(r.config_hash[:6])


def test_protocol_violations_flag_the_committed_studys_mining():
    from lorank.mine import protocol_violations

    run = expand(load_spec(STUDY / "study.yaml"))[0]
    v = protocol_violations(run.train_config)
    assert v == ["data[0].mine.collections: dl20 is an evaluation set's candidate pool (dev); the protocol mines "
                 "negatives from training passages only",
                 "data[0].mine.exclude_eval: dl20 evaluated on but not guarded when mining: their queries were not "
                 "checked against the training queries, nor their pool passages dropped from the training data"]


def test_results_rows_carry_their_role(tmp_path):
    from lorank.study.plan import build_plan
    from lorank.study.store import COLUMNS, collect_rows

    assert "role" in COLUMNS and COLUMNS.index("role") > COLUMNS.index("significant_recip_rank_10")
    plan = build_plan(load_spec(STUDY / "study.yaml"), STUDY / "study.yaml", check_data=False)
    rows = collect_rows(plan, STUDY)
    assert rows and {r["role"] for r in rows} == {"dev"}  # DL19 + DL20: checkpoints (rows from before roles), ablations
    # a run folder whose metrics carry a test row (the final model on DL22)
    run = plan.runs[0]
    (tmp_path / "runs").mkdir()
    shutil.copytree(STUDY / "runs" / run.run_id, tmp_path / "runs" / run.run_id)
    f = tmp_path / "runs" / run.run_id / "metrics.jsonl"
    f.write_text(f.read_text() + json.dumps({"step": 1000, "eval_set": "trec-dl-2022", "role": "test",
                                             "ndcg_cut_10": 0.3}) + "\n")
    got = {(r["eval_set"], r["step"]): r["role"] for r in collect_rows(plan, tmp_path) if r["source"] == "checkpoint"}
    assert got[("trec-dl-2022", 1000)] == "test" and got[("dl19", 1000)] == "dev" and got[("dl20", 250)] == "dev"
