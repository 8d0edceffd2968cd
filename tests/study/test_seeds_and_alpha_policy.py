"""Seeds and the LoRA scale as grid dimensions (issue "Verdicts a reviewer accepts", parts 4-6): `seeds` multiplies
every block without its own seed axis, `alpha_policy` resolves to the alpha PEFT trains with, runs of the same
training are one run (deduplicated by config hash), and the run ids of existing studies do not move."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lorank.errors import ConfigError
from lorank.study.spec import StudySpec, condition_of, expand, load_spec

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "results" / "study_smollm2_cpu"
#: the run ids of the demo's grid (studies/demo.yaml until issue 45) before seeds and alpha policies existed
DEMO_IDS = ["smollm2-135m-r1-all-s42-ab13e9", "smollm2-135m-r8-all-s42-6ed82d"]
#: that grid's spec, as it was
OLD_DEMO = {"name": "demo", "models": ["smollm2-135m"],
            "train": {"head_init": "yes_no", "data": [{"kind": "trec", "path": "dl20", "rel_threshold": 2,
                                                       "max_negative_grade": 0, "depth": 100}],
                      "group_size": 8, "batch_queries": 1, "lr": 3.0e-4, "head_lr": 1.0e-3, "warmup_ratio": 0.1,
                      "max_steps": 20, "checkpoints": {"steps": "10,20"},
                      "eval": {"sets": ["dl19"], "depth": 10, "max_queries": 8}},
            "lora": {"rank": 8, "alpha": 64, "dropout": 0.0, "components": "all"}, "grid": [{"rank": [1, 8]}]}


def _spec(**extra) -> StudySpec:
    return StudySpec.model_validate({"name": "t", "models": ["smollm2-135m"],
                                     "train": {"data": [{"kind": "trec", "path": "dl20"}], "max_steps": 10,
                                               "checkpoints": {"steps": "10"}, "eval": {"sets": ["dl19"], "depth": 20}},
                                     "lora": {"rank": 8, "alpha": 64, "dropout": 0.1}, **extra})


def test_existing_studies_keep_their_run_ids():
    runs = expand(load_spec(COMMITTED / "study.yaml"))
    assert sorted(r.run_id for r in runs) == sorted(p.name for p in (COMMITTED / "runs").iterdir() if p.is_dir())
    assert [r.run_id for r in expand(StudySpec.model_validate(OLD_DEMO))] == DEMO_IDS
    assert all(r.axes["alpha_policy"] == "fixed" and r.axes["alpha"] == 64 for r in runs)


def test_seeds_multiply_every_block_without_its_own_seed():
    runs = expand(_spec(seeds=[42, 43, 44], grid=[{"rank": [1, 8]}, {"components": ["mha"], "seed": [7]}]))
    assert [r.label for r in runs] == ["r1-all-s42", "r1-all-s43", "r1-all-s44", "r8-all-s42", "r8-all-s43",
                                       "r8-all-s44", "r8-mha-s7"]
    assert len({r.run_id for r in runs}) == len({r.config_hash for r in runs}) == 7
    assert [r.axes["seed"] for r in runs] == [42, 43, 44, 42, 43, 44, 7]
    assert [r.train_config["seed"] for r in runs] == [42, 43, 44, 42, 43, 44, 7]
    groups: dict[str, list[int]] = {}
    for r in runs:
        groups.setdefault(condition_of(r), []).append(r.axes["seed"])
    assert groups == {"r1-all": [42, 43, 44], "r8-all": [42, 43, 44], "r8-mha": [7]}
    assert condition_of("r8-all-scale-s43") == "r8-all-scale"
    # without `seeds`: train.seed alone, as before
    assert [r.label for r in expand(_spec(grid=[{"rank": [1, 8]}]))] == ["r1-all-s42", "r8-all-s42"]


def test_results_table_and_dry_run_carry_every_seed(tmp_path):
    from lorank.study.plan import build_plan
    from lorank.study.store import _axes

    spec = _spec(seeds=[42, 43, 44], grid=[{"rank": [1]}])
    plan = build_plan(spec, check_data=False, device="cpu")
    trains = [s for s in plan.steps if s.kind == "train"]
    assert [s.step_id.rsplit("-", 2)[1] for s in trains] == ["s42", "s43", "s44"]
    assert all(s.estimate_s > 0 for s in trains)
    one = build_plan(_spec(grid=[{"rank": [1]}]), check_data=False, device="cpu")
    assert plan.estimate_s == pytest.approx(3 * one.estimate_s)
    assert any("seeds 42, 43, 44: 3 runs of 1 conditions" in n for n in plan.notes)
    assert [_axes(r)["seed"] for r in plan.runs] == [42, 43, 44]


def test_a_compare_against_a_selector_pairs_the_same_seed():
    from lorank.study.plan import build_plan

    spec = _spec(seeds=[42, 43], grid=[{"rank": [1, 8]}],
                 analyses=[{"kind": "compare", "runs": {"rank": 1}, "against": {"rank": 8}}])
    steps = [s for s in build_plan(spec, check_data=False, device="cpu").steps if s.kind == "analyze"]
    pairs = [(s.run_id.split("-")[-2], s.payload["against"].split("-")[-2]) for s in steps]
    assert pairs == [("s42", "s42"), ("s43", "s43")]


@pytest.mark.parametrize("rank", [1, 2, 8, 32])
def test_alpha_policies_give_the_effective_alpha(rank):
    from lorank.lora.spec import LoraSpec, effective_alpha

    assert effective_alpha(64, rank, "fixed") == 64
    assert effective_alpha(64, rank, "scale") == 8 * rank  # alpha/r held at 64/8: scale 8 at every rank
    assert effective_alpha(64, rank, "rslora") == pytest.approx(64 * math.sqrt(rank / 8))
    assert effective_alpha(64, rank, "rslora") / rank == pytest.approx(64 / math.sqrt(8 * rank))  # ~ 1/sqrt(r)
    assert effective_alpha("8r", rank, "fixed") == effective_alpha("8r", rank, "scale") == 8 * rank
    assert effective_alpha(16, rank, "scale", alpha_rank=2) == 8 * rank
    assert LoraSpec(rank=rank, alpha=64, alpha_policy="scale").effective_alpha() == 8 * rank
    runs = expand(_spec(grid=[{"rank": [rank], "alpha_policy": ["fixed", "scale", "rslora"]}]))
    by_policy = {r.axes["alpha_policy"]: r for r in runs}
    want = {"fixed": 64, "scale": 8 * rank, "rslora": 64 * math.sqrt(rank / 8)}
    assert set(by_policy) == ({"fixed"} if rank == 8 else {"fixed", "scale", "rslora"})
    for policy, r in by_policy.items():
        assert r.axes["alpha"] == pytest.approx(want[policy])
        assert r.label == f"r{rank}-all" + {"fixed": "", "scale": "-scale", "rslora": "-rsscale"}[policy] + "-s42"
        assert r.matches({"rank": rank, "alpha_policy": policy})


def test_r8_under_scale_is_the_r8_fixed_run():
    from lorank.train.config import TrainConfig

    runs = expand(_spec(grid=[{"rank": [1, 8]}, {"rank": [1, 8], "alpha_policy": ["scale"]}]))
    assert [r.label for r in runs] == ["r1-all-s42", "r8-all-s42", "r1-all-scale-s42"]
    data = [{"kind": "trec", "path": "dl20"}]
    fixed = TrainConfig.from_dict({"data": data, "lora": {"rank": 8, "alpha": 64}})
    scale = TrainConfig.from_dict({"data": data, "lora": {"rank": 8, "alpha": 64, "alpha_policy": "scale"}})
    rs = TrainConfig.from_dict({"data": data, "lora": {"rank": 8, "alpha": 64, "alpha_policy": "rslora"}})
    assert fixed.identity() == scale.identity() == rs.identity()
    assert "alpha_policy" not in fixed.identity()["lora"] and "alpha_rank" not in fixed.identity()["lora"]
    r2 = TrainConfig.from_dict({"data": data, "lora": {"rank": 2, "alpha": 64, "alpha_policy": "scale"}})
    assert r2.identity()["lora"]["alpha"] == 16
    assert r2.identity() == TrainConfig.from_dict({"data": data, "lora": {"rank": 2, "alpha": 16}}).identity()


def test_the_peft_config_gets_the_effective_alpha():
    from lorank.lora.spec import LoraSpec
    from lorank.models.random_init import config_for

    cfg = config_for("tiny-llama")
    assert LoraSpec(rank=2, alpha=64).to_peft(cfg).lora_alpha == 64
    assert LoraSpec(rank=2, alpha=64, alpha_policy="scale").to_peft(cfg).lora_alpha == 16
    assert LoraSpec(rank=2, alpha=64, alpha_policy="rslora").to_peft(cfg).lora_alpha == pytest.approx(32)
    peft = LoraSpec(rank=32, alpha=64, alpha_policy="rslora").to_peft(cfg)
    assert isinstance(peft.lora_alpha, float) and not peft.use_rslora  # a plain PEFT adapter, the number resolved
    assert LoraSpec.from_dict({"rank": 1, "alpha": 64, "alpha_policy": "scale"}).short_name() == "r1-all-scale"
    with pytest.raises(ConfigError, match="alpha_policy"):
        LoraSpec.from_dict({"alpha_policy": "bogus"})


def test_results_rows_carry_the_effective_alpha_and_policy():
    from lorank.study.store import COLUMNS, _axes

    assert "alpha_policy" in COLUMNS and COLUMNS.index("alpha_policy") > COLUMNS.index("significant_recip_rank_10")
    runs = expand(_spec(grid=[{"rank": [2], "alpha_policy": ["fixed", "scale"]}]))
    rows = [_axes(r) for r in runs]
    assert [(x["alpha"], x["alpha_policy"]) for x in rows] == [(64, "fixed"), (16, "scale")]
    assert json.dumps(rows)  # plain values


def test_results_csv_holds_the_curve_points_apart_from_the_checkpoints(tmp_path):
    import pandas as pd

    from lorank.study.plan import build_plan
    from lorank.study.store import load_results, write_results

    spec = _spec(grid=[{"rank": [2], "alpha_policy": ["scale"]}])
    spec.train["eval"]["curve"] = {"every": 4, "depth": 10}
    plan = build_plan(spec, check_data=False, device="cpu")
    (run,) = plan.runs
    rdir = tmp_path / "runs" / run.run_id
    rdir.mkdir(parents=True)
    (rdir / ".lorank-step.json").write_text(json.dumps({"status": "ok", "step_id": f"train/{run.run_id}"}))  # trained
    (rdir / "metrics.jsonl").write_text(json.dumps({"step": 10, "eval_set": "dl19", "ndcg_cut_10": 0.6}) + "\n")
    (rdir / "curve.jsonl").write_text("".join(json.dumps({"step": s, "eval_set": "dl19", "role": "dev", "depth": 10,
                                                          "ndcg_cut_10": 0.5 + s / 100, "recip_rank_10": 0.7,
                                                          "pairs": 430, "score_wall_s": 1.0}) + "\n"
                                              for s in (4, 8, 10)))
    write_results(plan, tmp_path, include_first_stage=False)
    df = pd.read_csv(tmp_path / "results.csv")
    curve = df[df["source"] == "curve"]
    assert curve["step"].tolist() == [4, 8, 10] and not curve["final"].any()  # a curve point is never "final"
    assert curve["ndcg_cut_10"].tolist() == [0.54, 0.58, 0.6] and set(curve["depth"]) == {10}
    ck = df[df["source"] == "checkpoint"]
    assert ck["final"].tolist() == [True] and ck["step"].tolist() == [10]
    assert set(df["alpha"]) == {16} and set(df["alpha_policy"]) == {"scale"}
    assert set(load_results(tmp_path)["source"]) == {"checkpoint", "curve"}


def test_the_dry_run_prices_the_curve():
    from lorank.study.cost import curve_points
    from lorank.study.plan import build_plan

    spec = _spec(grid=[{"rank": [1]}])
    spec.train["max_steps"] = 1000
    base = build_plan(spec, check_data=False, device="cpu").estimate_s
    spec.train["eval"]["curve"] = {"every": 100, "depth": 20}
    with_curve = build_plan(spec, check_data=False, device="cpu").estimate_s
    assert curve_points(1000, 100) == 10 and curve_points(250, 100) == 3
    # ten points of DL19 (43 queries) at depth 20, at the measured rate of a run's own evaluations (2.7 pairs/s in
    # fp32, 32 in bf16)
    assert 10 * 43 * 20 / 32.1 < with_curve - base < 10 * 43 * 20 / 2.6
