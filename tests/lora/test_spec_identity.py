"""``LoraSpec``, the one LoRA settings type, keeps what the two types it replaced wrote and hashed (issue 42): the
run ids of the committed studies and the reference adapter, a training config's ``lora`` block as ``config.json``
serialises it, the checkpoint metadata's ``lora`` form, run labels and every validation message. The expected
values were computed with ``train.config.LoraFields`` + ``lora.spec.LoraSpec`` before they became one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorank.errors import ConfigError
from lorank.lora.spec import LoraSpec
from lorank.study.spec import config_hash, expand, load_spec
from lorank.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
STUDIES = [ROOT / "results" / name for name in ("study_smollm2_cpu", "study_smollm2_cpu_seeds")]
COMMITTED_RUNS = sorted(p.parent for s in STUDIES for p in (s / "runs").glob("*/config.json"))
BASE = json.loads((STUDIES[0] / "runs" / "smollm2-135m-r8-all-s42-dfa28c" / "config.json").read_text())["config"]


def _dump_then(cfg: TrainConfig) -> dict:
    """``config.json``'s form of the config, less the fields added since these hashes were taken, at their defaults
    (``divergence_guard.min_fall``, session 25), so the hashes still check what was serialised then."""
    d = cfg.model_dump()
    if (d.get("divergence_guard") or {}).get("min_fall") == 0.25:
        d["divergence_guard"].pop("min_fall")
    return d


def _identity_hash(cfg: TrainConfig) -> str:
    ident = cfg.identity()
    ident.pop("output_dir", None)  # as a study hashes a run (lorank.study.spec.expand)
    return config_hash(ident)


def test_the_committed_runs_keep_their_ids():
    # the single-seed study's six runs, and the seeded study's finished ones (it grows session by session)
    by_study = {s: [r for r in COMMITTED_RUNS if r.parent.parent == s] for s in STUDIES}
    assert len(by_study[STUDIES[0]]) == 6 and len(by_study[STUDIES[1]]) >= 1
    for run in COMMITTED_RUNS:
        cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text())["config"])
        h = _identity_hash(cfg)
        assert run.name.endswith("-" + h[:6]), run
        marker = run / ".lorank-step.json"  # absent while a run is still in training (kept by the snapshot to resume)
        assert not marker.is_file() or json.loads(marker.read_text())["hash"] == h, run
    assert all((r / ".lorank-step.json").is_file() for r in by_study[STUDIES[0]])  # the finished study: all trained


@pytest.mark.parametrize("study", STUDIES, ids=lambda p: p.name)
def test_the_committed_study_grids_still_name_their_runs(study):
    ids = {r.run_id: r.config_hash for r in expand(load_spec(study / "study.yaml"), study / "study.yaml")}
    for run in (study / "runs").iterdir():
        assert run.name in ids, run.name
        marker = run / ".lorank-step.json"  # absent while a run is still in training
        assert not marker.is_file() or json.loads(marker.read_text())["hash"] == ids[run.name]


def test_the_reference_adapter_keeps_its_config_hash():
    doc = json.loads((ROOT / "adapters" / "smollm2-135m-msmarco12k-r8" / "training_config.json").read_text())
    cfg = TrainConfig.from_dict(doc["config"])
    assert (_identity_hash(cfg), config_hash(_dump_then(cfg))) == ("233c078f", "6df3783f")


# lora block -> (identity hash, hash of the whole model_dump as config.json holds it, short_name, hash of to_dict)
BEFORE = [
    ({}, "786c07cd", "ba93f21a", "r8-all", "dd1a99b6"),
    ({"rank": 4, "alpha": "8r", "components": "mha", "projections": "q,v", "layers": "1-3"},
     "4917eee9", "d5dc86c9", "r4-mha-q+v-L1-3", "a9b101c7"),
    ({"rank": 2, "alpha": 16.5, "components": "mlp", "projections": ["mlp.up", "down_proj"], "layers": [0, 2]},
     "1aec56c0", "e2af73b1", "r2-mlp-mlpup+down_proj-L0_2", "624aab94"),
    ({"rank": 32, "alpha": 64, "alpha_policy": "scale"}, "0459fc2f", "28ad92f3", "r32-all-scale", "85dc9a59"),
    ({"rank": 1, "alpha": 64, "alpha_policy": "rslora", "alpha_rank": 4, "variant": "rslora"},
     "6d74aeea", "c3872aff", "r1-all-rslora-rsscale", "49c4c1d1"),
    ({"rank": 16, "variant": "dora", "layers": 3, "dropout": 0.0}, "d91fb20c", "3832c087", "r16-all-L3-dora", "832ab600"),
]


@pytest.mark.parametrize("lora,ident,dump,short,meta", BEFORE)
def test_lora_settings_serialise_and_hash_as_before(lora, ident, dump, short, meta):
    cfg = TrainConfig.from_dict({**BASE, "lora": lora})
    assert _identity_hash(cfg) == ident
    assert config_hash(_dump_then(cfg)) == dump
    assert cfg.lora.short_name() == short
    assert config_hash(cfg.lora.to_dict()) == meta
    assert LoraSpec.from_dict(cfg.model_dump()["lora"]) == cfg.lora


def test_projections_given_as_a_string_stay_a_string_in_config_json_and_a_list_in_the_metadata():
    spec = TrainConfig.from_dict({**BASE, "lora": {"projections": "q, v"}}).lora
    assert spec.model_dump()["projections"] == "q, v"
    assert spec.to_dict()["projections"] == ["q", "v"]


MESSAGES = [
    ({"rank": 0}, ["lora.rank: Input should be greater than or equal to 1"]),
    ({"rank": "x"}, ["lora.rank: Input should be a valid integer, unable to parse string as an integer"]),
    ({"alpha": "r8"}, ["lora.alpha: Value error, bad alpha 'r8': use a number (64) or a multiple of the rank ('8r')"]),
    ({"alpha": -1}, ["lora.alpha: Value error, alpha must be > 0, got -1.0"]),
    ({"dropout": 1.0}, ["lora.dropout: Input should be less than 1"]),
    ({"components": "ffn"}, ["lora.components: Input should be 'all', 'mha' or 'mlp'"]),
    ({"layers": "7-3"}, ["lora.layers: Value error, empty layer range '7-3' in '7-3' (end before start)"]),
    ({"layers": "a"}, ["lora.layers: Value error, bad layer set 'a': 'a' is not a layer, a range like 5-15, or 'all'"]),
    # issue 44 added dylora and adalora (and their blocks): the lists of choices and fields grew, nothing else
    ({"variant": "qlora"}, ["lora.variant: Input should be 'lora', 'dora', 'rslora', 'dylora' or 'adalora'"]),
    ({"alpha_policy": "bogus"}, ["lora.alpha_policy: Input should be 'fixed', 'scale' or 'rslora'"]),
    ({"alpha_rank": 0}, ["lora.alpha_rank: Input should be greater than or equal to 1"]),
    ({"bogus": 1}, ["lora.bogus: unknown field; known fields here: adalora, alpha, alpha_policy, alpha_rank, "
                    "components, dropout, dylora, layers, projections, rank, variant"]),
    ({"projections": 3}, ["lora.projections.list[str]: Input should be a valid list",
                          "lora.projections.str: Input should be a valid string"]),
]


@pytest.mark.parametrize("lora,problems", MESSAGES)
def test_a_bad_lora_block_gives_the_same_messages(lora, problems):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({**BASE, "lora": lora})
    assert e.value.problems == problems
    if "bogus" not in lora:  # read on its own (a study plan, an adapter's metadata), the spec says the same
        with pytest.raises(ConfigError) as e:
            LoraSpec.from_dict(lora)
        assert e.value.problems == problems


def test_a_bad_lora_block_is_listed_with_the_other_problems_of_the_config():
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({**BASE, "lora": {"rank": 0, "layers": "9-3"}, "group_size": 1, "foo": 1})
    assert e.value.problems[:3] == ["lora.rank: Input should be greater than or equal to 1",
                                "lora.layers: Value error, empty layer range '9-3' in '9-3' (end before start)",
                                "group_size: Input should be greater than or equal to 2"]
    assert e.value.problems[3].startswith("foo: unknown field; known fields here: attention_backend, ")


def test_from_dict_names_unknown_fields():
    with pytest.raises(ConfigError) as e:
        LoraSpec.from_dict({"rank": 1, "foo": 2})
    assert e.value.problems == ["unknown lora field(s): foo (known: rank, alpha, dropout, components, projections, "
                                "layers, variant, alpha_policy, alpha_rank, dylora, adalora)"]


# issue 44: the variants' blocks stay out of every other config; their runs are named by the variant
VARIANTS = [
    ({"rank": 32, "variant": "dylora"}, "r32-all-dylora", {"mode": "full"}),
    ({"rank": 32, "variant": "dylora", "dylora": {"mode": "frozen"}}, "r32-all-dylora-frozen", {"mode": "frozen"}),
    ({"rank": 12, "variant": "adalora", "adalora": {"target_r": 4, "tinit": 5, "tfinal": 5}}, "r12-all-adalora-t4",
     {"target_r": 4, "tinit": 5, "tfinal": 5, "deltaT": 1, "beta1": 0.85, "beta2": 0.85, "orth_reg_weight": 0.5}),
]


@pytest.mark.parametrize("lora,short,block", VARIANTS)
def test_a_variant_names_its_runs_and_records_its_block(lora, short, block):
    cfg = TrainConfig.from_dict({**BASE, "max_steps": 100, "lora": lora})
    assert cfg.lora.short_name() == short
    name = lora["variant"]
    assert cfg.model_dump()["lora"][name] == block == cfg.identity()["lora"][name] == cfg.lora.to_dict()[name]
    assert LoraSpec.from_dict(cfg.model_dump()["lora"]) == cfg.lora
    assert _identity_hash(cfg) != _identity_hash(TrainConfig.from_dict({**BASE, "max_steps": 100,
                                                                        "lora": {"rank": lora["rank"]}}))


VARIANT_MESSAGES = [
    ({"dylora": {"mode": "full"}}, ["lora: Value error, the dylora: block is for variant: dylora, not 'lora'"]),
    ({"variant": "dylora", "dylora": {"mode": "nested"}}, ["lora.dylora.mode: Input should be 'full' or 'frozen'"]),
    ({"variant": "dylora", "dylora": {"b": 1}}, ["lora.dylora.b: unknown field; known fields here: mode"]),
    ({"variant": "adalora", "rank": 2, "adalora": {"target_r": 4}},
     ["lora: Value error, adalora.target_r (4) must not exceed rank (2), the rank every module starts at"]),
    ({"variant": "adalora", "adalora": {"beta1": 1.0}}, ["lora.adalora.beta1: Input should be less than 1"]),
    ({"variant": "adalora", "adalora": {"deltaT": 0}}, ["lora.adalora.deltaT: Input should be greater than or equal to 1"]),
]


@pytest.mark.parametrize("lora,problems", VARIANT_MESSAGES)
def test_a_bad_variant_block_is_named(lora, problems):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({**BASE, "max_steps": 100, "lora": lora})
    assert e.value.problems == problems


def test_adalora_needs_a_schedule_that_fits_max_steps():
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({**BASE, "max_steps": -1, "lora": {"variant": "adalora"}})
    assert "set max_steps" in " ".join(e.value.problems)
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({**BASE, "max_steps": 50, "lora": {"variant": "adalora",
                                                               "adalora": {"tinit": 30, "tfinal": 20}}})
    assert "lora.adalora.tinit: 30 must be below max_steps - tfinal (50 - 20 = 30)" in e.value.problems[0]
