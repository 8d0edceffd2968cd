"""The LoRA variants as a study's grid axis (issue 44): `variant: [dylora, adalora]` trains them with their settings
from the spec's `lora:` section, each block only for its own variant; their run ids name the variant; a plain run's
id does not move when the spec gains the variants' blocks; a tiny DyLoRA study plans and runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lorank.study import build_plan, expand, load_spec, run_study
from lorank.study.spec import StudySpec
from tests.tinydata import make_trec_dir, save_tiny_model

VARIANT_BLOCKS = {"dylora": {"mode": "frozen"}, "adalora": {"target_r": 2, "tinit": 0, "tfinal": 1}}


def _spec(model: Path | str, data: Path | str, grid: list[dict], **lora) -> dict:
    return {"name": "variants", "models": [str(model)],
            "train": {"data": [{"kind": "trec", "path": str(data)}], "group_size": 4, "batch_queries": 1,
                      "max_steps": 2, "checkpoints": {"steps": "2"}, "eval": {"sets": [str(data)], "depth": 8}},
            "lora": {"rank": 4, "alpha": 8, "dropout": 0.0, **lora}, "grid": grid}


def test_the_variant_axis_trains_dylora_and_adalora_with_their_blocks():
    spec = StudySpec.model_validate(_spec("smollm2-135m", "dl20", [{"variant": ["lora", "dylora", "adalora"]}],
                                          **VARIANT_BLOCKS))
    runs = {r.axes["variant"]: r for r in expand(spec)}
    assert [r.label for r in runs.values()] == ["r4-all-s42", "r4-all-dylora-s42", "r4-all-adalora-s42"]
    assert runs["dylora"].run_id.startswith("smollm2-135m-r4-all-dylora-s42-")
    assert runs["adalora"].run_id.startswith("smollm2-135m-r4-all-adalora-s42-")
    lora = {v: r.train_config["lora"] for v, r in runs.items()}
    assert lora["dylora"]["dylora"] == {"mode": "frozen"} and "adalora" not in lora["dylora"]
    assert lora["adalora"]["adalora"]["target_r"] == 2 and "dylora" not in lora["adalora"]
    assert "dylora" not in lora["lora"] and "adalora" not in lora["lora"]
    assert not any(k in r.axes for r in runs.values() for k in VARIANT_BLOCKS)  # results.csv columns as before
    # the plain run is the run of the same spec without the variants: its id does not move
    plain = expand(StudySpec.model_validate(_spec("smollm2-135m", "dl20", [{}])))
    assert [r.run_id for r in plain] == [runs["lora"].run_id]


def test_a_variant_block_of_a_bad_schedule_is_named():
    from lorank.errors import ConfigError

    spec = StudySpec.model_validate(_spec("smollm2-135m", "dl20", [{"variant": ["adalora"]}],
                                          adalora={"target_r": 2, "tinit": 5}))
    with pytest.raises(ConfigError, match="tinit"):
        expand(spec)


def test_a_tiny_dylora_study_plans_and_runs(tmp_path):
    data = make_trec_dir(tmp_path / "data", n_queries=4, n_cands=8)
    model = save_tiny_model(tmp_path / "model")
    f = tmp_path / "spec.yaml"
    f.write_text(yaml.safe_dump(_spec(model, data, [{"variant": ["dylora"]}], dylora={"mode": "full"})))
    plan = build_plan(load_spec(f), f)
    (run,) = plan.runs
    assert "-r4-all-dylora-s42-" in run.run_id
    res = run_study(f, tmp_path / "out")
    assert not res.failed, res.outcomes
    ck = tmp_path / "out" / "runs" / run.run_id / "checkpoint-2"
    assert json.loads((ck / "lorank_checkpoint.json").read_text())["lora"]["variant"] == "dylora"
