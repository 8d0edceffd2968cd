"""The analysis verbs of the CLI (lorank.cli.analyze) on the tiny saved adapters of tests/analyze/conftest.py."""
import json

import pytest
from typer.testing import CliRunner

from lorank.cli.analyze import analyze_app

pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args):
    res = CliRunner().invoke(analyze_app, [str(a) for a in args])
    res.text = " ".join(res.output.split())  # rich wraps long lines
    return res


def _data_args(tiny):
    d = tiny["data"]
    return ["--queries", d / "queries.tsv", "--run", d / "bm25.run", "--collection", d / "collection.tsv",
            "--qrels", d / "qrels.txt"]


def test_weights_and_compare_commands(tiny, tmp_path):
    res = invoke("weights", "--adapter", tiny["a"], "--out", tmp_path)
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "28 LoRA modules" in res.text
    assert json.loads((tmp_path / "weights.json").read_text())["summary"]["modules"] == 28
    res = invoke("compare", "--adapter", tiny["a"], "--adapter", tiny["b"], "--out", tmp_path, "--module", "L2.q_proj")
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "random subspaces" in res.text
    cmp = json.loads((tmp_path / "compare.json").read_text())
    assert cmp["grid_module"]["module"] == "model.layers.2.self_attn.q_proj"
    for png in ("weights_heatmaps.png", "weights_spectra.png", "compare_heatmaps.png", "compare_grid.png"):
        assert (tmp_path / png).stat().st_size > 10_000


def test_probe_command_on_files(tiny, tmp_path):
    res = invoke("probe", "--adapter", tiny["run"], *_data_args(tiny), "--max-queries", 0, "--depth", 12,
                 "--folds", 3, "--C", "0.1", "--out", tmp_path, "--save-features", tmp_path / "f.npz")
    assert res.exit_code == 0, res.output + repr(res.exception)
    out = json.loads((tmp_path / "probe.json").read_text())
    assert out["queries"] == 6 and out["pairs"] == 48 and out["positives"] == 18
    assert [r["layer"] for r in out["layers"]] == ["emb", 0, 1, 2, 3]
    assert all(0.0 <= r["finetuned_auc"] <= 1.0 and 0.0 <= r["base_auc_per_query"] <= 1.0 for r in out["layers"])
    assert (tmp_path / "probe.png").stat().st_size > 10_000
    # refit from the saved features: no model run, the same numbers
    res = invoke("probe", "--adapter", tiny["run"], "--features", tmp_path / "f.npz", "--folds", 3, "--C", "0.1",
                 "--out", tmp_path / "refit")
    assert res.exit_code == 0, res.output + repr(res.exception)
    again = json.loads((tmp_path / "refit" / "probe.json").read_text())
    assert again["layers"] == out["layers"] and again["qids"] == out["qids"]


def test_patch_command_on_a_named_folder(tiny, tmp_path):
    res = invoke("patch", "--adapter", tiny["a"], "--eval", tiny["data"], "--max-queries", 4, "--depth", 10,
                 "--site", "layer,attn", "--site", "mlp", "--layers", "1-3", "--block-layers", "2,3",
                 "--out", tmp_path, "--save-features", tmp_path / "pf.npz")
    assert res.exit_code == 0, res.output + repr(res.exception)
    out = json.loads((tmp_path / "patch.json").read_text())
    assert out["queries"] == 4 and out["pairs"] == 40
    names = {r["config"] for r in out["rows"]}
    assert {"layer@1", "attn@3", "mlp@2", "layer@3", "all-blocks"} <= names
    assert "layer@0" not in names and "attn@1" not in names
    assert out["exactness_max_abs_diff"]["layer@3"] == 0.0
    assert out["exactness_max_abs_diff"]["all-blocks"] <= 1e-6
    last = next(r for r in out["rows"] if r["config"] == "layer@3")
    assert last["restored_score_pct"] == pytest.approx(100.0)
    assert (tmp_path / "patch.png").stat().st_size > 10_000
    res = invoke("probe", "--adapter", tiny["a"], "--features", tmp_path / "pf.npz", "--folds", 2, "--C", "1",
                 "--out", tmp_path)
    assert res.exit_code == 0, res.output + repr(res.exception)
    pr = json.loads((tmp_path / "probe.json").read_text())
    assert pr["pairs"] == 32 and pr["qids"] == out["qids"]  # the judged pairs among the patched ones


@pytest.mark.parametrize("args,needle", [
    (["weights", "--adapter", "/nonexistent/ckpt"], "not found"),
    (["compare", "--adapter", "A"], "exactly two"),
    (["probe", "--adapter", "X", "--max-queries", "2"], "--eval"),
    (["patch", "--adapter", "X", "--eval", "no-such-set"], "no-such-set"),
])
def test_clear_errors(args, needle, tiny):
    res = invoke(*args)
    assert res.exit_code == 2, res.output
    assert needle in res.text
    assert "Traceback" not in res.text


def test_run_analysis_dispatches_by_kind(tiny, tmp_path):
    from lorank.analyze import run_analysis
    from lorank.errors import ConfigError

    w = run_analysis("weights", tiny["a"], tmp_path / "w", base_weights=False, plots=False)
    assert w["kind"] == "weights" and (tmp_path / "w" / "weights.json").is_file()
    c = run_analysis("compare", [tiny["a"], tiny["b"]], tmp_path / "c", plots=False)
    c2 = run_analysis("compare", tiny["a"], tmp_path / "c2", other=tiny["b"], plots=False)
    assert c["summary"] == c2["summary"]
    with pytest.raises(ConfigError, match="unknown analysis kind"):
        run_analysis("nope", tiny["a"], tmp_path)
    with pytest.raises(ConfigError, match="unknown option"):
        run_analysis("weights", tiny["a"], tmp_path, colour="red")
    with pytest.raises(ConfigError, match="two adapters"):
        run_analysis("compare", tiny["a"], tmp_path)
    # probe / patch: the adapter and the data options resolve into the verb's subject
    p = run_analysis("patch", tiny["a"], tmp_path / "p", eval_set=tiny["data"], max_queries=2, depth=6, layers="3",
                     exact_check=False, plots=False)
    assert p["kind"] == "patch" and p["queries"] == 2 and p["adapter"] == str(tiny["a"])
    assert p["eval_set"] == "data" and (tmp_path / "p" / "patch.json").is_file()
    with pytest.raises(ConfigError, match=r"unknown option\(s\) for analysis 'probe': colour \(known: eval_set, "
                                          r"queries, run, collection, qrels, data_root, allow_pickle, reranker, max_queries"):
        run_analysis("probe", tiny["a"], tmp_path, colour="red")


def test_adalora_command_on_a_trained_run(tiny, tmp_path):
    """``lorank analyze adalora`` end to end: a few AdaLoRA steps through lorank.train, then the verb on the run
    folder (its last checkpoint): the table, the JSON and the heatmap; a plain LoRA adapter is refused by name."""
    from lorank.train.config import TrainConfig
    from lorank.train.run import train

    out = tmp_path / "run"
    cfg = TrainConfig.from_dict({
        "model": str(tiny["model"]), "dtype": "fp32", "data": [{"kind": "trec", "path": str(tiny["data"])}],
        "group_size": 4, "batch_queries": 2, "max_steps": 6, "lr": 1e-3, "seed": 7,
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0, "variant": "adalora",
                 "adalora": {"target_r": 2, "tinit": 1, "tfinal": 2}},
        "checkpoints": {"steps": "6"}, "eval": {"sets": [], "test_sets": []}, "output_dir": str(out)})
    train(cfg, progress=False)
    res = invoke("adalora", "--adapter", out, "--out", tmp_path / "view")
    assert res.exit_code == 0, res.output + repr(res.exception)
    view = json.loads((tmp_path / "view" / "adalora_allocation.json").read_text())
    assert view["adapter"] == str(out / "checkpoint-6") and view["allocated"]
    assert view["kept"] == 2 * view["modules"] == 2 * 28
    assert (f"{view['kept']} ranks kept over 28 modules (init_r 4, target_r 2: budget 56); allocated"
            in res.text)
    assert (tmp_path / "view" / "adalora_allocation.png").stat().st_size > 5_000
    res = invoke("adalora", "--adapter", tiny["a"], "--out", tmp_path / "no")
    assert res.exit_code == 2 and "not an AdaLoRA adapter (peft_type 'LORA')" in res.text
    assert "Traceback" not in res.text
