"""Across families (lorank.report.families, `lorank families`): the committed SmolLM2 study beside a synthetic
18-layer family (a copy of it whose layer windows are an 18-layer model's, whose model is Gemma 3 270M, with no
leave-one-layer-out sweep) and beside a tiny study run here: one column per family, each verdict what that study's
findings give, windows placed on depth by their own model's layer count, "not run" where a family lacks a sweep,
the figure written, the README block kind rendered and its missing study named."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lorank.cli import app
from lorank.errors import ConfigError
from lorank.report.families import (FIGURE, JSON_FILE, MD_FILE, NOT_RUN, depth, families_markdown, families_table,
                                    read_family, window_profile, write_families)
from lorank.report.markdown_blocks import render_blocks

ROOT = Path(__file__).resolve().parents[2]
SMOL = ROOT / "results" / "study_smollm2_cpu"
#: the committed windows (window 11 on 30 layers) -> an 18-layer model's (window 7: starts 0, 3, 6, 9, 11)
GEMMA_WINDOWS = {"only L0-10": "only L0-6", "only L5-15": "only L3-9", "only L10-20": "only L6-12",
                 "only L15-25": "only L9-15", "only L19-29": "only L11-17"}


@pytest.fixture(scope="module")
def gemma_like(tmp_path_factory) -> Path:
    """A copy of the committed study's spec, findings and ablation results as an 18-layer 'family'."""
    d = tmp_path_factory.mktemp("families") / "study_gemma_like"
    d.mkdir()
    spec = yaml.safe_load((SMOL / "study.yaml").read_text())
    spec.update(name="gemma-like", models=["gemma3-270m"], analyses=[])  # its compare would name a smollm2 run
    (d / "study.yaml").write_text(yaml.safe_dump(spec))
    shutil.copy(SMOL / "findings.json", d / "findings.json")
    for f in (SMOL / "ablations").rglob("ablations.json"):
        data = json.loads(f.read_text())
        if "layers-leave-one-out" in data["sweeps"]:
            continue  # this family did not run that sweep
        for row in data["sweeps"].get("layer-windows", {}).get("rows", []):
            row["config"] = GEMMA_WINDOWS.get(row["config"], row["config"])
        out = d / f.relative_to(SMOL)
        out.parent.mkdir(parents=True)
        out.write_text(json.dumps(data))
    return d


def _verdicts(table, label):
    return [next(r for r in f["rows"] if r["figure"] == "verdict (test)")["cells"][label]["text"]
            for f in table["findings"]]


def test_one_column_per_family_and_each_verdict_is_its_studys(gemma_like):
    smol, gemma = read_family(SMOL), read_family(gemma_like)
    assert (smol.model, smol.n_layers, gemma.model, gemma.n_layers) == ("smollm2-135m", 30, "gemma3-270m", 18)
    table = families_table([smol, gemma])
    assert [f["label"] for f in table["families"]] == [smol.label, gemma.label] and table["same_rules"]
    committed = json.loads((SMOL / "findings.json").read_text())
    for label in (smol.label, gemma.label):
        assert _verdicts(table, label) == [f"**{f['verdict']}** (no test set)" for f in committed]
    for f in table["findings"]:
        for row in f["rows"]:
            assert set(row["cells"]) == {smol.label, gemma.label}, row
            for cell in row["cells"].values():  # every figure says its role, sets and queries
                assert cell["text"] == NOT_RUN or "role" in cell or row["figure"] in ("verdict (test)", "on dev")
                if "role" in cell:
                    assert (cell["role"], cell["sets"], cell["n_queries"]) == ("dev", "dl19+dl20", 97), row


def test_pooled_figures_are_the_findings_own(gemma_like):
    """The ablations pooled per query-weighted set agree with the per-query means findings.json holds."""
    smol = read_family(SMOL)
    ev = json.loads((SMOL / "findings.json").read_text())[3]["evidence"]
    pooled = smol.ablations["dev"]
    for config, v in ev["windows"].items():
        assert pooled["layer-windows"][config]["ndcg"] == pytest.approx(v, abs=1e-4)
    for config, v in ev["projections"].items():
        assert pooled["projections"][config]["ndcg"] == pytest.approx(v, abs=1e-4)


def test_windows_are_placed_by_their_own_models_depth(gemma_like):
    smol, gemma = read_family(SMOL), read_family(gemma_like)
    s = {w["config"]: w for w in window_profile(smol, "dev")}
    g = {w["config"]: w for w in window_profile(gemma, "dev")}
    assert list(g) == ["only L0-6", "only L3-9", "only L6-12", "only L9-15", "only L11-17"]
    # the same windows (in order) sit at nearly the same depth in both models: normalised by 30 and by 18
    assert (s["only L10-20"]["centre"], g["only L6-12"]["centre"]) == (round(31 / 60, 4), round(19 / 36, 4))
    assert s["only L19-29"]["end"] == g["only L11-17"]["end"] == 1.0 and g["only L0-6"]["start"] == 0.0
    assert g["only L11-17"]["centre"] == pytest.approx(14.5 / 18, abs=1e-4)  # by 30 it would be 0.483
    assert depth(5, 15, 30) == {"centre": 0.35, "start": round(5 / 30, 4), "end": round(16 / 30, 4)}


def test_a_sweep_a_family_did_not_run_is_not_run(gemma_like):
    table = families_table([read_family(SMOL), read_family(gemma_like)])
    f4 = {r["figure"]: r["cells"] for r in table["findings"][3]["rows"]}
    smol, gemma = (f["label"] for f in table["families"])
    assert f4["leave-one-layer-out: largest drop"][gemma]["text"] == NOT_RUN
    assert f4["leave-one-layer-out: largest drop"][smol]["text"].startswith("without L")
    assert f4["the paper's L5-15"][gemma]["text"] == NOT_RUN  # an 18-layer model's windows of 7 do not hold it
    assert f4["best layer window (depth: centre / layers)"][gemma]["text"].startswith("L6-12: ")


def test_a_family_that_declares_its_window_shows_it_in_the_papers_row(gemma_like, tmp_path):
    """The 18-layer family declares finding 4's window at SmolLM2's L5-15 depth (verdicts.target_window 3-9): its
    L3-9 fills the row of the paper's L5-15, and a window declared per family is not a verdict rule that differs."""
    d = tmp_path / "declared"
    shutil.copytree(gemma_like, d)
    spec = yaml.safe_load((d / "study.yaml").read_text())
    spec["verdicts"] = {**spec.get("verdicts", {}), "target_window": "3-9"}
    (d / "study.yaml").write_text(yaml.safe_dump(spec))
    findings = json.loads((d / "findings.json").read_text())
    for f in findings:
        f["verdict_rules"]["target_window"] = [3, 9]  # as lorank findings records a declared window
    (d / "findings.json").write_text(json.dumps(findings))
    smol, gemma = read_family(SMOL), read_family(d)
    assert (smol.target_window, gemma.target_window) == ((5, 15), (3, 9))
    table = families_table([smol, gemma])
    assert table["same_rules"]
    assert [f["target_window"] for f in table["families"]] == [
        {"layers": [5, 15], **depth(5, 15, 30)}, {"layers": [3, 9], **depth(3, 9, 18)}]
    row = {r["figure"]: r["cells"] for r in table["findings"][3]["rows"]}["the paper's L5-15"]
    assert row[smol.label]["text"].startswith("L5-15: ") and row[gemma.label]["text"].startswith("declared here: L3-9: ")
    md = families_markdown(table)
    assert ("Finding 4's window, declared per family (`verdicts.target_window`; the paper's layers 5-15 of 32): "
            "smollm2-135m L5-15 of 30 layers (depth 0.17-0.53); gemma3-270m L3-9 of 18 layers (depth 0.17-0.56).") in md
    assert "Finding 4's window" not in families_markdown(families_table([smol, read_family(gemma_like)]))


def test_the_cli_writes_tables_json_and_a_figure_with_both_families(gemma_like, tmp_path):
    out = tmp_path / "fam"
    res = CliRunner().invoke(app, ["families", str(SMOL), str(gemma_like), "--out", str(out),
                                   "--md", str(tmp_path / "t.md")])
    assert res.exit_code == 0, res.output
    md = (out / MD_FILE).read_text()
    assert md == (tmp_path / "t.md").read_text() and "| | smollm2-135m | gemma3-270m |" in md
    assert md.count("**Finding ") == 5 and "| leave-one-layer-out: largest drop | without L" in md
    data = json.loads((out / JSON_FILE).read_text())
    assert set(data["profiles"]) == {f["label"] for f in data["families"]}
    png = out / FIGURE
    assert png.stat().st_size > 20_000
    import matplotlib.image

    img = matplotlib.image.imread(str(png))[..., :3]
    r, b = img[..., 0], img[..., 2]
    assert ((b - r) > 0.3).sum() > 200 and ((r - b) > 0.4).sum() > 200  # both families drawn: C0 blue, C1 orange


def test_the_families_block_renders_and_names_a_missing_study(gemma_like, tmp_path):
    text = (f"<!-- lorank:families {SMOL.relative_to(ROOT)},{gemma_like} -->\nstale table\n<!-- /lorank:families -->\n")
    out = render_blocks(text, ROOT)
    assert "stale table" not in out and "(`results/study_smollm2_cpu`)" in out
    assert "| | smollm2-135m | gemma3-270m |" in out and render_blocks(out, ROOT) == out
    missing = "<!-- lorank:families results/study_smollm2_cpu,results/study_gemma3_cpu -->\n<!-- /lorank:families -->\n"
    with pytest.raises(ConfigError, match="study_gemma3_cpu: no such study folder"):
        render_blocks(missing, ROOT)
    with pytest.raises(ConfigError, match="no study folder given"):
        write_families([], tmp_path)


def test_a_tiny_study_beside_the_committed_one_gives_what_lorank_findings_gives(tmp_path):
    """A tiny study run here (a 4-layer model; windows of 2) as the second family: its column's verdicts are what
    `lorank findings` writes for it, its windows sit at depths over 4 layers."""
    from lorank.study import run_study
    from tests.study.test_study import _spec
    from tests.tinydata import make_trec_dir, save_tiny_model

    data = make_trec_dir(tmp_path / "data", n_queries=4, n_cands=8)
    spec = _spec(tmp_path, save_tiny_model(tmp_path / "model"), data, ablations=[
        {"runs": {"rank": 4, "components": "all"}, "sweeps": ["components", "layer-windows"], "window": 2,
         "eval": str(data), "depth": 8}])
    study = tmp_path / "tiny"
    run_study(spec, study)
    res = CliRunner().invoke(app, ["findings", str(study)])
    assert res.exit_code == 0, res.output
    written = json.loads((study / "findings.json").read_text())
    table = write_families([SMOL, study], tmp_path / "fam")
    tiny = table["families"][1]
    assert tiny["n_layers"] == 4 and tiny["n_layers_from"].endswith("config.json")
    assert _verdicts(table, tiny["label"]) == [f"**{f['verdict']}** (no test set)" for f in written]
    wins = table["profiles"][tiny["label"]]
    assert [(w["config"], w["centre"], w["end"]) for w in wins] == [
        ("only L0-1", 0.25, 0.5), ("only L1-2", 0.5, 0.75), ("only L2-3", 0.75, 1.0)]
    f4 = {r["figure"]: r["cells"][tiny["label"]]["text"] for r in table["findings"][3]["rows"]}
    assert f4["leave-one-layer-out: largest drop"] == NOT_RUN and f4["the paper's L5-15"] == NOT_RUN


def test_a_study_without_findings_is_named(tmp_path):
    d = tmp_path / "study"
    d.mkdir()
    shutil.copy(SMOL / "study.yaml", d / "study.yaml")
    with pytest.raises(ConfigError, match=r"findings.json does not exist: run `lorank findings"):
        read_family(d)
    with pytest.raises(ConfigError, match="is not a study directory"):
        read_family(tmp_path)


def test_two_studies_of_one_model_are_told_apart_by_their_study(tmp_path):
    """A seeded re-run beside its single-seed study (one model, two studies): the columns and the figure's legend
    name each study, not the model twice."""
    from lorank.report.families import families_markdown

    d = tmp_path / "rerun"
    d.mkdir()
    spec = yaml.safe_load((SMOL / "study.yaml").read_text())
    spec.update(name="paper-smollm2-cpu-rerun")
    (d / "study.yaml").write_text(yaml.safe_dump(spec))
    shutil.copy(SMOL / "findings.json", d / "findings.json")
    shutil.copytree(SMOL / "ablations", d / "ablations")
    md = families_markdown(families_table([read_family(SMOL), read_family(d)]))
    assert "| | smollm2-135m (paper-smollm2-cpu) | smollm2-135m (paper-smollm2-cpu-rerun) |" in md
