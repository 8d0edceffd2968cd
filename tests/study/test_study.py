"""The study runner end to end on a tiny random-init model: plan, run, resume, crash isolation, report."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lorank.errors import ConfigError
from lorank.report import build_report
from lorank.study import build_plan, expand, load_results, load_spec, run_study
from tests.tinydata import make_trec_dir, save_tiny_model


def _spec(tmp: Path, model: Path, data: Path, **extra) -> Path:
    spec = {
        "name": "tiny-study",
        "models": [str(model)],
        "train": {"data": [{"kind": "trec", "path": str(data)}], "group_size": 4, "batch_queries": 1,
                  "max_steps": 2, "checkpoints": {"steps": "1,2"}, "eval": {"sets": [str(data)], "depth": 8}},
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0},
        "grid": [{"rank": [2, 4]}, {"components": ["mha"]}],
        "ablations": [{"runs": {"rank": 4, "components": "all"}, "sweeps": ["components", "layers-leave-one-out"],
                       "eval": str(data),
                       "depth": 8}],
        "analyses": [{"kind": "weights", "runs": {"rank": 4, "components": "all"}}],
        "report": {"reference": {"rank": 4, "components": "all"}},
    }
    spec.update(extra)
    f = tmp / "spec.yaml"
    f.write_text(yaml.safe_dump(spec))
    return f


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    data = make_trec_dir(root / "data", n_queries=4, n_cands=8)
    model = save_tiny_model(root / "model")
    spec = _spec(root, model, data)
    out = root / "out"
    res = run_study(spec, out)
    return root, spec, out, res, model, data


def test_grid_expands_to_readable_ids_with_hashes(tiny):
    root, spec, *_ = tiny
    runs = expand(load_spec(spec))
    assert [r.label for r in runs] == ["r2-all-s42", "r4-all-s42", "r4-mha-s42"]
    assert all(len(r.run_id.rsplit("-", 1)[1]) == 6 for r in runs)
    # the hash follows the resolved config: a changed lr gives a new id
    s = yaml.safe_load(spec.read_text())
    s["train"]["lr"] = 5e-4
    spec2 = root / "spec2.yaml"
    spec2.write_text(yaml.safe_dump(s))
    assert {r.run_id for r in expand(load_spec(spec2))}.isdisjoint({r.run_id for r in runs})


def test_study_runs_every_step_and_writes_the_layout(tiny):
    root, spec, out, res, *_ = tiny
    assert not res.failed, res.outcomes
    assert {o.status for o in res.outcomes.values()} == {"ok"}
    for r in res.plan.runs:
        d = out / "runs" / r.run_id
        assert (d / "config.json").is_file() and (d / "metrics.jsonl").is_file()
        assert (d / "checkpoint-2" / "adapter_model.safetensors").is_file()
    assert (out / "study.yaml").is_file()
    state = json.loads((out / "study_state.json").read_text())
    assert state["status"] == "done"
    # each step ran records its CPU seconds beside its wall time (a paused or shared machine stretches only the wall)
    train = [v for k, v in state["steps"].items() if k.startswith("train/")]
    assert train and all(v["cpu_s"] > 0 for v in train)
    df = load_results(out)
    ck = df[df["source"] == "checkpoint"]
    assert set(ck["step"]) == {1, 2} and len(ck) == 6
    ab = df[df["source"] == "ablation"]
    assert {"full", "none", "mha-only", "mlp-only"} <= set(ab["config"])
    assert (out / "results.csv").is_file()
    # the promised Parquet export is written (pyarrow is a dependency) and holds the same table
    import pandas as pd

    pq, csv = pd.read_parquet(out / "results.parquet"), pd.read_csv(out / "results.csv")
    assert list(pq.columns) == list(csv.columns) and len(pq) == len(csv) == len(df)
    assert pq["ndcg_cut_10"].astype(float).round(6).tolist() == csv["ndcg_cut_10"].astype(float).round(6).tolist()


def test_metrics_reader_skips_a_torn_last_line_loudly_and_refuses_damage(tmp_path, caplog):
    from lorank.errors import DataError
    from lorank.layout.run import read_metrics  # the store reads metrics.jsonl with it

    f = tmp_path / "metrics.jsonl"
    f.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "ndcg')
    assert read_metrics(tmp_path) == [{"step": 1}, {"step": 2}]
    assert "skipped 1 torn last line" in caplog.text and "metrics.jsonl:3" in caplog.text
    f.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(DataError, match=r"metrics\.jsonl:2: not valid JSON .*the file is damaged") as e:
        read_metrics(tmp_path)
    assert (e.value.path, e.value.line) == (str(f), 2)
    assert read_metrics(tmp_path / "absent") == []  # a run not started yet: no rows


def test_rerun_skips_finished_steps(tiny):
    from rich.console import Console

    root, spec, out, res, *_ = tiny
    console = Console(record=True, width=200, force_terminal=False)
    again = run_study(spec, out, console=console)
    assert {o.status for o in again.outcomes.values()} == {"cached"}
    # the bar of a finished study once still said "~773 min left" (its estimate when nothing had run)
    bar = [line for line in console.export_text().splitlines() if line.lstrip().startswith("study")][-1]
    assert bar.rstrip().endswith("done") and "left" not in bar, bar


def test_a_run_with_only_keeps_the_state_of_the_other_steps(tiny):
    """The CPU study runs in chunks (--only ablate/, --only train/...): each chunk used to overwrite
    study_state.json with its own steps, and the report counted only those as done."""
    import json

    from lorank.errors import DataError

    root, spec, out, res, *_ = tiny
    first = json.loads((out / "study_state.json").read_text())["steps"]
    run_study(spec, out, only=["ablate/"])
    state = json.loads((out / "study_state.json").read_text())
    assert list(state["steps"]) == list(first) and state["status"] == "done"
    assert {v["status"] for k, v in state["steps"].items() if k.startswith("ablate/")} == {"cached"}
    assert all(state["steps"][k] == v for k, v in first.items() if not k.startswith("ablate/"))
    (out / "study_state.json").write_text("{not json")
    with pytest.raises(DataError, match=r"study_state\.json.*unreadable study state"):
        run_study(spec, out, only=["ablate/"])
    (out / "study_state.json").write_text(json.dumps({"status": "done", "steps": first}))


def test_a_changed_ablation_reruns_only_that_step(tiny):
    root, spec, out, res, model, data = tiny
    s = yaml.safe_load(spec.read_text())
    s["ablations"][0]["sweeps"] = ["components"]
    spec3 = root / "spec3.yaml"
    spec3.write_text(yaml.safe_dump(s))
    again = run_study(spec3, out)
    status = {k.split("/")[0]: v.status for k, v in again.outcomes.items()}
    assert status["train"] == "cached" and status["ablate"] == "ok" and status["analyze"] == "cached"
    assert (out / "study.previous.yaml").is_file()


def test_report_has_every_section(tiny):
    root, spec, out, *_ = tiny
    from lorank.report import build_report

    page = build_report(out)
    html = page.read_text()
    assert "<td>r4-mha-s42</td>" in html and "<td>mha-only</td>" in html  # retrained beside inference-time
    for title in ("Checkpoint evolution", "LoRA rank", "MHA vs MLP", "Layer importance", "Projection importance",
                  "Retrained vs inference-time",
                  "Adapter analysis", "Configs and software", "data:image/png;base64"):
        assert title in html, title
    md = (out / "report" / "tables.md").read_text()
    assert "| rank |" in md and "% recovered" in md
    # the paper's five findings, tested on this (tiny, noisy) study: findings.json beside results.csv
    assert "Findings vs the paper" in html and "| the paper's claim |" in md
    findings = json.loads((out / "findings.json").read_text())
    assert not (out / "report" / "findings.json").exists() and "../findings.json" in html
    assert [f["finding"] for f in findings] == [1, 2, 3, 4, 5]
    assert all(f["verdict"] in ("holds", "does not hold", "inconclusive") and f["p_values"] for f in findings)
    # the same table as Markdown, for a README, through the CLI
    from typer.testing import CliRunner

    from lorank.cli import app

    res = CliRunner().invoke(app, ["findings", str(out), "--md", str(root / "findings.md")])
    assert res.exit_code == 0, res.output
    table = (root / "findings.md").read_text()
    assert table.startswith("### What the study finds") and table.count("\n| ") >= 6 and table in res.output
    # a copy an older lorank wrote into report/ is removed, not left to go stale beside the new one
    (out / "report" / "findings.json").write_text("[]")
    assert CliRunner().invoke(app, ["findings", str(out)]).exit_code == 0
    assert not (out / "report" / "findings.json").exists() and json.loads((out / "findings.json").read_text())
    pngs = list((out / "report").glob("*.png"))
    assert len(pngs) >= 4 and all(p.stat().st_size > 5000 for p in pngs)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_report_renders_in_headless_chromium(tiny):
    root, spec, out, *_ = tiny
    exe = _chromium()
    if exe is None:
        pytest.skip("Debian `chromium` is not installed (apt-get install chromium); .ci/run installs it")
    from lorank.report import build_report

    page = build_report(out)
    shot = root / "report.png"
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,2000"]
    proc = subprocess.run(args + [f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000, proc.stderr[-2000:]
    dom = subprocess.run(args + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "<h2>LoRA rank</h2>" in dom and dom.count("<img") >= 4
    assert "<h2>Findings vs the paper</h2>" in dom
    # the screenshot is not blank: many distinct colours (text, plots)
    from PIL import Image

    img = Image.open(shot).convert("RGB").resize((320, 500))
    assert len(img.getcolors(maxcolors=1_000_000) or []) > 50


def test_a_failing_run_is_recorded_and_the_rest_goes_on(tmp_path):
    data = make_trec_dir(tmp_path / "data", n_queries=3, n_cands=6)
    good = save_tiny_model(tmp_path / "model")
    spec = _spec(tmp_path, good, data, models=[str(good), str(tmp_path / "no-such-model")],
                 grid=[{"rank": [4]}], ablations=[{"runs": {"rank": 4}, "sweeps": ["components"], "eval": str(data),
                                                   "depth": 6}], analyses=[])
    s = yaml.safe_load(spec.read_text())
    s["train"]["checkpoints"] = {"steps": "1"}
    s["train"]["max_steps"] = 1
    spec.write_text(yaml.safe_dump(s))
    res = run_study(spec, tmp_path / "out")
    build_report(tmp_path / "out")
    st = {k: v.status for k, v in res.outcomes.items()}
    bad = [k for k in st if "no-such-model" in k]
    assert all(st[k] in ("failed", "skipped") for k in bad) and any(st[k] == "failed" for k in bad)
    assert all(v == "ok" for k, v in st.items() if k not in bad)
    assert (tmp_path / "out" / "failures.txt").is_file()
    assert "failed or skipped" in (tmp_path / "out" / "report" / "index.html").read_text()


def test_validation_lists_every_problem_at_once(tmp_path):
    data = make_trec_dir(tmp_path / "data", n_queries=2, n_cands=4)
    model = save_tiny_model(tmp_path / "model")
    spec = _spec(tmp_path, model, data,
                 grid=[{"rank": [0, 4]}, {"projections": [["nope_proj"]]}],
                 ablations=[{"runs": {"rank": 99}, "sweeps": ["bogus"]}],
                 analyses=[{"kind": "compare", "runs": {"rank": 4}, "against": {"rank": 77}}])
    s = yaml.safe_load(spec.read_text())
    s["train"]["data"].append({"kind": "tevatron", "path": str(tmp_path / "missing.jsonl")})
    spec.write_text(yaml.safe_dump(s))
    with pytest.raises(ConfigError) as e:
        build_plan(load_spec(spec), spec)
    msg = str(e.value)
    assert len(e.value.problems) >= 4, msg
    for needle in ("rank", "bogus", "matches no run", "missing.jsonl"):
        assert needle in msg, needle


def test_bad_yaml_types_are_config_errors(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("name: x\nmodels: 3\ntrain: [1]\ngrid: {rank: 1}\n")
    with pytest.raises(ConfigError) as e:
        load_spec(f)
    assert len(e.value.problems) >= 2


def test_presets_validate_with_dry_run(monkeypatch):
    from lorank.study import find_spec

    presets = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "studies").glob("*.yaml"))
    assert {"demo", "paper-cpu", "paper-7b", "paper-smollm2-cpu-seeds", "views-smollm2-cpu"} <= set(presets)
    for name in presets:  # every preset shipped, so a new one cannot land unplanned
        spec = load_spec(find_spec(name))
        plan = build_plan(spec, name, check_data=name != "paper-7b", device="cuda" if name == "paper-7b" else "cpu")
        assert plan.steps and plan.estimate_s > 0
    p7 = build_plan(load_spec(find_spec("paper-7b")), device="cuda")
    assert len(p7.runs) == 18 and {r.train_config["group_size"] for r in p7.runs} == {16}
    assert {r.train_config["batch_queries"] * r.train_config["grad_accum"] for r in p7.runs} == {64}
    assert p7.estimate_s < 100 * 3600
    # the demo's price, whatever CPU runs this: on a bf16 CPU (measured 4.7 min) and on an AVX2-only one in fp32
    # (measured 16.8 min: results/demo_timing.json)
    for flag, limit in (("1", 10 * 60), ("0", 25 * 60)):
        monkeypatch.setenv("LORANK_BF16", flag)
        demo = build_plan(load_spec(find_spec("demo")), device="cpu")
        assert demo.estimate_s < limit, flag


def test_an_interrupted_ablation_step_keeps_its_partial_work_and_a_stale_one_does_not(tiny, tmp_path):
    from lorank.layout.study import STEP_MARKER
    from lorank.study.executor import PARTIAL

    root, spec, out, res, *_ = tiny
    study = tmp_path / "study"
    shutil.copytree(out, study)
    again = run_study(spec, study)  # the study as the spec now says (an earlier test may change it)
    step = next(s for s in again.plan.steps if s.kind == "ablate")
    d = study / step.out_dir
    for hash_, kept in ((step.hash, True), ("0" * 12, False)):
        (d / STEP_MARKER).unlink()  # the step did not finish...
        (d / PARTIAL).write_text(json.dumps({"step_id": step.step_id, "hash": hash_}))
        (d / "sentinel").write_text("work of the interrupted call")
        status = {k: v.status for k, v in run_study(spec, study).outcomes.items()}
        assert status[step.step_id] == "ok" and (d / STEP_MARKER).is_file() and not (d / PARTIAL).exists()
        assert (d / "sentinel").exists() == kept  # ...of this hash: kept (its sweeps go on); of another: cleared
        (d / "sentinel").unlink(missing_ok=True)


def test_a_step_stopped_by_sigterm_is_recorded_as_interrupted_naming_the_signal(tiny, tmp_path, monkeypatch):
    """A SIGTERM'd grid run (resumable from its checkpoint) used to show in the report's overview as 'failed', in
    red, with 'interrupted (Ctrl-C)'. It is its own status, the signal named, and the report says it resumes."""
    import signal

    import lorank.study.executor as executor
    from lorank.layout.study import STEP_MARKER
    from lorank.report import build_report

    root, spec, out, *_ = tiny
    study = tmp_path / "study"
    shutil.copytree(out, study)
    plan = run_study(spec, study).plan  # the spec as it now reads (an earlier test may change it)
    step = next(s for s in plan.steps if s.kind == "ablate")
    (study / step.out_dir / STEP_MARKER).unlink()

    def stopped(*a, **k):
        raise executor.StepInterrupted(signal.SIGTERM)

    monkeypatch.setattr(executor, "run_step_process", stopped)
    with pytest.raises(KeyboardInterrupt):
        run_study(spec, study, only=[step.step_id])
    state = json.loads((study / "study_state.json").read_text())
    assert state["status"] == "interrupted"
    rec = state["steps"][step.step_id]
    assert rec["status"] == "interrupted" and rec["detail"].startswith("stopped by SIGTERM; re-run")
    page = build_report(study).read_text()
    assert "1 interrupted (resumable)" in page and "failed or skipped" not in page
    assert "Interrupted steps" in page and "stopped by SIGTERM" in page


def test_terminate_as_interrupt_names_the_signal_that_stopped_it():
    import os
    import signal
    import time

    from lorank.study.executor import StepInterrupted, interruption, terminate_as_interrupt

    for sig in (signal.SIGTERM, signal.SIGINT):
        with pytest.raises(StepInterrupted) as e:
            with terminate_as_interrupt():
                os.kill(os.getpid(), sig)
                time.sleep(5)
        assert e.value.signum == sig and isinstance(e.value, KeyboardInterrupt)
        assert interruption(e.value).startswith(f"stopped by {signal.Signals(sig).name};")
    assert interruption(KeyboardInterrupt()).startswith("stopped by SIGINT;")  # Ctrl-C outside the context


def test_a_compare_figure_names_both_sides(tmp_path):
    from types import SimpleNamespace

    from lorank.report.dissection_sections import analysis_section
    from lorank.study.plan import Step

    (tmp_path / "a" / "0").mkdir(parents=True)
    (tmp_path / "a" / "0" / "compare_grid.png").write_bytes(b"\x89PNG")
    (tmp_path / "report").mkdir()
    step = Step("analyze/compare/r1-all~r32-all/0", "analyze", "r1-all", {"kind": "compare", "against": "r32-all"},
                "a/0", "h")
    ctx = SimpleNamespace(plan=SimpleNamespace(steps=[step], adapters={}), study_dir=tmp_path, out=tmp_path / "report")
    sec = analysis_section(ctx)
    assert [c for c, _ in sec.images] == ["compare — run r1-all vs run r32-all: compare_grid"]
    assert "Dissects</b>: run r1-all; run r32-all." in sec.text


def test_a_dry_run_that_a_real_run_could_not_follow_exits_2_naming_the_expanded_path(tmp_path, monkeypatch):
    """`paper-7b --dry-run` used to exit 0 with `${LORANK_DATA}` unexpanded in its warning."""
    from typer.testing import CliRunner

    from lorank.cli import app

    monkeypatch.delenv("LORANK_DATA", raising=False)
    (tmp_path / "data").mkdir()
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nmodels: [smollm2-135m]\ndata_root: " + str(tmp_path / "data") + "\n"
                    "train: {data: [{kind: tevatron, path: '${LORANK_DATA}/aug/train.jsonl'}], max_steps: 2}\n"
                    "lora: {rank: 8}\ngrid: [{rank: [8]}]\n")
    res = CliRunner().invoke(app, ["study", str(spec), "--dry-run", "-o", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    flat = "".join(res.output.split())     # rich wraps long paths anywhere
    assert "${LORANK_DATA}" not in flat and str(tmp_path / "data" / "aug" / "train.jsonl") in flat
    assert "arealrunherewouldstop" in flat and "--dataor$LORANK_DATA" in flat
