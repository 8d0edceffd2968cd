"""The ltr analysis as a study step: planned and validated with the spec, run by the worker, reported."""
from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
import yaml

from lorank.errors import ConfigError
from lorank.study import build_plan, load_spec


def _spec(tmp, model, data, options):
    spec = {"name": "ltr-study", "models": [str(model)],
            "train": {"data": [{"kind": "trec", "path": str(data)}], "group_size": 4, "max_steps": 2,
                      "eval": {"sets": [str(data)], "depth": 8}},
            "lora": {"rank": 4, "alpha": 8, "dropout": 0.0},
            "analyses": [{"kind": "ltr", "runs": {"rank": 4}, "options": options}]}
    f = tmp / "spec.yaml"
    f.write_text(yaml.safe_dump(spec))
    return f


def test_ltr_steps_are_planned_and_their_options_checked_up_front(tiny_ltr, tmp_path):
    opts = {"train": str(tiny_ltr["train"]), "test": str(tiny_ltr["test"]), "depth": 8}
    f = _spec(tmp_path, tiny_ltr["model"], tiny_ltr["train"], opts)
    plan = build_plan(load_spec(f), f)
    step = next(s for s in plan.steps if s.step_id.startswith("analyze/ltr/"))
    assert step.payload["kind"] == "ltr" and step.needs == [f"train/{step.run_id}"] and step.estimate_s > 0
    f = _spec(tmp_path, tiny_ltr["model"], tiny_ltr["train"], {**opts, "bogus": 1, "groups": ["mlp:L5-2"],
                                                               "rows": ["bm25", "nope"]})
    with pytest.raises(ConfigError) as e:
        build_plan(load_spec(f), f)
    msg = str(e.value)
    for needle in ("unknown option 'bogus' for analysis 'ltr'", "options.groups", "empty layer range",
                   "options.rows", "unknown feature group 'nope'"):
        assert needle in msg, needle


def test_the_worker_runs_an_ltr_step_and_the_report_shows_it(tiny_ltr, tmp_path):
    from lorank.report.page import render_markdown
    from lorank.report.ltr_section import ltr_section
    from lorank.study.worker import run_step

    study = tmp_path / "study"
    shutil.copytree(tiny_ltr["adapter"], study / "runs" / "r4" / "checkpoint-1")
    payload = {"kind": "ltr", "against": None, "options": {"train": str(tiny_ltr["train"]),
                                                           "test": str(tiny_ltr["test"]), "depth": 6,
                                                           "groups": ["bm25", "score", "mlp:L2-3"],
                                                           "features_format": "csv"}}
    step = {"kind": "analyze", "payload": payload, "study_dir": str(study), "out_dir": "analyses/ltr/r4/0",
            "run_id": "r4"}
    res = run_step(step)
    assert res["summary"]["kind"] == "ltr"
    d = study / "analyses" / "ltr" / "r4" / "0"
    for name in ("ltr.json", "features_train.csv", "features_test.csv", "ltr_importance.png", "runs/LTR_all.run"):
        assert (d / name).is_file(), name
    plan = SimpleNamespace(steps=[SimpleNamespace(kind="analyze", payload=payload, out_dir="analyses/ltr/r4/0",
                                                  run_id="r4", step_id="analyze/ltr/r4/0"),
                                  SimpleNamespace(kind="analyze", payload=payload, out_dir="analyses/ltr/r4/1",
                                                  run_id="r4", step_id="analyze/ltr/r4/1")])
    (study / "report").mkdir()
    sec = ltr_section(plan, study, study / "report")
    rows = [r[0] for r in sec.tables[0][2]]
    assert rows == ["BM25", "reranker", "LTR(bm25+score)", "LTR(bm25+mlp)", "LTR(all)"]
    assert "1 ltr step(s) not run yet" in sec.text
    assert (study / "report" / "ltr_r4_importance.png").is_file()
    md = render_markdown("x", [sec])
    assert "## Latent features for learning to rank" in md and "| LTR(all) |" in md


def test_the_benchmark_script_runs_end_to_end_on_a_tiny_slice(tiny_ltr, tmp_path):
    from tests.benchmark_module import load_benchmark

    mod = load_benchmark("ltr_latent")
    out = tmp_path / "res" / "ltr_latent.json"
    s = mod.main(["--adapter", str(tiny_ltr["adapter"]), "--train", str(tiny_ltr["train"]), "--test",
                  str(tiny_ltr["test"]), "--depth", "6", "--max-queries", "4", "--work", str(tmp_path / "w"),
                  "--out", str(out)])
    assert out.is_file() and out.with_suffix(".png").stat().st_size > 10_000
    assert s["plot"] == "ltr_latent.png" and (out.parent / s["plot"]).is_file()  # beside the JSON, not a machine path
    assert set(s["headline"]) == {"BM25", "reranker", "LTR(bm25+score)", "LTR(bm25+mlp)", "LTR(all)"}
    assert s["test"]["judged_queries"] == 4 and s["features"]["train"]["pairs"] == 60


def test_the_benchmark_reuses_matching_features_and_refuses_others(tiny_ltr, tmp_path):
    from tests.benchmark_module import load_benchmark

    mod = load_benchmark("ltr_latent")
    work, out = tmp_path / "w", tmp_path / "res" / "ltr_latent.json"
    args = ["--adapter", str(tiny_ltr["adapter"]), "--train", str(tiny_ltr["train"]), "--test", str(tiny_ltr["test"]),
            "--depth", "6", "--max-queries", "4", "--work", str(work), "--out", str(out)]
    first = mod.main(args)
    stamp = {f: (work / f).stat().st_mtime_ns for f in ("features_train.parquet", "features_test.parquet")}
    again = mod.main(args + ["--reuse-features"])
    assert {f: (work / f).stat().st_mtime_ns for f in stamp} == stamp  # not extracted again
    assert again["headline"] == first["headline"]
    rows = {r["row"]: r for r in again["rows"]}
    # the latent features' own contribution: LTR(all) against the same learner on BM25 + the score
    assert set(rows["LTR(all)"]["vs_LTR(bm25+score)"]["ndcg_cut_10"]) == {"delta", "p_holm", "significant"}
    with pytest.raises(ConfigError, match=r"features_train\.parquet: made with other settings \(depth 6, not 8\)"):
        mod.main([a if a != "6" else "8" for a in args] + ["--reuse-features"])
