"""The training and scoring verbs of the CLI on a tiny run: `lorank train`, `rerank`, `ablate`, `export-adapter`,
resume, bad configs; the checkpoint read back by plain PEFT and by the Reranker API."""
import json

import pytest
from typer.testing import CliRunner

from lorank.cli import app
from tests.tinydata import make_trec_dir, save_tiny_model


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    data = make_trec_dir(root / "data")
    model = save_tiny_model(root / "model")
    cfg = root / "train.yaml"
    cfg.write_text(f"""
model: {model}
dtype: fp32
data: [{{kind: trec, path: {data}}}]
group_size: 4
batch_queries: 2
max_steps: 5
lr: 1e-3
lora: {{rank: 2, alpha: 4, dropout: 0.0}}
checkpoints: {{steps: "2,5"}}
eval: {{sets: ["{data}"], depth: 12}}
output_dir: {root / 'run'}
""")
    res = CliRunner().invoke(app, ["train", str(cfg)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return root, res


def test_train_cli_writes_checkpoints_metrics_and_plot(tiny_run):
    root, res = tiny_run
    run = root / "run"
    assert (run / "checkpoint-2" / "adapter_model.safetensors").is_file()
    assert (run / "checkpoint-5" / "lorank_checkpoint.json").is_file()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted(r["step"] for r in rows) == [2, 5]
    assert all(0.0 <= r["ndcg_cut_10"] <= 1.0 for r in rows)
    assert all(r["depth"] == 12 for r in rows)  # the reranking depth each figure was measured at
    assert (run / "checkpoints.png").stat().st_size > 10_000
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in log)
    assert (run / "runs_trec").is_dir()


def test_checkpoint_loads_with_plain_peft(tiny_run):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    root, _ = tiny_run
    base = AutoModelForSequenceClassification.from_pretrained(root / "model", num_labels=1)
    m = PeftModel.from_pretrained(base, root / "run" / "checkpoint-5")
    assert any("lora_A" in n for n, _ in m.named_parameters())


def test_rerank_cli_loads_the_checkpoint(tiny_run):
    root, _ = tiny_run
    data = root / "data"
    out = root / "reranked.run"
    res = CliRunner().invoke(app, ["rerank", "--adapter", str(root / "run"), "--queries", str(data / "queries.tsv"),
                                   "--run", str(data / "bm25.run"), "--collection", str(data / "collection.tsv"),
                                   "--qrels", str(data / "qrels.txt"), "--out", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    lines = out.read_text().splitlines()
    assert len(lines) == 6 * 12


@pytest.mark.precision
def test_rerank_cli_two_processes_and_prefix_cache_give_the_same_ranking(tiny_run):
    root, _ = tiny_run
    data = root / "data"
    base = ["rerank", "--adapter", str(root / "run"), "--queries", str(data / "queries.tsv"),
            "--run", str(data / "bm25.run"), "--collection", str(data / "collection.tsv")]
    outs = {}
    for name, extra in (("one", []), ("two", ["--processes", "2"]), ("prefix", ["--prefix-cache"]),
                        ("unmerged", ["--no-merge-lora"])):
        outs[name] = root / f"reranked-{name}.run"
        res = CliRunner().invoke(app, base + ["--out", str(outs[name])] + extra)
        assert res.exit_code == 0, res.output + repr(res.exception)
        assert ("LoRA merged" in " ".join(res.output.split())) == (name in ("one", "prefix")), res.output

    def read(path):
        out = {}
        for line in path.read_text().splitlines():
            q, _, d, _, s, _ = line.split()
            out.setdefault(q, {})[d] = float(s)
        return out

    from lorank.precision import decide

    one = read(outs["one"])
    # every run computes in the same precision (one decision, printed by the command); the prefix-cached path
    # sums in another order, and the unmerged path adds the LoRA delta apart from the base weight, so under bf16
    # they agree to bf16 rounding, under fp32 to float tolerance (every run but --no-merge-lora merges).
    # Two processes each batch their own queries' pairs (length-sorted across queries), so a query's pairs can
    # sit in batches of other shapes than in one process: under fp32 that moves a score by float noise, under
    # bf16 it can flip the last bit of a score (measured on an AVX2-only CPU, which emulates bf16: one query's
    # scores moved by 2**-8 in one process too, scored alone with its shard), so bf16 allows two units in the
    # last place of the largest score
    prec = decide()
    scale = max(1.0, max(abs(v) for s in one.values() for v in s.values()))
    for name in ("two", "prefix", "unmerged"):
        other = read(outs[name])
        assert other.keys() == one.keys()
        if not prec.bf16:
            tol = 1e-4
        else:
            tol = (2.0 ** -6 if name == "two" else 5e-2) * scale
        for q in one:
            assert other[q].keys() == one[q].keys()
            assert max(abs(other[q][d] - one[q][d]) for d in one[q]) < tol, (name, q, prec)


def test_reranker_api_scores_match_the_checkpoint_metrics(tiny_run):
    from lorank.reranker import Reranker

    root, _ = tiny_run
    rr = Reranker.from_adapter(root / "run" / "checkpoint-5")
    s = rr.score("flea cycle", ["flea cycle flea cycle", ("title", "bread oven")])
    assert s.shape == (2,)


def test_resume_continues_from_the_last_checkpoint(tiny_run, tmp_path):
    import shutil

    root, _ = tiny_run
    run2 = tmp_path / "run"
    shutil.copytree(root / "run", run2)
    shutil.rmtree(run2 / "checkpoint-5")
    from lorank.train.config import TrainConfig
    from lorank.train.run import train

    cfg = TrainConfig.from_yaml(root / "train.yaml", {"output_dir": str(run2), "eval.sets": []})
    res = train(cfg, progress=False)
    assert res.steps == 5
    summary = json.loads((run2 / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2")
    # the rate counts the tokens of the steps this call trained (3-5), not the restored total over this call's time
    log = [json.loads(line) for line in (run2 / "train_log.jsonl").read_text().splitlines()]
    before = next(r["tokens"] for r in log if r["step"] == 2)
    assert 0 < before < summary["tokens"]
    assert summary["tokens_per_s"] == pytest.approx((summary["tokens"] - before) / summary["train_s"], rel=0.02)


def test_resume_under_a_changed_recipe_is_refused_before_anything_is_written(tiny_run, tmp_path):
    import shutil

    from lorank.errors import ConfigError
    from lorank.train.config import TrainConfig
    from lorank.train.run import train

    root, _ = tiny_run
    run2 = tmp_path / "run"
    shutil.copytree(root / "run", run2)
    shutil.rmtree(run2 / "checkpoint-5")
    before = (run2 / "config.json").read_text()
    cfg = TrainConfig.from_yaml(root / "train.yaml", {"output_dir": str(run2), "eval.sets": [], "lr": 5e-4,
                                                       "group_size": 3})
    with pytest.raises(ConfigError) as e:
        train(cfg, progress=False)
    msg = str(e.value)
    assert "checkpoint-2 was trained under another config" in msg and "lr: 0.001 -> 0.0005" in msg
    assert "group_size: 4 -> 3" in msg and "--no-resume" in msg
    assert (run2 / "config.json").read_text() == before  # the old run's record is untouched
    # a longer schedule is not a different run: resuming with more steps goes on
    ok = TrainConfig.from_yaml(root / "train.yaml", {"output_dir": str(run2), "eval.sets": [], "max_steps": 6})
    assert train(ok, progress=False).steps == 6


def test_bad_config_lists_every_problem(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("data: [{kind: trec, path: dl20}]\nlora: {rank: 0, layers: '9-3'}\ngroup_size: 1\nfoo: 1\n")
    res = CliRunner().invoke(app, ["train", str(cfg)])
    assert res.exit_code == 2
    out = res.output
    assert "rank" in out and "group_size" in out and "foo" in out


def test_missing_data_file_is_a_clear_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: [{{kind: tevatron, path: {tmp_path / 'nope.jsonl'}}}]\nmax_steps: 1\noutput_dir: {tmp_path / 'o'}\n")
    res = CliRunner().invoke(app, ["train", str(cfg)])
    assert res.exit_code == 2
    assert "nope.jsonl" in res.output


def test_ablate_cli_cached_sweep_equals_naive_and_costs_less(tiny_run, tmp_path):
    import json as _json

    root, _ = tiny_run
    data = root / "data"
    outs = {}
    for flag in ([], ["--no-cache"]):
        out = tmp_path / ("naive" if flag else "cached")
        res = CliRunner().invoke(app, ["ablate", "--adapter", str(root / "run"), "--eval", str(data), "--depth", "12",
                                       "--sweep", "layers-leave-one-out", "--sweep", "components", "--out", str(out), *flag])
        assert res.exit_code == 0, res.output + repr(res.exception)
        outs[bool(flag)] = _json.loads((out / "ablations.json").read_text())
    cached, naive = outs[False]["sweeps"], outs[True]["sweeps"]
    for sweep in ("layers-leave-one-out", "components"):
        assert [r["ndcg_cut_10"] for r in cached[sweep]["rows"]] == [r["ndcg_cut_10"] for r in naive[sweep]["rows"]]
    assert cached["layers-leave-one-out"]["layer_calls"] < naive["layers-leave-one-out"]["layer_calls"]
    rows = {r["config"]: r for r in cached["components"]["rows"]}
    assert rows["full"]["recovered_ndcg_cut_10"] in (100.0, None)
    assert (tmp_path / "cached" / "layers-leave-one-out.png").stat().st_size > 5000


def test_ablate_cli_scores_the_target_window_it_is_given(tiny_run, tmp_path):
    import json as _json

    root, _ = tiny_run
    args = ["ablate", "--adapter", str(root / "run"), "--eval", str(root / "data"), "--depth", "4", "--sweep",
            "layer-windows", "--window", "2"]
    res = CliRunner().invoke(app, args + ["--target-window", "3-1"])
    assert res.exit_code == 2 and "--target-window: '3-1': the window ends (layer 1) before it starts" in res.output
    res = CliRunner().invoke(app, args + ["--target-window", "0-2", "--out", str(tmp_path / "ab")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    rows = _json.loads((tmp_path / "ab" / "ablations.json").read_text())["sweeps"]["layer-windows"]["rows"]
    # the tiny model's 4 layers in windows of 2, then the target window of 3 layers
    assert [r["config"] for r in rows] == ["full", "none", "only L0-1", "only L1-2", "only L2-3", "only L0-2"]


def test_export_adapter_is_small_self_contained_and_scores_like_the_checkpoint(tiny_run, tmp_path):
    import numpy as np

    from lorank.reranker import Reranker

    root, _ = tiny_run
    out = tmp_path / "adapters" / "tiny-ref"
    res = CliRunner().invoke(app, ["export-adapter", str(root / "run"), "--out", str(out), "--note", "Trained in a test.",
                                   "--command", "train=lorank train t.yaml"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert {p.name for p in out.iterdir()} == {"adapter_model.safetensors", "adapter_config.json", "lorank_meta.json",
                                               "training_config.json", "metrics.json", "README.md"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 5 and metrics["evaluations"] and metrics["evaluations"][0]["step"] == 5
    assert metrics["note"] == "Trained in a test." and metrics["commands"] == {"train": "lorank train t.yaml"}
    # the reranked run against the first stage, per evaluation set (resolved through the run's eval.sets)
    label = metrics["evaluations"][0]["eval_set"]
    vs = metrics["vs_first_stage"][label]
    assert "skipped" not in vs, vs
    assert set(vs["first_stage"]) == {"ndcg_cut_10", "recip_rank_10"}
    tests = {t["measure"]: t for t in vs["tests"]}
    assert set(tests) == {"ndcg_cut_10", "recip_rank_10"} and all(0.0 <= t["p_adjusted"] <= 1.0 for t in tests.values())
    assert abs(tests["ndcg_cut_10"]["value"] - metrics["evaluations"][0]["ndcg_cut_10"]) < 1e-4
    readme = (out / "README.md").read_text()
    assert "Trained in a test." in readme and "| set | role | first stage |" in readme and "lorank train t.yaml" in readme
    assert "<!-- lorank:adapter-table . -->" in readme
    from safetensors import safe_open

    with safe_open(str(out / "adapter_model.safetensors"), "pt") as fh:
        dtypes = {k: str(fh.get_tensor(k).dtype) for k in fh.keys()}
    assert {d for k, d in dtypes.items() if "lora_" in k} == {"torch.bfloat16"}
    assert {d for k, d in dtypes.items() if "lora_" not in k} == {"torch.float32"}  # the score head
    passages = ["flea cycle flea cycle", ("title", "bread oven"), "river fish water"]
    a = Reranker.from_adapter(root / "run" / "checkpoint-5", dtype="fp32", bf16=False).score("flea cycle", passages)
    b = Reranker.from_adapter(out, dtype="fp32", bf16=False).score("flea cycle", passages)
    assert np.allclose(a, b, atol=2e-2 * max(1.0, float(np.abs(a).max())))  # only the LoRA factors' bf16 rounding
    again = CliRunner().invoke(app, ["export-adapter", str(root / "run"), "--out", str(out)])
    assert again.exit_code != 0 and "exists" in again.output


def test_an_exported_adapter_is_re_exported_with_the_evaluations_of_another_folder(tiny_run, tmp_path):
    """A curve checkpoint kept as an exported adapter, evaluated later at another depth into its own folder
    (benchmarks/train_msmarco12k.py --headline-step): the re-export carries those rows, their tests against the
    first stage, and the adapter's own training config."""
    import shutil

    root, _ = tiny_run
    kept = tmp_path / "kept" / "checkpoint-5"
    assert CliRunner().invoke(app, ["export-adapter", str(root / "run"), "--out", str(kept)]).exit_code == 0
    ev = tmp_path / "eval-top100"
    (ev / "runs_trec").mkdir(parents=True)
    rows = [json.loads(x) for x in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    row = dict(next(r for r in rows if r["step"] == 5), depth=100)
    (ev / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    shutil.copy2(root / "run" / "runs_trec" / f"checkpoint-5.{row['eval_set']}.run", ev / "runs_trec")
    out = tmp_path / "adapters" / "ref"
    res = CliRunner().invoke(app, ["export-adapter", str(kept), "--out", str(out), "--evaluations", str(ev)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["evaluations"] == [row] and "tests" in metrics["vs_first_stage"][row["eval_set"]]
    assert json.loads((out / "training_config.json").read_text()) == json.loads((kept / "training_config.json").read_text())
    assert (out / "adapter_model.safetensors").read_bytes() == (kept / "adapter_model.safetensors").read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = CliRunner().invoke(app, ["export-adapter", str(kept), "--out", str(tmp_path / "x"), "--evaluations", str(empty)])
    assert bad.exit_code != 0 and "no metrics.jsonl" in bad.output and not (tmp_path / "x").exists()


def test_a_frozen_adapter_is_scored_on_a_test_set_and_its_figures_carry_their_role(tiny_run, tmp_path):
    """lorank evaluate-adapter: the reranked run on a test set (a folder named like DL22) becomes a metrics.json row
    with role test, a first-stage test with a 95% CI, and a row of the README's generated table; the dev rows keep
    theirs. A run missing queries is refused."""
    from lorank.data.roles import role_of
    from tests.tinydata import make_trec_dir

    root, _ = tiny_run
    out = tmp_path / "adapters" / "tiny-ref"
    assert CliRunner().invoke(app, ["export-adapter", str(root / "run"), "--out", str(out)]).exit_code == 0
    test_set = make_trec_dir(tmp_path / "trec-dl-2022", seed=3, first_qid=900)
    assert role_of(str(test_set)) == "test"
    run = tmp_path / "t.run"
    res = CliRunner().invoke(app, ["rerank", "--adapter", str(out), "--eval", str(test_set), "--out", str(run),
                                   "--depth", "12"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["evaluate-adapter", str(out), "--run", f"{test_set}={run}", "--depth", "12",
                                   "--command", "lorank rerank ..."])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    roles = {r["eval_set"]: r["role"] for r in metrics["evaluations"]}
    assert roles["trec-dl-2022"] == "test" and set(roles.values()) == {"dev", "test"}
    vs = metrics["vs_first_stage"]["trec-dl-2022"]
    nd = next(t for t in vs["tests"] if t["measure"] == "ndcg_cut_10")
    assert vs["role"] == "test" and nd["ci95"][0] <= nd["delta"] <= nd["ci95"][1] and nd["n_queries"] == 6
    assert metrics["commands"]["evaluate (test)"] == "lorank rerank ..."
    assert CliRunner().invoke(app, ["readme", str(out / "README.md")]).exit_code == 0
    assert "| trec-dl-2022 | test | bm25 |" in (out / "README.md").read_text()
    # a run that lacks some of the set's queries is refused, naming the file
    run.write_text("\n".join(x for x in run.read_text().splitlines() if not x.startswith("900 ")) + "\n")
    res = CliRunner().invoke(app, ["evaluate-adapter", str(out), "--run", f"{test_set}={run}"])
    assert res.exit_code != 0 and "lacks 1 of trec-dl-2022's queries" in res.output and "Traceback" not in res.output


def test_export_adapter_refuses_a_command_without_a_name(tiny_run, tmp_path):
    root, _ = tiny_run
    res = CliRunner().invoke(app, ["export-adapter", str(root / "run"), "--out", str(tmp_path / "a"),
                                   "--command", "lorank train t.yaml"])
    assert res.exit_code != 0 and "NAME=COMMAND" in res.output and "lorank train t.yaml" in res.output
    assert not (tmp_path / "a").exists()


def _as_beir(data, out):
    """make_trec_dir's files in the BEIR layout (corpus.jsonl, queries.jsonl, qrels/test.tsv)."""
    (out / "qrels").mkdir(parents=True)
    with open(out / "corpus.jsonl", "w") as f:
        for line in (data / "collection.tsv").read_text().splitlines():
            pid, text = line.split("\t")
            f.write(json.dumps({"_id": pid, "title": "", "text": text}) + "\n")
    with open(out / "queries.jsonl", "w") as f:
        for line in (data / "queries.tsv").read_text().splitlines():
            qid, text = line.split("\t")
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    rows = ["query-id\tcorpus-id\tscore"] + [
        "\t".join(line.split()[i] for i in (0, 2, 3)) for line in (data / "qrels.txt").read_text().splitlines()]
    (out / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n")
    return out


def test_rerank_cli_reranks_a_beir_split_as_the_tsv_files(tiny_run):
    # the SciFact check of the reference adapter: lorank retrieve --beir DIR --out RUN, then rerank --beir DIR --run RUN
    root, _ = tiny_run
    data = root / "data"
    beir = _as_beir(data, root / "beir")
    outs = {}
    for name, src in (("tsv", ["--queries", str(data / "queries.tsv"), "--collection", str(data / "collection.tsv")]),
                      ("beir", ["--beir", str(beir)])):
        outs[name] = root / f"reranked-{name}.run"
        res = CliRunner().invoke(app, ["rerank", "--adapter", str(root / "run"), "--run", str(data / "bm25.run"),
                                       "--depth", "5", "--out", str(outs[name])] + src)
        assert res.exit_code == 0, res.output + repr(res.exception)
        if name == "beir":  # BEIR qrels are binary (grade 1 = relevant): MRR/recall/MAP at grade >= 1, not TREC DL's 2
            assert "binary relevance at grade >= 1" in " ".join(res.output.split())
    assert outs["beir"].read_text() == outs["tsv"].read_text()
    assert len(outs["beir"].read_text().splitlines()) == 6 * 12  # the 5 reranked, then the rest of the run
    assert "ndcg_cut_10" in res.output  # the BEIR split's qrels evaluate the result


def test_rerank_cli_beir_errors_name_the_problem(tiny_run):
    root, _ = tiny_run
    data = root / "data"
    beir = root / "beir" if (root / "beir").is_dir() else _as_beir(data, root / "beir")
    base = ["rerank", "--adapter", str(root / "run"), "--out", str(root / "x.run"), "--beir", str(beir)]
    res = CliRunner().invoke(app, base)
    assert res.exit_code != 0 and "--beir needs --run" in res.output
    res = CliRunner().invoke(app, base + ["--run", str(data / "bm25.run"), "--split", "dev"])
    assert res.exit_code != 0 and "no qrels for split 'dev'" in res.output
    bad = root / "bad.run"
    bad.write_text((data / "bm25.run").read_text() + "100 Q0 nosuchdoc 99 1.0 bm25\n")
    res = CliRunner().invoke(app, base + ["--run", str(bad)])
    assert res.exit_code != 0 and "bad.run" in res.output and "nosuchdoc" in res.output


def test_merged_checkpoint_evaluation_leaves_the_training_as_it_was(tiny_run, tmp_path):
    """Checkpoint evaluation merges LoRA on a CPU and restores the exact weights, so the run trains on as if it had
    not merged: the same weights, bit for bit, as a run that evaluates unmerged. (That merged scores equal unmerged
    ones within each precision's rounding: test_merged_evaluation_scores_as_the_unmerged_one.)"""
    from safetensors.torch import load_file

    from lorank.train.config import TrainConfig
    from lorank.train.run import train

    root, _ = tiny_run
    rows = [json.loads(x) for x in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(r["lora_merged"] for r in rows)
    cfg = TrainConfig.from_yaml(root / "train.yaml", {"output_dir": str(tmp_path / "run"), "eval.merge_lora": False})
    train(cfg, progress=False)
    plain = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert not any(r["lora_merged"] for r in plain)
    for step in (2, 5):
        a = load_file(root / "run" / f"checkpoint-{step}" / "adapter_model.safetensors")
        b = load_file(tmp_path / "run" / f"checkpoint-{step}" / "adapter_model.safetensors")
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), step


def test_interruptions_exit_with_the_shell_convention():
    """Ctrl-C exits 130 (128 + SIGINT), SIGTERM 143, other lorank errors 2; no traceback in any case."""
    import typer

    from lorank.cli.common import guard
    from lorank.train.run import TrainingInterrupted, TrainResult

    def code_of(exc: BaseException) -> int:
        with pytest.raises(typer.Exit) as info:
            with guard():
                raise exc
        return info.value.exit_code

    from pathlib import Path

    res = TrainResult(output_dir=Path("."), steps=3, wall_s=1.0, tokens=0, padded_tokens=0, tokens_per_s=0.0,
                      checkpoints=[], interrupted="SIGINT")
    assert code_of(TrainingInterrupted("stopped at step 3", res)) == 130
    res.interrupted = "SIGTERM"
    assert code_of(TrainingInterrupted("stopped at step 3", res)) == 143
    assert code_of(KeyboardInterrupt()) == 130
    from lorank.errors import ConfigError
    assert code_of(ConfigError("bad")) == 2


@pytest.mark.parametrize("verb", [["rerank", "--adapter", "x", "--eval", "dl19"], ["ablate", "--adapter", "x"],
                                  ["features", "--adapter", "x"]])
@pytest.mark.parametrize("depth", ["-1", "0"])
def test_a_depth_below_one_is_refused_before_anything_runs(verb, depth):
    """--depth -1 used to print 'scoring -43 pairs' and score all but the last candidate of each query; --depth 0
    wrote BM25's order with made-up scores tagged lorank."""
    res = CliRunner().invoke(app, verb + ["--depth", depth])
    assert res.exit_code == 2 and "--depth" in res.output and "greater than or equal to 1" in res.output, res.output


def test_the_scorer_refuses_a_depth_below_one():
    from lorank.errors import ConfigError
    from lorank.inference.engine import Scorer

    with pytest.raises(ConfigError, match="depth must be a whole number of candidates >= 1, got 0"):
        Scorer.rerank(None, {}, {}, {}, depth=0)
