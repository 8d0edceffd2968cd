"""A study that dissects an adapter it did not train (``adapters:`` + ``adapter:`` in a step), on a tiny
random-init model: validation, the steps, their rows in results.csv, resume, the report (the demo, which
dissects the shipped reference adapter this way: tests/test_demo.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lorank.errors import ConfigError
from lorank.study import build_plan, load_results, load_spec, run_study
from tests.tinydata import make_trec_dir, save_tiny_model


def _export_tiny_adapter(root: Path, model: Path, data: Path, **train_fields) -> Path:
    """Train 1 step of a rank-2 adapter and export it as an adapter folder (lorank export-adapter);
    `train_fields`: more TrainConfig fields (e.g. ``head_init="yes_no"``)."""
    from lorank.export import export_adapter
    from lorank.train.config import TrainConfig
    from lorank.train.run import train

    cfg = TrainConfig.from_dict({"model": str(model), "dtype": "fp32", "data": [{"kind": "trec", "path": str(data)}],
                                 "group_size": 4, "batch_queries": 1, "max_steps": 1, "lr": 1e-3,
                                 "lora": {"rank": 2, "alpha": 4, "dropout": 0.0}, "checkpoints": {"steps": "1"},
                                 "output_dir": str(root / "ext-run"), **train_fields})
    train(cfg, progress=False)
    return export_adapter(root / "ext-run", root / "adapters" / "tiny-ref", name="tiny-ref")


def _spec(root: Path, model: Path, data: Path, adapter: Path | str, **extra) -> Path:
    spec = {
        "name": "tiny-ext",
        "models": [str(model)],
        "train": {"data": [{"kind": "trec", "path": str(data)}], "group_size": 4, "batch_queries": 1,
                  "max_steps": 1, "checkpoints": {"steps": "1"}, "eval": {"sets": [str(data)], "depth": 6}},
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0},
        "grid": [{"rank": [4]}],
        "adapters": {"ref": str(adapter)},
        "ablations": [{"adapter": "ref", "sweeps": ["components"], "eval": str(data), "depth": 6}],
        "analyses": [{"kind": "weights", "adapter": "ref"}],
        "report": {"reference": {"rank": 4, "components": "all"}},
    }
    spec.update(extra)
    f = root / "spec.yaml"
    f.write_text(yaml.safe_dump(spec))
    return f


@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    root = tmp_path_factory.mktemp("ext")
    data = make_trec_dir(root / "data", n_queries=3, n_cands=6)
    model = save_tiny_model(root / "model")
    adapter = _export_tiny_adapter(root, model, data)
    spec = _spec(root, model, data, adapter)
    out = root / "out"
    res = run_study(spec, out)
    return root, spec, out, res, model, data, adapter


def test_steps_on_the_external_adapter_run_and_land_in_results(ext):
    root, spec, out, res, model, data, adapter = ext
    assert not res.failed, res.outcomes
    ids = set(res.outcomes)
    assert {"ablate/adapter-ref/0", "analyze/weights/adapter-ref/0"} <= ids
    assert (out / "ablations" / "adapter-ref" / "0" / "ablations.json").is_file()
    assert list((out / "analyses" / "weights" / "adapter-ref" / "0").glob("*.png"))
    # nothing of the study's own run was ablated: the ablation dissects the exported adapter (rank 2)
    assert not (out / "ablations" / res.plan.runs[0].run_id).exists()
    df = load_results(out)
    ab = df[df["source"] == "ablation"]
    assert len(ab) and set(ab["run_id"]) == {"adapter:ref"}
    assert {"full", "none", "mha-only", "mlp-only"} <= set(ab["config"])
    assert set(ab["rank"].astype(int)) == {2} and set(ab["model"]) == {str(model)}
    assert set(ab["step"].astype(int)) == {1}
    # the study's own run keeps its checkpoint rows
    ck = df[df["source"] == "checkpoint"]
    assert set(ck["run_id"]) == {res.plan.runs[0].run_id}


def test_a_rerun_skips_the_adapter_steps_and_a_changed_adapter_redoes_them(ext, tmp_path):
    root, spec, out, res, model, data, adapter = ext
    again = run_study(spec, out)
    assert {o.status for o in again.outcomes.values()} == {"cached"}
    # the hash follows the adapter's contents, not its folder's path: a copy elsewhere is the same adapter
    import shutil

    copy = tmp_path / "copied"
    shutil.copytree(adapter, copy)
    p1 = build_plan(load_spec(spec), spec, check_data=False)
    p2 = build_plan(load_spec(_spec(tmp_path, model, data, copy)), check_data=False)
    h = {s.step_id: s.hash for s in p1.steps}
    assert all(h[s.step_id] == s.hash for s in p2.steps)
    meta = copy / "lorank_meta.json"
    meta.write_text(meta.read_text().replace('"step": 1', '"step": 7'))
    p3 = build_plan(load_spec(_spec(tmp_path, model, data, copy)), check_data=False)
    changed = {s.step_id for s in p3.steps if h[s.step_id] != s.hash}
    assert changed == {"ablate/adapter-ref/0", "analyze/weights/adapter-ref/0"}


def test_report_names_the_dissected_adapter_and_keeps_the_trained_curves(ext):
    root, spec, out, *_ = ext
    from lorank.report import build_report

    html = build_report(out).read_text()
    md = (out / "report" / "tables.md").read_text()
    who = f"adapter ref ({ext[6]}, {ext[4]}, trained on trec:data, step 1)"
    assert f"components on {who}" in md  # the MHA vs MLP ablation table
    # the section texts say it: MHA vs MLP (components sweep) and the adapter analysis
    mha = md.split("## MHA vs MLP")[1].split("## ")[0]
    analysis = md.split("## Adapter analysis")[1].split("## ")[0]
    assert f"Dissects: {who}." in mha and f"Dissects: {who}." in analysis
    assert f"weights — {who}" in analysis
    assert "Checkpoint evolution" in html and "of the study's own training runs" in html
    assert md.count("![") >= 3  # curves, ablation plot, weight plots


def _problems(tmp_path: Path, model: Path, data: Path, adapter: Path | str, **extra) -> str:
    spec = _spec(tmp_path, model, data, adapter, **extra)
    with pytest.raises(ConfigError) as e:
        build_plan(load_spec(spec), spec, check_data=False)
    return str(e.value)


def test_validation_of_adapter_steps(ext, tmp_path):
    root, spec, out, res, model, data, adapter = ext
    both = _problems(tmp_path, model, data, adapter,
                     ablations=[{"adapter": "ref", "runs": {"rank": 4}, "sweeps": ["components"], "eval": str(data)}],
                     analyses=[{"kind": "weights", "adapter": "nope"},
                               {"kind": "compare", "adapter": "ref"}])
    assert "ablations[0]: give either runs" in both and "not both" in both
    assert "analyses[0].adapter: unknown adapter 'nope' (adapters: ref)" in both
    assert "analyses[1]: compare on the external adapter 'ref' needs `against`" in both
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "adapters.ref:" in _problems(tmp_path, model, data, empty)
    # compare with `against` (the adapter vs a study run) is planned, and needs that run's training
    ok = _spec(tmp_path, model, data, adapter, analyses=[{"kind": "compare", "adapter": "ref",
                                                          "against": {"rank": 4}}])
    plan = build_plan(load_spec(ok), ok, check_data=False)
    cmp = next(s for s in plan.steps if s.kind == "analyze")
    assert cmp.step_id.startswith("analyze/compare/adapter-ref~") and cmp.needs == [f"train/{plan.runs[0].run_id}"]


def test_a_missing_adapter_folder_makes_its_steps_pending_not_the_study_fail(ext, tmp_path):
    root, spec, out, res, model, data, adapter = ext
    later = tmp_path / "adapters" / "not-yet"
    f = _spec(tmp_path, model, data, later)
    plan = build_plan(load_spec(f), f, check_data=False)
    pending = [s for s in plan.steps if s.pending]
    assert {s.step_id for s in pending} == {"ablate/adapter-ref/0", "analyze/weights/adapter-ref/0"}
    assert all("not found" in s.pending and "not-yet" in s.pending and "re-running" in s.pending for s in pending)
    assert any("adapter 'ref'" in n and "pending" in n for n in plan.notes)
    assert not plan.steps[0].pending and "ref" in plan.pending_adapters and not plan.adapters
    study = tmp_path / "out"
    first = run_study(f, study)
    assert not first.failed and sorted(first.pending) == sorted(s.step_id for s in pending)
    assert first.outcomes[plan.steps[0].step_id].status == "ok"
    import json
    import shutil

    state = json.loads((study / "study_state.json").read_text())
    assert state["status"] == "done-with-pending" and state["steps"]["ablate/adapter-ref/0"]["status"] == "pending"
    # the folder appears (the adapter finished training): the same command runs the waiting steps
    shutil.copytree(adapter, later)
    again = run_study(f, study)
    st = {k: v.status for k, v in again.outcomes.items()}
    assert st == {plan.steps[0].step_id: "cached", "ablate/adapter-ref/0": "ok", "analyze/weights/adapter-ref/0": "ok"}
    assert (study / "ablations" / "adapter-ref" / "0" / "ablations.json").is_file()


def test_findings_read_the_ablations_of_the_external_adapter(ext):
    root, spec, out, res, *_ = ext
    from lorank.report.findings_data import ablation_subject
    from lorank.report.findings_section import study_findings
    from lorank.report.context import reference_run

    plan = build_plan(load_spec(spec), spec, check_data=False)
    assert ablation_subject(plan, reference_run(plan)) == "adapter:ref"
    f3 = {f["finding"]: f for f in study_findings(plan, out)}[3]
    assert f3["evidence"]["ablations_of"] == "adapter:ref" and "ablation_gate" in f3["evidence"]
