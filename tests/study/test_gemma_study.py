"""A study of a second model family (issue 43): a tiny random-init Gemma 3 text model (4 layers, 3 of them
sliding-window) dissected by the same machinery as the Llama-style SmolLM2: an exported rank-2 adapter ablated with
every sweep the paper's study runs, analysed (weights, probe, patch, compare), the results table, the report and
its findings; then the cross-family table beside a tiny Llama study (6 layers) built the same way, each family's
layer windows placed on depth by its own layer count. Scores are checked against the base and the adapted model
computed here with plain transformers + PEFT (no ablation machinery), so a sweep that silently ablated nothing, or
everything, would fail."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from lorank.ablate.run import run_file_stem
from lorank.data import load_run
from lorank.data.sources import load_eval_data
from lorank.layout.run import config_file
from lorank.layout.study import run_dir
from lorank.models.inputs import PairEncoder
from lorank.report import build_report
from lorank.report.families import write_families
from lorank.study import load_results, run_study
from tests.study.test_external_adapter import _export_tiny_adapter
from tests.tinydata import make_trec_dir, save_tiny_model

SWEEPS = ["components", "projections", "layer-windows", "rank-truncation", "layers-leave-one-out"]
GEMMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GEMMA_LAYERS, LLAMA_LAYERS, WINDOW = 4, 6, 2
TARGET = "1-2"  # the Gemma study's declared finding-4 window: one of its windows of 2
ABLATION_DIR = Path("ablations") / "adapter-ref" / "0"


@dataclass
class Study:
    root: Path
    model: Path
    data: Path
    adapter: Path
    out: Path
    result: object


def _run(root: Path, shape: str, sweeps: list[str], analyses: list[str], bos: bool = False,
         verdicts: dict | None = None, **overrides) -> Study:
    """A tiny saved model of `shape` (`bos`: its tokenizer puts <bos> first), a 1-step rank-2 adapter exported from
    it, and a study with a one-run grid that dissects that adapter (`sweeps`, `analyses`) and writes its report (and
    so its findings, under `verdicts` when given); the yes/no head init throughout, as lorank's CPU recipes use it."""
    data = make_trec_dir(root / "data", n_queries=3, n_cands=6)
    model = save_tiny_model(root / "model", shape, bos=bos, **overrides)
    adapter = _export_tiny_adapter(root, model, data, head_init="yes_no")
    opts = {"probe": {"eval_set": str(data), "max_queries": 3, "depth": 6},
            "patch": {"eval_set": str(data), "max_queries": 3, "depth": 6, "sites": ["layer", "attn", "mlp"]}}
    spec = {
        "name": shape,
        "models": [str(model)],
        "train": {"data": [{"kind": "trec", "path": str(data)}], "group_size": 4, "batch_queries": 1,
                  "max_steps": 1, "checkpoints": {"steps": "1"}, "eval": {"sets": [str(data)], "depth": 6},
                  "head_init": "yes_no"},
        "lora": {"rank": 2, "alpha": 4, "dropout": 0.0},
        "grid": [{"rank": [2]}],
        "adapters": {"ref": str(adapter)},
        "ablations": [{"adapter": "ref", "sweeps": sweeps, "window": WINDOW, "eval": str(data), "depth": 6}],
        "analyses": [{"kind": k, "adapter": "ref", **({"options": opts[k]} if k in opts else {}),
                      **({"against": {"rank": 2}} if k == "compare" else {})} for k in analyses],
        "report": {"reference": {"rank": 2, "components": "all"}},
        **({"verdicts": verdicts} if verdicts else {}),
    }
    f = root / "spec.yaml"
    f.write_text(yaml.safe_dump(spec))
    out = root / "out"
    res = run_study(f, out)
    build_report(out)
    return Study(root, model, data, adapter, out, res)


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> tuple[Study, Study]:
    """Both studies in fp32 whatever the CPU (the step workers inherit the setting), so that their scores can be
    held to the reference computed here in fp32 within float noise."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORANK_BF16", "0")
        return _studies(tmp_path_factory)


def _studies(tmp_path_factory) -> tuple[Study, Study]:
    # Gemma's shape (1 KV head, head_dim 24, 3 sliding layers and a full one), a window shorter than every input
    # (31-63 tokens) so that the sliding layers do mask, and a tokenizer that puts <bos> first, as Gemma's does
    # finding 4's window declared for 4 layers (the paper's 5-15 is past them): verdicts.target_window
    gemma = _run(tmp_path_factory.mktemp("gemma"), "tiny-gemma3", SWEEPS, ["weights", "probe", "patch", "compare"],
                 bos=True, verdicts={"target_window": TARGET}, sliding_window=16)
    llama = _run(tmp_path_factory.mktemp("llama"), "tiny-llama", ["layer-windows"], [],
                 num_hidden_layers=LLAMA_LAYERS)
    return gemma, llama


def _ablations(s: Study) -> dict:
    return json.loads((s.out / ABLATION_DIR / "ablations.json").read_text())


def _run_scores(s: Study, sweep: str, config: str) -> dict[tuple[str, str], float]:
    run = load_run(s.out / ABLATION_DIR / "runs" / sweep / f"{run_file_stem(config)}.run")
    return {(q, e.docid): e.score for q, entries in run.items() for e in entries}


def _reference_scores(s: Study) -> tuple[dict, dict]:
    """(LoRA off with the trained head, the full adapter) of every pair the study scored, computed here with
    transformers + PEFT from the saved model and the exported adapter: no lorank model loading, no masks."""
    tok = AutoTokenizer.from_pretrained(s.model)
    enc = PairEncoder(tok)
    rs = load_eval_data(str(s.data))
    pairs = [(q, e.docid) for q in sorted(rs.run) for e in rs.run[q][:6]]
    seqs = [enc.encode(rs.queries[q], rs.passages[d].text, rs.passages[d].title) for q, d in pairs]

    def scores(model) -> dict:
        model.eval()
        with torch.no_grad():
            return {k: model(input_ids=torch.tensor([ids])).logits.float().item() for k, ids in zip(pairs, seqs)}

    base = AutoModelForSequenceClassification.from_pretrained(s.model, num_labels=1, dtype=torch.float32)
    head = {k: v for k, v in load_file(str(s.adapter / "adapter_model.safetensors")).items() if ".score." in k}
    assert len(head) == 1, head.keys()
    with torch.no_grad():
        base.score.weight.copy_(next(iter(head.values())).float())
    none = scores(base)
    full = scores(PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(s.model, num_labels=1, dtype=torch.float32), s.adapter))
    return none, full


def test_the_gemma_study_runs_every_step(studies):
    gemma, llama = studies
    for s in studies:
        assert not s.result.failed, s.result.outcomes
        assert {o.status for o in s.result.outcomes.values()} == {"ok"}
    assert sorted(gemma.result.outcomes) == sorted([
        f"train/{gemma.result.plan.runs[0].run_id}", "ablate/adapter-ref/0", "analyze/weights/adapter-ref/0",
        "analyze/probe/adapter-ref/1", "analyze/patch/adapter-ref/2",
        f"analyze/compare/adapter-ref~{gemma.result.plan.runs[0].run_id}/3"])
    cfg = json.loads((gemma.model / "config.json").read_text())
    assert cfg["model_type"] == "gemma3_text" and cfg["num_hidden_layers"] == GEMMA_LAYERS
    assert "sliding_attention" in cfg["layer_types"] and "full_attention" in cfg["layer_types"]
    enc = PairEncoder(AutoTokenizer.from_pretrained(gemma.model))
    assert enc.bos == [cfg["bos_token_id"]] == [3]  # <bos>, kept once at the head of each query's shared prefix
    rs = load_eval_data(str(gemma.data))
    lengths = [len(enc.encode(rs.queries[q], rs.passages[e.docid].text)) for q in rs.run for e in rs.run[q]]
    assert min(lengths) > cfg["sliding_window"] == 16  # every input reaches past the window: the sliding layers mask
    # so the study's training took the HF forward (the packed one computes sliding layers as full attention)
    ran = json.loads(config_file(run_dir(gemma.out, gemma.result.plan.runs[0].run_id)).read_text())["execution"]
    assert ran["forward"] == "hf" and "> the sliding window (16 tokens)" in ran["forward_reason"]


def test_every_sweep_has_its_configurations_for_gemmas_layers(studies):
    gemma, _ = studies
    sweeps = {k: [r["config"] for r in v["rows"]] for k, v in _ablations(gemma)["sweeps"].items()}
    assert list(sweeps) == SWEEPS
    ref = ["full", "none"]
    assert sweeps["components"] == ref + ["mha-only", "mlp-only"]
    assert sweeps["projections"] == ref + [f"without {p}" for p in GEMMA_PROJECTIONS] + [
        f"only {p}" for p in GEMMA_PROJECTIONS]
    # windows of 2 on 4 layers, stride 1: the last ends at the last layer; the declared L1-2 is one of them (not
    # scored twice), and no "only L5-15" on a 4-layer model that declares another window
    assert sweeps["layer-windows"] == ref + ["only L0-1", "only L1-2", "only L2-3"]
    (step,) = [s for s in gemma.result.plan.steps if s.kind == "ablate"]
    assert step.payload["target_window"] == [1, 2]
    assert sweeps["rank-truncation"] == ref + ["rank 1"]
    assert sweeps["layers-leave-one-out"] == ref + [f"without L{i}" for i in range(GEMMA_LAYERS)]


def test_none_is_the_base_model_and_full_the_adapter_and_no_ablation_is_a_no_op(studies):
    gemma, _ = studies
    none, full = _reference_scores(gemma)
    gap = max(abs(full[k] - none[k]) for k in full)
    assert gap > 1e-4, gap  # the adapter changes the scores: the checks below can tell ablated from not
    ab = _ablations(gemma)["sweeps"]
    for sweep, entry in ab.items():
        got = {c: _run_scores(gemma, sweep, c) for c in (r["config"] for r in entry["rows"])}
        assert set(got["none"]) == set(none)
        for k in none:
            assert got["none"][k] == pytest.approx(none[k], abs=1e-5 * (1 + abs(none[k]))), (sweep, k)
            assert got["full"][k] == pytest.approx(full[k], abs=1e-5 * (1 + abs(full[k]))), (sweep, k)
        for c, sc in got.items():
            if c in ("full", "none"):
                continue
            off_full = max(abs(sc[k] - full[k]) for k in full)
            off_none = max(abs(sc[k] - none[k]) for k in none)
            # each configuration removes some LoRA (differs from full) and keeps some (differs from none)
            assert off_full > 0.02 * gap and off_none > 0.02 * gap, (sweep, c, off_full, off_none, gap)


def _analysis(s: Study, name: str) -> dict:
    files = list((s.out / "analyses").rglob(f"{name}.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_the_analyses_have_one_entry_per_gemma_layer(studies):
    gemma, _ = studies
    w = _analysis(gemma, "weights")
    assert w["num_layers"] == GEMMA_LAYERS
    assert w["base_model"] == str(gemma.model)  # the model, beside "family" (the projections' naming scheme)
    assert sorted((m["layer"], m["projection"]) for m in w["modules"]) == sorted(
        (i, p) for i in range(GEMMA_LAYERS) for p in GEMMA_PROJECTIONS)
    p = _analysis(gemma, "probe")
    assert [r["layer"] for r in p["layers"]] == ["emb", *range(GEMMA_LAYERS)]
    assert p["queries"] == 3 and p["pairs"] > 0
    patch = _analysis(gemma, "patch")
    assert patch["num_layers"] == GEMMA_LAYERS and patch["layers"] == list(range(GEMMA_LAYERS))
    configs = {r["config"] for r in patch["rows"]}
    assert {f"{k}@{i}" for k in ("layer", "attn", "mlp") for i in range(GEMMA_LAYERS)} | {"all-blocks"} <= configs
    # patching every block, or the last layer's output, gives the fine-tuned scores exactly
    assert all(v < 1e-4 for v in patch["exactness_max_abs_diff"].values()), patch["exactness_max_abs_diff"]
    cmp = _analysis(gemma, "compare")
    assert cmp["summary"]["modules"] == GEMMA_LAYERS * len(GEMMA_PROJECTIONS)


def test_results_table_and_report_hold_the_gemma_rows(studies):
    gemma, _ = studies
    df = load_results(gemma.out)
    ab = df[df["source"] == "ablation"]
    n_rows = sum(len(v["rows"]) for v in _ablations(gemma)["sweeps"].values())
    assert len(ab) == n_rows == 4 + 16 + 5 + 3 + 6
    assert set(ab["run_id"]) == {"adapter:ref"} and set(ab["sweep"]) == set(SWEEPS)
    assert len(pd.read_csv(gemma.out / "results.csv").query("source == 'ablation'")) == n_rows
    md = (gemma.out / "report" / "tables.md").read_text()
    for config in ("only L2-3", "without L3", "only gate_proj", "without down_proj", "rank 1"):
        assert config in md, config
    assert (gemma.out / "findings.json").is_file()


def test_finding_4_is_decided_on_the_declared_window(studies):
    gemma, llama = studies
    f4 = json.loads((gemma.out / "findings.json").read_text())[3]
    assert f4["verdict_rules"]["target_window"] == [1, 2]
    assert f4["rule"].startswith("only L1-2 (declared for the paper's layers 5-15) top among equal-width windows")
    assert {k for k in f4["p_values"] if k.startswith("L")} == {"L1-2 vs L0-1", "L1-2 vs L2-3"}
    assert set(f4["evidence"]["leave_one_out_mean_drop"]) == {"layers 1-2", "other layers"}
    paper = json.loads((llama.out / "findings.json").read_text())[3]  # declares none: the paper's L5-15, past 6 layers
    why = paper["evidence"].get("reason_ignoring_gate", paper["reason"])  # a 1-step adapter need not beat BM25
    assert "target_window" not in paper["verdict_rules"] and "no 'only L5-15' window" in why


def test_the_families_table_places_each_familys_windows_by_its_own_depth(studies, tmp_path):
    gemma, llama = studies
    table = write_families([gemma.out, llama.out], tmp_path / "fam")
    fams = {f["study"]: f for f in table["families"]}
    assert fams["tiny-gemma3"]["n_layers"] == GEMMA_LAYERS and fams["tiny-llama"]["n_layers"] == LLAMA_LAYERS
    assert all(f["n_layers_from"].endswith("config.json") and f["dissected"] == "adapter:ref" for f in fams.values())
    g, ll = (table["profiles"][fams[n]["label"]] for n in ("tiny-gemma3", "tiny-llama"))
    assert [(w["config"], w["centre"], w["start"], w["end"]) for w in g] == [
        (f"only L{lo}-{lo + 1}", round((2 * lo + 2) / 2 / GEMMA_LAYERS, 4), round(lo / GEMMA_LAYERS, 4),
         round((lo + 2) / GEMMA_LAYERS, 4)) for lo in range(GEMMA_LAYERS - 1)]
    assert [(w["config"], w["centre"]) for w in ll] == [
        (f"only L{lo}-{lo + 1}", round((2 * lo + 2) / 2 / LLAMA_LAYERS, 4)) for lo in range(LLAMA_LAYERS - 1)]
    assert g[-1]["end"] == ll[-1]["end"] == 1.0  # each family's last window ends at its own output
    # the largest leave-one-layer-out drop is placed on Gemma's depth too (the Llama study did not run that sweep)
    f4 = {r["figure"]: r["cells"] for r in table["findings"][3]["rows"]}["leave-one-layer-out: largest drop"]
    drop = re.fullmatch(r"without L(\d+) [-+]\d\.\d{4} \(depth (\d\.\d\d)\)", f4[fams["tiny-gemma3"]["label"]]["text"])
    assert drop and drop[2] == f"{(int(drop[1]) + 0.5) / GEMMA_LAYERS:.2f}", drop  # over its own 4 layers
    assert f4[fams["tiny-llama"]["label"]]["text"] == "not run"
    # the row of the paper's L5-15 holds the window each study declared: Gemma's L1-2, none of Llama's 6 layers
    paper = {r["figure"]: r["cells"] for r in table["findings"][3]["rows"]}["the paper's L5-15"]
    assert paper[fams["tiny-gemma3"]["label"]]["text"].startswith("declared here: L1-2: ")
    assert paper[fams["tiny-llama"]["label"]]["text"] == "not run" and table["same_rules"]
    assert (tmp_path / "fam" / "layer_window_profiles.png").stat().st_size > 10_000
