"""``lorank demo`` (lorank.demo): its spec dissects the shipped reference adapter on the slices that were measured
(results/demo_slice.json), the committed studies are read as committed, and the whole job, run on a tiny
random-init model and a tiny adapter standing in for the reference one, writes a report that opens with its
takeaways, shows the reranker against BM25 and the committed findings, and labels its training a smoke check."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from lorank import demo
from lorank.study import build_plan, find_spec, load_spec
from tests.shared_paths import needs_data
from tests.tinydata import make_trec_dir, save_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_spec_dissects_the_shipped_reference_adapter():
    spec = load_spec(find_spec("demo"))
    assert spec.adapters == {demo.ADAPTER_NAME: demo.REFERENCE_ADAPTER}
    assert demo.find_reference_adapter() == ROOT / demo.REFERENCE_ADAPTER  # shipped with the repository
    assert spec.ablations and all(a.adapter == demo.ADAPTER_NAME and a.runs is None for a in spec.ablations)
    assert {s for a in spec.ablations for s in a.sweeps} >= {"components", "layer-windows"}
    assert spec.ablations[0].sweeps[0] == "components"  # its unablated run is the reranker the demo puts against BM25
    assert {a.eval for a in spec.ablations} == {"dl19"}
    assert spec.analyses and all(a.adapter == demo.ADAPTER_NAME for a in spec.analyses)
    plan = build_plan(spec, find_spec("demo"), check_data=False, device="cpu")
    assert not [s for s in plan.steps if s.pending] and len(plan.runs) == 1  # one smoke-check training run
    assert plan.runs[0].train_config["max_steps"] <= 20


def test_the_demo_slice_is_the_one_measured_to_show_its_main_contrasts_within_the_budget():
    """studies/demo.yaml's slice is the one results/demo_slice.json picks: re-scored there from the committed
    study's own ablation runs, the reranker beats BM25 on it, and LoRA off, MLP-only and every layer window are
    significantly below the full adapter, with the most room of the slices the demo's time budget allows."""
    spec = load_spec(find_spec("demo"))
    measured = json.loads((ROOT / "results" / "demo_slice.json").read_text())
    (step,) = spec.ablations
    picked = measured["picked"]
    assert (picked["queries"], picked["depth"]) == (step.max_queries, step.depth)
    assert picked["forwards"] <= picked["max_forwards"] and picked["largest_main_p"] < 0.05
    for sweep in step.sweeps:
        (chosen,) = [s for s in measured["sweeps"][sweep]["slices"] if s["chosen"]]
        assert (chosen["queries"], chosen["depth"]) == (step.max_queries, step.depth), sweep
        c = chosen["configs"]
        assert c["full"]["p_vs_bm25"] < 0.05 and c["full"]["ndcg_cut_10"] > c["full"]["bm25"]
        main = ["none", "mlp-only"] if sweep == "components" else [k for k in c if k.startswith(("none", "only_L"))]
        assert len(main) >= 2 and all(c[k]["significant"] for k in main), {k: c[k] for k in main}


def test_the_committed_studies_are_read_as_committed(tmp_path: Path):
    cpu = demo.committed_study(ROOT / demo.COMMITTED_STUDIES["cpu"])
    committed = json.loads((ROOT / demo.COMMITTED_STUDIES["cpu"] / "findings.json").read_text())
    assert cpu["exists"] and cpu["findings"] == committed and cpu["state"]["name"] == "paper-smollm2-cpu"
    # a snapshot without findings.json: how far it is, from its state and its spec
    d = tmp_path / "snap"
    d.mkdir()
    (d / "study.yaml").write_text((ROOT / demo.COMMITTED_STUDIES["cpu"] / "study.yaml").read_text())
    steps = {"train/a": {"status": "ok"}, "train/b": {"status": "interrupted"}, "ablate/x": {"status": "ok"}}
    (d / "study_state.json").write_text(json.dumps({"status": "interrupted", "updated": "2026-01-01T00:00:00",
                                                    "steps": steps}))
    st = demo.committed_study(d)
    assert st["findings"] is None
    assert st["state"]["runs_done"] == 1 and st["state"]["steps_done"] == 2 and st["state"]["runs_planned"] == 6
    assert demo.committed_study(tmp_path / "absent") == {"dir": str(tmp_path / "absent"), "exists": False}


def _tiny_reference(root: Path, model: Path, data: Path) -> Path:
    from lorank.export import export_adapter
    from lorank.train.config import TrainConfig
    from lorank.train.run import train

    cfg = TrainConfig.from_dict({"model": str(model), "dtype": "fp32", "data": [{"kind": "trec", "path": str(data)}],
                                 "group_size": 4, "batch_queries": 1, "max_steps": 2, "lr": 1e-2,
                                 "lora": {"rank": 2, "alpha": 4, "dropout": 0.0}, "checkpoints": {"steps": "2"},
                                 "output_dir": str(root / "ref-run")})
    train(cfg, progress=False)
    return export_adapter(root / "ref-run", root / "adapters" / "tiny-ref", name="tiny-ref")


@needs_data  # the demo's BM25 baseline reads DL19 and DL20
def test_the_demo_on_a_tiny_model_writes_a_report_that_opens_with_its_takeaways(tmp_path: Path):
    from rich.console import Console

    data = make_trec_dir(tmp_path / "data", n_queries=5, n_cands=8)
    model = save_tiny_model(tmp_path / "model")
    ref = _tiny_reference(tmp_path, model, data)
    spec = tmp_path / "demo.yaml"
    train = {"data": [{"kind": "trec", "path": str(data)}], "group_size": 4, "batch_queries": 1, "max_steps": 2,
             "checkpoints": {"steps": "1,2"}, "eval": {"sets": [str(data)], "depth": 6, "max_queries": 3}}
    spec.write_text(yaml.safe_dump({
        "name": "tiny-demo", "models": [str(model)], "train": train, "lora": {"rank": 2, "alpha": 4, "dropout": 0.0},
        "adapters": {demo.ADAPTER_NAME: str(ref)},
        "ablations": [{"adapter": demo.ADAPTER_NAME, "sweeps": ["components"], "eval": str(data), "max_queries": 4,
                       "depth": 6},
                      {"adapter": demo.ADAPTER_NAME, "sweeps": ["layer-windows"], "window": 1, "eval": str(data),
                       "max_queries": 4, "depth": 5}],
        "analyses": [{"kind": "weights", "adapter": demo.ADAPTER_NAME}],
        "report": {"reference": {"rank": 2, "components": "all"}}}))
    out = tmp_path / "out"
    res = demo.run_demo(out, spec=str(spec), console=Console(quiet=True))
    assert not res.failed, res.outcomes
    fig = json.loads((out / demo.FIGURES_FILE).read_text())
    sl = fig["slice_vs_bm25"]
    assert (sl["queries"], sl["depth"], sl["role"]) == (4, 6, "dev") and set(sl["tests"]) == set(demo.MEASURES)
    assert len(sl["per_query_ndcg_cut_10"]) == 4 and set(fig["dissection"]) == {"components", "layer-windows"}
    assert fig["committed_studies"]["cpu"]["findings"] and fig["smoke_training"][0]["max_steps"] == 2
    html = res.report.read_text()
    titles = [t.split("</h2>")[0] for t in html.split("<h2>")[1:]]
    assert titles[:2] == ["What to take away", "The reference reranker vs BM25"]
    assert titles.index("MHA vs MLP") < titles.index("Smoke check of training") < titles.index(
        "The committed CPU study&#x27;s findings")
    left_out = {"LoRA rank", "Retrained vs inference-time", "Findings vs the paper", "Projection importance"}
    assert not left_out & set(titles)
    t = sl["tests"]["ndcg_cut_10"]
    assert f"nDCG@10 {t['reranker']:.3f} against BM25's {t['bm25']:.3f}" in html
    assert not (out / "findings.json").exists()  # the study's own findings are not computed: the committed ones shown
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["wall_s"] > 0 and summary["precision"]["precision"] in ("bf16", "fp32")
    # the same command again: every step is skipped, the report is rewritten
    again = demo.run_demo(out, spec=str(spec), console=Console(quiet=True))
    assert {o.status for o in again.outcomes.values()} <= {"cached"}


def test_without_the_reference_adapter_there_are_no_adapter_figures(tmp_path: Path):
    assert demo.find_reference_adapter([tmp_path]) is None
    assert demo.adapter_figures(None) == [] and demo.adapter_figures(tmp_path) == []
    rows = demo.adapter_figures(ROOT / demo.REFERENCE_ADAPTER)
    assert {r["role"] for r in rows} == {"dev", "test"} and all(r["p"] is not None for r in rows)


def test_the_demo_timing_block_shows_the_measurements_and_scales_bf16_for_avx2(tmp_path: Path):
    from lorank.report.markdown_blocks import demo_timing_block

    summary = {"wall_s": 290.0, "steps_s": {"train/r": 20.0, "ablate/a/0": 250.0, "analyze/weights/a/0": 5.0}}
    run = {"returncode": 0, "wall_s": 300.0, "cpu": "Some CPU", "cores": 2, "date": "2026-01-01 00:00",
           "load_before": [0.1, 0.2, 0.3], "summary": summary}
    f = tmp_path / "t.json"
    est = {"bf16": {"train": 30.0, "ablate": 500.0, "analyze": 10.0},
           "fp32_avx2": {"train": 60.0, "ablate": 2000.0, "analyze": 10.0}}
    f.write_text(json.dumps({"bf16": run, "plan_estimates_s": est}))
    bf16, avx2 = demo_timing_block(f).splitlines()[2:]
    assert "| bf16 | measured: Some CPU, 2 cores" in bf16 and "**5.0 min**" in bf16
    assert "| 20 s | 4.2 min | 5 s | 25 s |" in bf16
    # train x2, ablate x4, analyze x1, the rest (25 s) as measured: 40 + 1000 + 5 + 25 = 1070 s
    assert "estimated for an AVX2-only CPU" in avx2 and "**17.8 min**" in avx2
    assert "| 40 s | 16.7 min | 5 s | 25 s |" in avx2
    # measured on an AVX2-only CPU too: its own row, beside the estimate it checks
    slow = dict(run, cpu="AMD EPYC (AVX2)", wall_s=1200.0,
                summary={"wall_s": 1180.0,
                         "steps_s": {"train/r": 60.0, "ablate/a/0": 1080.0, "analyze/weights/a/0": 6.0}})
    f.write_text(json.dumps({"bf16": run, "fp32_avx2": slow, "plan_estimates_s": est}))
    bf16, measured, estimated = demo_timing_block(f).splitlines()[2:]
    assert "| fp32 | measured on an AVX2-only CPU: AMD EPYC (AVX2), 2 cores" in measured and "**20.0 min**" in measured
    assert "| 60 s | 18.0 min | 6 s | 54 s |" in measured and "estimated for an AVX2-only CPU" in estimated


def test_the_docs_timing_table_is_the_one_its_file_gives():
    from lorank.report.markdown_blocks import blocks, render_blocks

    text = (ROOT / "docs" / "studies.md").read_text()
    assert ("demo-timing", "../results/demo_timing.json") in blocks(text)
    assert render_blocks(text, ROOT / "docs") == text, "docs/studies.md's timing differs: lorank readme docs/studies.md"
